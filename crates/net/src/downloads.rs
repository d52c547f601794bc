//! The blob downloads in progress in a node: every [`crate::NodeHandle::fetch_blob`] is
//! registered for as long as it runs (finished, failed or dropped, it leaves the list), so an
//! application can show what is being fetched, from whom, and how far along it is
//! ([`crate::NodeHandle::blob_downloads`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use libp2p::PeerId;
use multibee_blobs::{BlobId, Blobs};

/// A blob download in progress ([`crate::NodeHandle::blob_downloads`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlobDownload {
    /// The blob.
    pub id: BlobId,
    /// Its size, once known (the first answer of a peer claims it, the hash tree proves it);
    /// `None` while no byte of it is held.
    pub size: Option<u64>,
    /// Bytes of it held and verified now (what earlier, interrupted downloads stored counts).
    pub held_bytes: u64,
    /// The peers it is being fetched from (those given to the fetches of it that run now, and
    /// connected when they started).
    pub peers: Vec<PeerId>,
}

/// The fetches running now, by blob: how many run and the peers they ask.
#[derive(Clone, Debug, Default)]
pub(crate) struct Downloads(Arc<Mutex<BTreeMap<BlobId, Running>>>);

#[derive(Debug, Default)]
struct Running {
    fetches: usize,
    peers: BTreeSet<PeerId>,
}

impl Downloads {
    /// Registers a fetch of `id` from `peers` until the guard drops.
    pub(crate) fn start(&self, id: BlobId, peers: impl IntoIterator<Item = PeerId>) -> Guard {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let running = map.entry(id).or_default();
        running.fetches += 1;
        running.peers.extend(peers);
        Guard {
            downloads: self.clone(),
            id,
        }
    }

    /// The downloads running now, in id order, with what `blobs` holds of each.
    pub(crate) async fn list(
        &self,
        blobs: &Blobs,
    ) -> Result<Vec<BlobDownload>, multibee_blobs::Error> {
        let running: Vec<(BlobId, Vec<PeerId>)> = {
            let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            map.iter()
                .map(|(id, r)| (*id, r.peers.iter().copied().collect()))
                .collect()
        };
        let mut out = Vec::with_capacity(running.len());
        for (id, peers) in running {
            let status = blobs.status(id).await?;
            // A download that completed meanwhile is about to leave the list.
            if status.as_ref().is_some_and(|s| s.complete) {
                continue;
            }
            out.push(BlobDownload {
                id,
                size: status.as_ref().map(|s| s.size),
                held_bytes: status.map_or(0, |s| s.held.iter().map(|r| r.end - r.start).sum()),
                peers,
            });
        }
        Ok(out)
    }
}

/// A fetch registered in [`Downloads`]; unregistered when dropped.
pub(crate) struct Guard {
    downloads: Downloads,
    id: BlobId,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut map = self
            .downloads
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(running) = map.get_mut(&self.id) {
            running.fetches -= 1;
            if running.fetches == 0 {
                map.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_download_is_listed_while_any_fetch_of_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let downloads = Downloads::default();
        let id = BlobId::from_bytes([7; 32]);
        let (p, q) = (PeerId::random(), PeerId::random());
        let first = downloads.start(id, [p]);
        let second = downloads.start(id, [q]);
        let listed = downloads.list(&blobs).await.unwrap();
        assert_eq!(listed.len(), 1);
        // Nothing of it held yet: its size is not known.
        assert_eq!((listed[0].size, listed[0].held_bytes), (None, 0));
        let mut peers = vec![p, q];
        peers.sort();
        assert_eq!(listed[0].peers, peers);
        drop(first);
        assert_eq!(downloads.list(&blobs).await.unwrap().len(), 1);
        drop(second);
        assert!(downloads.list(&blobs).await.unwrap().is_empty());

        // A blob held whole is not listed even while a fetch of it runs.
        let held = blobs.add_bytes(b"here").await.unwrap();
        let _running = downloads.start(held, [p]);
        assert!(downloads.list(&blobs).await.unwrap().is_empty());
    }
}
