#![allow(clippy::unwrap_used)]
//! The net crate's integration tests: real nodes on loopback, ports from the OS, mDNS off.

mod blob_sync;
mod blobs;
mod common;
mod dial;
mod discovery;
mod fork;
mod fuzz_decode;
mod limits;
mod relay;
mod replicate;
mod restart;
mod topology;
mod unblock;
