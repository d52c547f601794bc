#![allow(clippy::unwrap_used)]
//! End-to-end tests of multibee peers served over the network (loopback only).

mod blob_sync;
mod blobs;
mod browser;
mod common;
mod hostile_writer;
mod http;
mod http_admin;
mod join;
mod netns;
mod node;
mod partial;
mod partition;
mod readme;
mod restart;
mod torture;
mod two_peers;
