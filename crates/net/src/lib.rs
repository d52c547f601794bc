//! x
pub mod error;
pub mod protocol;
pub mod wire;
