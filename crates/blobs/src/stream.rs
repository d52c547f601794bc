//! Verified streaming between stores: [`Blobs::export_ranges`] encodes byte ranges of a blob
//! with their proofs (bao-tree's pre-order encoding at [`BLOCK_SIZE`]), and
//! [`Blobs::import_ranges`] verifies such an encoding against the id alone before it writes
//! anything, recording which chunk groups it holds so that a download resumes.

use std::ops::Range;

use bao_tree::io::outboard::PreOrderOutboard;
use bao_tree::io::sync::{DecodeResponseIter, OutboardMut, WriteAt, encode_ranges_validated};
use bao_tree::io::{
    BaoContentItem, DecodeError, EncodeError, Leaf, Parent, round_up_to_chunks_groups,
};
use bao_tree::{BaoTree, ChunkNum, ChunkRanges};

use crate::error::{Error, Result, VerifyError};
use crate::id::BlobId;
use crate::pending::{Pending, SYNC_BYTES};
use crate::store::{
    BLOCK_SIZE, Blobs, Imported, Inner, byte_ranges, check_size, open_rw, sync_dir,
};
use crate::tables::Record;
use multibee_feed::faults::Fault;

impl Blobs {
    /// The verified-streaming encoding of byte `ranges` of a blob: for every chunk group
    /// (16 KiB, see [`BLOCK_SIZE`]) touching a range, the hashes that prove it from the root
    /// and its bytes, in bao-tree's pre-order layout. Ranges are rounded out to whole chunk
    /// groups; [`Blobs::import_ranges`] rounds the same ranges the same way, so both sides
    /// pass the same `ranges`. The stored data is checked against the outboard as it is
    /// encoded ([`Error::Corrupt`] if it does not match).
    ///
    /// A partial blob can export the ranges it holds ([`Error::NotHeld`] otherwise). An empty
    /// blob's encoding is empty.
    pub async fn export_ranges(&self, id: BlobId, ranges: &[Range<u64>]) -> Result<Vec<u8>> {
        let ranges = ranges.to_vec();
        self.blocking(move |inner| inner.export_sync(id, &ranges))
            .await
    }

    /// Verifies `encoded` (from [`Blobs::export_ranges`] of the same `ranges` of a blob of
    /// `size` bytes) against `id` and stores the chunk groups it carries, recording them as
    /// held. Everything is verified before anything is written: corrupted data or proof bytes
    /// are [`Error::Rejected`] and nothing of them is stored. When every chunk group is held
    /// the blob becomes complete in the same transaction that records the last ones.
    ///
    /// A partial download is made durable every [`SYNC_BYTES`] and when it completes, not at
    /// every import (see [`Blobs::flush`]); what a crash loses of it is fetched again.
    ///
    /// `size` is the size claimed by the sender; the tree proves it once the last chunk group
    /// is verified (so a download should ask for the last group early). An import claiming
    /// another size than the one recorded for a partial blob is rejected
    /// ([`VerifyError::SizeMismatch`]) unless it carries the last chunk group, which proves its
    /// size: then the partial blob, started on a false claim, starts over.
    pub async fn import_ranges(
        &self,
        id: BlobId,
        size: u64,
        ranges: &[Range<u64>],
        encoded: &[u8],
    ) -> Result<Imported> {
        let ranges = ranges.to_vec();
        let encoded = encoded.to_vec();
        self.blocking(move |inner| inner.import_sync(id, size, &ranges, &encoded))
            .await
    }
}

/// The whole chunk groups covering byte `ranges` of a blob of `size` bytes.
fn chunk_groups(id: BlobId, ranges: &[Range<u64>], size: u64) -> Result<ChunkRanges> {
    let mut chunks = ChunkRanges::empty();
    for r in ranges {
        if r.start > r.end {
            return Err(Error::InvalidArgument(format!(
                "inverted range {}..{}",
                r.start, r.end
            )));
        }
        if r.end > size {
            return Err(Error::OutOfRange {
                id,
                start: r.start,
                end: r.end,
                size,
            });
        }
        if r.start < r.end {
            chunks |= ChunkRanges::from(ChunkNum::full_chunks(r.start)..ChunkNum::chunks(r.end));
        }
    }
    let groups = round_up_to_chunks_groups(chunks, BLOCK_SIZE);
    Ok(groups & ChunkRanges::from(ChunkNum(0)..ChunkNum::chunks(size)))
}

