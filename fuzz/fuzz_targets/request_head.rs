#![no_main]
//! Fuzz target: see `fulcrum::fuzzing::request_head` for the invariants it checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fulcrum::fuzzing::request_head(data));
