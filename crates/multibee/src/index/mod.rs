//! Path indexes over the merged documents, and the queries they answer.
//!
//! An index is declared on a path (`/user/name`, `/tags/[]`: every value the path reaches in a
//! document) or on *every path* of the documents under a key prefix (Barrel's automatic
//! indexing). Its rows live in `mb-index-1`, one per (index, path, value, document key):
//!
//! ```text
//! index id (u32 BE) ‖ order::encode(path as a JSON string) ‖ order::encode(value) ‖ key
//! ```
//!
//! so that the rows of one path are ordered by value (the total order of [`order`]), then by
//! key. They are written in the transaction that changes the document (`rows::maintain`,
//! called by every write of the store), so a query never sees a state of a document that
//! [`crate::MultiBee::get`] would not. An index declared on a store that already holds
//! documents is built in the background, a batch of keys per write transaction; until it is
//! built, queries that would use it say so ([`crate::Error::IndexBuilding`]).

pub(crate) mod order;
pub(crate) mod path;
mod query;
pub(crate) mod rows;

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

pub use query::{Condition, Hit, Op, Query, QueryAnswer, QueryOrder};
pub(crate) use query::{load_read, run};
pub(crate) use rows::{build_batch, maintain};

/// `index id (u32 BE) ‖ path ‖ value ‖ key` → nothing (see the module docs).
pub(crate) const ROWS: TableDefinition<&[u8], ()> = TableDefinition::new("mb-index-1");
/// Index id → its [`Stored`] definition and build state (postcard).
pub(crate) const DEFS: TableDefinition<u32, &[u8]> = TableDefinition::new("mb-indexes-1");

/// What an index covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IndexTarget {
    /// Every value a path reaches in every JSON document (`/user/name`, `/tags/[]`).
    Path(String),
    /// Every path of every JSON document whose key starts with this prefix (empty: all).
    EveryPath(Vec<u8>),
}

impl std::fmt::Display for IndexTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IndexTarget::Path(p) => write!(f, "{p}"),
            IndexTarget::EveryPath(prefix) => {
                write!(f, "every path under {:?}", String::from_utf8_lossy(prefix))
            }
        }
    }
}

/// Whether an index answers queries yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexState {
    /// Being built: every key up to `done` (none yet: `None`) is indexed, `keys` of them.
    Building {
        /// The last key indexed.
        done: Option<Vec<u8>>,
        /// Keys indexed so far.
        keys: u64,
    },
    /// Built, and kept up to date with every write.
    Ready,
}

/// A declared index ([`crate::MultiBee::indexes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IndexInfo {
    /// Its id in this peer's store.
    pub id: u32,
    /// What it covers.
    pub target: IndexTarget,
    /// Whether it is built.
    pub state: IndexState,
}

/// An index's row in `mb-indexes-1`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Stored {
    V1 {
        target: IndexTarget,
        state: IndexState,
    },
}

impl IndexInfo {
    pub(crate) fn decode(id: u32, bytes: &[u8]) -> Result<IndexInfo, String> {
        match postcard::from_bytes::<Stored>(bytes) {
            Ok(Stored::V1 { target, state }) => Ok(IndexInfo { id, target, state }),
            Err(e) => Err(format!("index {id}: {e}")),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let stored = Stored::V1 {
            target: self.target.clone(),
            state: self.state.clone(),
        };
        postcard::to_allocvec(&stored).unwrap_or_default()
    }

    /// Whether writes of `key` update this index now (a building index's rows past `done`
    /// are written by its builder).
    pub(crate) fn covers_written(&self, key: &[u8]) -> bool {
        let built = match &self.state {
            IndexState::Ready => true,
            IndexState::Building { done, .. } => done.as_deref().is_some_and(|d| key <= d),
        };
        built
            && match &self.target {
                IndexTarget::Path(_) => true,
                IndexTarget::EveryPath(prefix) => key.starts_with(prefix),
            }
    }
}
