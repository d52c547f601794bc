//! The feed crate's integration tests: one binary, public API only.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod bad_input;
mod basic;
mod child;
mod common;
mod crash;
mod faults;
mod fuzz_decode;
mod ingest;
mod proofs;
mod sparse;
