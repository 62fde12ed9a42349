#![no_main]
//! Fuzz target: see `fulcrum::fuzzing::response_head` for the invariants it checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fulcrum::fuzzing::response_head(data));
