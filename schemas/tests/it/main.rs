//! schemas' integration tests: contract vectors, golden vectors, bad input, round-trip properties.

mod bad_input;
mod golden;
mod outside;
mod roundtrip;

use std::path::{Path, PathBuf};

fn vectors(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(dir)
}
