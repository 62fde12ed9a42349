#![no_main]
//! Fuzz target: see `fulcrum::fuzzing::config` for the invariants it checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fulcrum::fuzzing::config(data));
