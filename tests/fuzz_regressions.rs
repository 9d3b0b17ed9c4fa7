//! Every input a fuzz target (`tests/fuzz/`) ever crashed on, replayed through the same entry point on stable:
//! a fixed bug stays fixed. Inputs live in `tests/fuzz/regressions/<target>/`; the seed corpora are replayed too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    let mut n = 0;
    for dir in [root.join("regressions").join(target), root.join("corpus").join(target)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            // A panic names the input that caused it.
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{} panicked", path.display());
            n += 1;
        }
    }
    n
}

#[test]
fn request_body_inputs_parse_or_fail_cleanly() {
    assert!(replay("request_body", sora_shim::fuzzing::request_body) > 0);
}

#[test]
fn mapping_eval_inputs_evaluate_or_fail_cleanly() {
    assert!(replay("mapping_eval", sora_shim::fuzzing::mapping_eval) > 0);
}
