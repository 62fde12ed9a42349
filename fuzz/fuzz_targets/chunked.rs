#![no_main]
//! Fuzz target: see `fulcrum::fuzzing::chunked` for the invariants it checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fulcrum::fuzzing::chunked(data));
