//! The multibee test suite.
#![allow(clippy::unwrap_used)]

mod lessons;
mod model;
mod scenarios;
mod support;