fn decode_error(e: DecodeError) -> VerifyError {
    match e {
        DecodeError::ParentHashMismatch(node) => VerifyError::HashMismatch(format!(
            "proof hash pair at level {} for chunk {}",
            node.level(),
            node.mid().0
        )),
        DecodeError::LeafHashMismatch(chunk) => {
            VerifyError::HashMismatch(format!("chunk group at byte {}", chunk.to_bytes()))
        }
        DecodeError::ParentNotFound(node) => VerifyError::Truncated(format!(
            "proof hash pair at level {} for chunk {} missing",
            node.level(),
            node.mid().0
        )),
        DecodeError::LeafNotFound(chunk) => {
            VerifyError::Truncated(format!("chunk group at byte {} missing", chunk.to_bytes()))
        }
        DecodeError::Io(e) => VerifyError::Truncated(e.to_string()),
    }
}

/// Checks every hash of `encoded` against the id, and that nothing follows the encoding:
/// the proof hash pairs and chunk groups it carries, verified.
fn decode(
    id: BlobId,
    tree: BaoTree,
    groups: &ChunkRanges,
    encoded: &[u8],
) -> Result<Vec<BaoContentItem>> {
    let mut cursor = std::io::Cursor::new(encoded);
    let items = DecodeResponseIter::new(id.hash(), tree, &mut cursor, groups)
        .map(|item| item.map_err(|e| Error::rejected(id, decode_error(e))))
        .collect::<Result<Vec<_>>>()?;
    let rest = (encoded.len() as u64).saturating_sub(cursor.position());
    if rest != 0 {
        return Err(Error::rejected(id, VerifyError::TrailingBytes(rest)));
    }
    Ok(items)
}

impl Inner {
    fn export_sync(&self, id: BlobId, ranges: &[Range<u64>]) -> Result<Vec<u8>> {
        let record = self.record(id)?.ok_or(Error::NotFound(id))?;
        let groups = chunk_groups(id, ranges, record.size)?;
        if let Some(held) = &record.held
            && !groups.is_subset(held)
        {
            return Err(Error::NotHeld(id));
        }
        let mut out = Vec::new();
        if record.size == 0 || groups.is_empty() {
            return Ok(out);
        }
        let (data_path, obao_path) = (self.data_path(id), self.obao_path(id));
        let data =
            std::fs::File::open(&data_path).map_err(|e| self.missing_file(id, &data_path, e))?;
        let obao =
            std::fs::File::open(&obao_path).map_err(|e| self.missing_file(id, &obao_path, e))?;
        let outboard = PreOrderOutboard {
            root: id.hash(),
            tree: BaoTree::new(record.size, BLOCK_SIZE),
            data: obao,
        };
        let encoded = encode_ranges_validated(data, &outboard, &groups, &mut out);
        let Err(e) = encoded else { return Ok(out) };
        // Exports take no lock: a delete, or the restart of a partial blob, may have changed
        // the files meanwhile, which is not damage.
        let now = self.record(id)?;
        if now.as_ref() != Some(&record) {
            return Err(now.map_or(Error::NotFound(id), |_| Error::NotHeld(id)));
        }
        Err(match e {
            EncodeError::Io(e) if e.kind() != std::io::ErrorKind::UnexpectedEof => {
                Error::io(format!("reading blob {id}"), e)
            }
            e => Error::Corrupt(format!("blob {id}: stored data does not match its id: {e}")),
        })
    }

