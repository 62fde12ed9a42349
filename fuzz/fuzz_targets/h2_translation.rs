#![no_main]
//! Fuzz target: see `fulcrum::fuzzing::h2_translation` for the invariants it checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fulcrum::fuzzing::h2_translation(data));
