//! The multibee test suite.
#![allow(clippy::unwrap_used)]

mod causality;
mod commits;
mod crash;
mod faults;
mod format;
mod fuzz_decode;
mod index;
mod lessons;
mod model;
mod partial;
mod reopen;
mod scenarios;
mod support;