    fn import_sync(
        &self,
        id: BlobId,
        size: u64,
        ranges: &[Range<u64>],
        encoded: &[u8],
    ) -> Result<Imported> {
        check_size(size)?;
        let groups = chunk_groups(id, ranges, size)?;
        if size == 0 {
            return self.import_empty(id, encoded);
        }
        let tree = BaoTree::new(size, BLOCK_SIZE);
        // Everything is verified before anything is written.
        let items = decode(id, tree, &groups, encoded)?;
        let lock = self.lock(id);
        self.touch(id);
        let existing = self.record(id)?;
        // Verifying the last chunk group proves the size (the tree's shape and the last
        // chunk's length depend on it).
        let proves_size = groups.contains(&ChunkNum(tree.chunks().0 - 1));
        let mut wrong_size = false;
        if let Some(record) = &existing {
            if record.size != size {
                if record.is_complete() || !proves_size {
                    let reason = VerifyError::SizeMismatch {
                        recorded: record.size,
                        claimed: size,
                    };
                    return Err(Error::rejected(id, reason));
                }
                // The partial blob was started on a false size claim: it starts over.
                tracing::warn!(%id, recorded = record.size, proven = size, "a partial blob's size was wrong: its download starts over");
                wrong_size = true;
            }
            if record.is_complete() {
                return Ok(Imported {
                    complete: true,
                    held_bytes: size,
                });
            }
        }
        if groups.is_empty() {
            let held = existing
                .and_then(|r| r.held)
                .unwrap_or_else(ChunkRanges::empty);
            return Ok(imported(&held, size, false));
        }
        // A blob without a row has no held bytes: files left by a crash are truncated. A
        // partial blob whose files are gone (removed by hand) starts over.
        let (data_path, obao_path) = (self.data_path(id), self.obao_path(id));
        let files_gone = !data_path.exists() || !obao_path.exists();
        let fresh = existing.is_none() || files_gone || wrong_size;
        if files_gone && existing.is_some() {
            tracing::warn!(%id, "a partial blob's files are missing: its download starts over");
        }
        if fresh && let Some(record) = &existing {
            // The files are about to be truncated: first the record stops claiming them.
            let restart = Record {
                size,
                pinned: record.pinned,
                held: Some(ChunkRanges::empty()),
            };
            self.pending().remove(&id);
            self.put_progress(id, &restart, &ChunkRanges::empty())?;
        }
        let mut data = open_rw(&data_path, fresh)?;
        let obao = open_rw(&obao_path, fresh)?;
        let mut outboard = PreOrderOutboard {
            root: id.hash(),
            tree,
            data: obao,
        };
        let mut held = match &existing {
            Some(record) if !fresh => record.held.clone().unwrap_or_else(ChunkRanges::empty),
            _ => ChunkRanges::empty(),
        };
        // Groups already held are not rewritten.
        for item in items {
            match item {
                BaoContentItem::Parent(Parent { node, pair }) => outboard.save(node, &pair),
                BaoContentItem::Leaf(Leaf {
                    offset,
                    data: bytes,
                }) => {
                    if held.contains(&ChunkNum::full_chunks(offset)) {
                        continue;
                    }
                    self.inject(Fault::FailWrite)
                        .and_then(|()| self.inject(Fault::DiskFull))
                        .and_then(|()| data.write_all_at(offset, &bytes))
                }
            }
            .map_err(|e| Error::io(format!("writing blob {id}"), e))?;
        }
        held |= groups.clone();
        let all = ChunkRanges::from(ChunkNum(0)..tree.chunks());
        let complete = all.is_subset(&held);
        let record = Record {
            size,
            pinned: existing.is_some_and(|r| r.pinned),
            held: (!complete).then(|| held.clone()),
        };
        // The files are synced when the blob completes, when its download starts (they were
        // created or truncated: a record from before must not outlive them), and every
        // SYNC_BYTES; in between, the groups are recorded as not synced (see `pending.rs`).
        // The in-memory list changes only once what it mirrors is committed: a failure leaves
        // both as they were.
        if complete || fresh {
            for (file, path) in [(&data, &data_path), (&outboard.data, &obao_path)] {
                self.sync(file, path)?;
            }
            if fresh {
                sync_dir(data_path.parent().unwrap_or(&data_path))?;
            }
            self.put_progress(id, &record, &ChunkRanges::empty())?;
            self.pending().remove(&id);
        } else {
            let mut pending = self
                .pending()
                .get(&id)
                .cloned()
                .unwrap_or_else(Pending::new);
            pending.groups |= groups;
            pending.bytes += encoded.len() as u64;
            self.put_progress(id, &record, &pending.groups)?;
            if pending.bytes >= SYNC_BYTES {
                // Synced without the lock, so that other imports of the blob write meanwhile.
                let synced = pending.groups.clone();
                let generation = pending.generation;
                pending.bytes = 0;
                self.pending().insert(id, pending);
                drop(lock);
                for (file, path) in [(&data, &data_path), (&outboard.data, &obao_path)] {
                    self.sync(file, path)?;
                }
                self.record_synced(id, generation, &synced)?;
            } else {
                self.pending().insert(id, pending);
            }
        }
        if complete {
            tracing::debug!(%id, size, "blob download complete");
            self.arrived(id, size);
        }
        Ok(imported(&held, size, complete))
    }

    fn sync(&self, file: &std::fs::File, path: &std::path::Path) -> Result<()> {
        self.inject(Fault::FailSync)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(format!("syncing {}", path.display()), e))
    }

    /// The empty blob has no tree to send: it verifies when its id is the hash of nothing.
    fn import_empty(&self, id: BlobId, encoded: &[u8]) -> Result<Imported> {
        if id != BlobId::of(&[]) {
            let reason = VerifyError::HashMismatch("the empty blob has another id".into());
            return Err(Error::rejected(id, reason));
        }
        if !encoded.is_empty() {
            let reason = VerifyError::TrailingBytes(encoded.len() as u64);
            return Err(Error::rejected(id, reason));
        }
        self.add_empty()?;
        Ok(Imported {
            complete: true,
            held_bytes: 0,
        })
    }
}

fn imported(held: &ChunkRanges, size: u64, complete: bool) -> Imported {
    let held_bytes = byte_ranges(held, size)
        .iter()
        .map(|r| r.end - r.start)
        .sum();
    Imported {
        complete,
        held_bytes,
    }
}
