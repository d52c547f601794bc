//! Mutations of real encodings for the "arbitrary bytes never panic" proptests of every crate
//! (each crate's `tests/fuzz_decode.rs` includes this file).

use std::cell::Cell;
use std::fmt::Debug;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Byte-level edits: (kind, position, byte).
pub fn edits() -> impl Strategy<Value = Vec<(u8, prop::sample::Index, u8)>> {
    prop::collection::vec((0u8..5, any::<prop::sample::Index>(), any::<u8>()), 1..8)
}

thread_local! {
    /// Truncations that cut at least one byte, on this thread (a test runs on its own thread).
    static TRUNCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// Applies bit flips, overwrites, insertions, deletions and truncations to `bytes`.
pub fn mutate(mut bytes: Vec<u8>, edits: &[(u8, prop::sample::Index, u8)]) -> Vec<u8> {
    for (kind, at, byte) in edits {
        let i = at.index(bytes.len() + 1);
        match kind {
            0 if i < bytes.len() => bytes[i] ^= 1 << (byte % 8),
            1 if i < bytes.len() => bytes[i] = *byte,
            2 => bytes.insert(i, *byte),
            3 if i < bytes.len() => {
                bytes.remove(i);
            }
            4 if i < bytes.len() => {
                bytes.truncate(i);
                TRUNCATIONS.with(|t| t.set(t.get() + 1));
            }
            // Past the last byte there is nothing to flip, overwrite, delete or cut.
            _ => {}
        }
    }
    bytes
}

/// Runs the proptest `name` of `file` (pass `file!()`) as `proptest!` would (same config,
/// `PROPTEST_CASES` included), then fails unless [`mutate`] cut at least one of its inputs
/// short: the check that this proptest does see truncated encodings. With fewer than 16
/// cases a run might by chance truncate nothing, so the check needs 16 or more (with 16, it
/// fails by chance about once in 10^5 runs; with the default 256, never in practice).
pub fn check_truncating<S>(
    file: &'static str,
    name: &'static str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let config = Config {
        source_file: Some(file),
        test_name: Some(name),
        ..Config::default()
    };
    let cases = config.cases;
    let before = TRUNCATIONS.with(Cell::get);
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}\n{runner}");
    }
    let truncated = TRUNCATIONS.with(Cell::get) - before;
    assert!(
        cases < 16 || truncated > 0,
        "{name}: no input of {cases} cases was truncated"
    );
}
