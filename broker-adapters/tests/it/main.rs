//! The bus conformance suite, run against every adapter.

mod conformance;
mod embedded;
