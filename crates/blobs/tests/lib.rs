//! The blob crate's integration tests: one binary, public API only.
// Tests fail loudly by design.
#![allow(clippy::unwrap_used)]
// `&[0..n]` is how ranges are passed to the store, not a mistaken `vec![0..n]`.
#![allow(clippy::single_range_in_vec_init)]

mod bad_input;
mod basic;
mod common;
mod crash;
mod gc;
mod props;
