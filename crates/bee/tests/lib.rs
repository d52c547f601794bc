//! The bee crate's integration tests: one binary, public API only.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod api;
mod fuzz_decode;
mod model;
mod replica;

/// Runs an async test body on a fresh runtime.
pub fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Every (key, value) of a range query.
pub fn pairs(range: multibee_bee::Range) -> Vec<(Vec<u8>, Vec<u8>)> {
    range
        .map(|e| e.unwrap())
        .map(|e| (e.key, e.value))
        .collect()
}
