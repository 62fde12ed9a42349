#![no_main]
//! Fuzz target: see `fulcrum::fuzzing::proxy_header` for the invariants it checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fulcrum::fuzzing::proxy_header(data));
