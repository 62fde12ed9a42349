//! Replays every fuzz target's corpus (`fuzz/corpus/TARGET/`: the seeds, what fuzzing kept,
//! and every crash it ever found) through the same entry points the fuzzers call, on stable:
//! an input that once broke an invariant stays a test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("request_head", fulcrum::fuzzing::request_head),
    ("response_head", fulcrum::fuzzing::response_head),
    ("chunked", fulcrum::fuzzing::chunked),
    ("proxy_header", fulcrum::fuzzing::proxy_header),
    ("config", fulcrum::fuzzing::config),
    ("h2_translation", fulcrum::fuzzing::h2_translation),
];

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

#[test]
fn every_fuzz_corpus_input_keeps_its_targets_invariants() {
    for (target, run) in TARGETS {
        let dir = corpus(target);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (every target has a corpus)", dir.display()));
        let mut inputs = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(
                outcome.is_ok(),
                "{target}: {} breaks an invariant",
                path.display()
            );
            inputs += 1;
        }
        assert!(inputs > 0, "{target}: an empty corpus");
    }
}
