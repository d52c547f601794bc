//! An ordered key/value store on a multibee feed, with the API a hyperbee user expects.
//!
//! A [`Bee`] lives on one [`multibee_feed::Feed`]: every put, and every delete of a key that is
//! set, is one feed entry (an atomic [`Bee::batch`] is one append of several; a delete of an
//! absent key appends nothing, as in hyperbee), so the feed is the source of truth and can be
//! replicated and verified like any feed. An index in the same redb database, written in the
//! same transaction, answers `get` and ordered ranges (`gt`/`gte`/`lt`/`lte`/`reverse`/`limit`)
//! at the head, and at any earlier version through [`Bee::checkout`], for about the cost of a
//! head read. [`Bee::sub`] gives prefix-free sub-databases; [`Bee::history`],
//! [`Bee::live_history`], [`Bee::diff`] and [`Bee::watch`] follow changes. A replica bee indexes
//! entries as [`Bee::ingest`] verifies and stores them.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), multibee_bee::Error> {
//! use multibee_bee::{Bee, RangeOptions};
//! use multibee_feed::Store;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path())?;
//! let bee = Bee::open(store.create_feed().await?).await?;
//! bee.put("apple", "red").await?;
//! bee.put("banana", "yellow").await?;
//! let version = bee.version()?;
//! bee.del("apple").await?;
//!
//! assert_eq!(bee.get("apple")?, None);
//! assert_eq!(bee.checkout(version)?.get("apple")?, Some(b"red".to_vec()));
//! let keys: Vec<Vec<u8>> = bee
//!     .range(&RangeOptions::all())?
//!     .map(|e| e.map(|e| e.key))
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(keys, vec![b"banana".to_vec()]);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod bee;
mod error;
mod history;
mod index;
pub mod keyspace;
pub mod op;
mod range;
mod tables;

pub use bee::{BatchOp, Bee, Expect, HeadReader, SnapshotHead};
pub use error::{Error, Result};
pub use history::{Change, DiffEntry, HistoryOptions, LiveHistory, Watch, WatchEvent};
pub use range::{Entry, Range, RangeOptions};
