//! Store sync over the blob protocol, the coffer way: a peer's sorted list of complete blob
//! ids, in pages ([`NodeHandle::list_peer_blobs`]), and a live queue of the ids that become
//! complete on it from then on ([`NodeHandle::watch_peer_blobs`]). Both sides: the server
//! parts are called from [`crate::blob_session`]'s stream loop.
//!
//! A watch is subscribed before the peer is listed, so that no id falls between the two: ids
//! complete before the watch are in the list, later ones come on the watch (some may come
//! both ways). Every buffer is bounded: a watcher that falls behind, on either side, is told
//! [`WatchEvent::Lagged`] and lists again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use multibee_blobs::BlobId;
use tokio::sync::broadcast;

use crate::blob_wire::{self, BlobMessage, BlobRefusal, MAX_ARRIVED_IDS};
use crate::error::Violation;
use crate::io::{StreamError, read_frame, write_frame};
use crate::node::{Command, NodeHandle};
use crate::session::{Context, SessionEnd, lock};

/// Ids a [`BlobWatch`] holds for its reader before it lags.
const WATCH_BUFFER: usize = 1024;

/// A page of a peer's blob ids ([`NodeHandle::list_peer_blobs`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlobList {
    /// Ids of complete blobs the peer holds, sorted.
    pub ids: Vec<BlobId>,
    /// Whether more follow: ask again with the last id as `after`.
    pub more: bool,
}

/// Why listing or watching a peer's blobs failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerBlobsError {
    /// The peer is not connected.
    #[error("the peer is not connected")]
    NotConnected,
    /// The peer refused (it keeps no blob store, or has too many watches open: `Busy`).
    #[error("the peer refused: {0:?}")]
    Refused(BlobRefusal),
    /// The stream failed, closed, or the peer did not answer in time.
    #[error("the blob stream ended: {0}")]
    Closed(String),
    /// The peer broke the protocol (it is rejected and blocked).
    #[error("the peer broke the blob protocol: {0}")]
    Violation(Violation),
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
}

impl From<StreamError> for PeerBlobsError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Io(e) => PeerBlobsError::Closed(e.to_string()),
            StreamError::Frame(e) => PeerBlobsError::Violation(e.into()),
            StreamError::Slow(waited) => {
                PeerBlobsError::Closed(format!("no progress in {waited:?}"))
            }
        }
    }
}

/// What a [`BlobWatch`] tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A blob became complete on the peer.
    Arrived(BlobId),
    /// Ids were skipped (the peer's queue or this one overflowed): list the peer again.
    Lagged,
}

/// A live queue of the ids of blobs that become complete on a peer
/// ([`NodeHandle::watch_peer_blobs`]). Dropping it closes the stream.
#[derive(Debug)]
pub struct BlobWatch {
    peer: PeerId,
    events: broadcast::Receiver<WatchEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl BlobWatch {
    /// The peer watched.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The next event; `None` once the watch ended (the peer disconnected, closed the stream
    /// or broke the protocol). Cancel-safe.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        match self.events.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(WatchEvent::Lagged),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Drop for BlobWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NodeHandle {
    /// Asks `peer` for the ids of the complete blobs it holds after `after` (from the first if
    /// `None`), sorted, at most `limit` of them: fewer if the peer's
    /// [`BlobLimits::max_list_ids`](crate::blob_wire::BlobLimits::max_list_ids) (1024 by
    /// default) is lower, in which case `more` says so. Page with the last id as `after`.
    pub async fn list_peer_blobs(
        &self,
        peer: PeerId,
        after: Option<BlobId>,
        limit: usize,
    ) -> Result<BlobList, PeerBlobsError> {
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        let request = BlobMessage::List {
            after: after.map(|a| *a.as_bytes()),
            limit,
        };
        let (mut stream, answer) = self.open_and_ask(peer, &request).await?;
        let _ = stream.close().await;
        match answer {
            BlobMessage::Ids { ids, more } => {
                match blob_wire::check_ids(after, limit as usize, &ids) {
                    Ok(ids) => Ok(BlobList { ids, more }),
                    Err(detail) => Err(self.violation(peer, "Ids", detail).await),
                }
            }
            BlobMessage::Refused(refusal) => Err(PeerBlobsError::Refused(refusal)),
            other => Err(self.violation(peer, other.name(), "Ids or Refused").await),
        }
    }

    /// Subscribes to the ids of blobs that become complete on `peer` from now on: returns once
    /// the peer confirmed the watch, so that a listing made after this call misses nothing.
    pub async fn watch_peer_blobs(&self, peer: PeerId) -> Result<BlobWatch, PeerBlobsError> {
        let (stream, answer) = self.open_and_ask(peer, &BlobMessage::Watch).await?;
        match answer {
            BlobMessage::Watching => {}
            BlobMessage::Refused(refusal) => return Err(PeerBlobsError::Refused(refusal)),
            other => {
                return Err(self
                    .violation(peer, other.name(), "Watching or Refused")
                    .await);
            }
        }
        let (events, receiver) = broadcast::channel(WATCH_BUFFER);
        let cx = self.cx.clone();
        let task = tokio::spawn(async move {
            let gone = cx.gone(peer);
            tokio::select! {
                () = read_watch(stream, peer, &cx, events) => {}
                () = gone => {}
            }
        });
        Ok(BlobWatch {
            peer,
            events: receiver,
            task,
        })
    }

    /// Opens a blob stream to `peer`, sends `request` and reads the first answer.
    async fn open_and_ask(
        &self,
        peer: PeerId,
        request: &BlobMessage,
    ) -> Result<(Stream, BlobMessage), PeerBlobsError> {
        let opener = self
            .ask(|reply| Command::Opener(peer, reply))
            .await
            .map_err(|_| PeerBlobsError::Stopped)?
            .ok_or(PeerBlobsError::NotConnected)?;
        let mut control = self.streams();
        let (mut stream, permit) = crate::blob_session::open(&mut control, peer, &opener)
            .await
            .map_err(PeerBlobsError::Closed)?;
        let limits = &self.cx.config.blob_limits;
        let deadline = self.cx.frame_timeout();
        let frame = blob_wire::encode(request, limits.max_request_frame())
            .map_err(|e| PeerBlobsError::Closed(format!("cannot encode a request: {e}")))?;
        write_frame(&mut stream, &frame, deadline).await?;
        let mut buf = Vec::new();
        let read = read_frame(&mut stream, limits.max_frame_bytes(), &mut buf, deadline);
        let read = tokio::time::timeout(deadline, read)
            .await
            .map_err(|_| PeerBlobsError::Closed(format!("no answer within {deadline:?}")))?;
        drop(permit);
        if !read? {
            return Err(PeerBlobsError::Closed("closed by the peer".into()));
        }
        match blob_wire::decode(&buf) {
            Ok(answer) => Ok((stream, answer)),
            Err(e) => {
                let violation = Violation::from(e);
                self.cx.report(peer, violation.clone()).await;
                Err(PeerBlobsError::Violation(violation))
            }
        }
    }

    async fn violation(
        &self,
        peer: PeerId,
        message: &'static str,
        detail: &'static str,
    ) -> PeerBlobsError {
        let violation = Violation::Unexpected { message, detail };
        self.cx.report(peer, violation.clone()).await;
        PeerBlobsError::Violation(violation)
    }
}

/// Reads a watch stream's frames into `events` until it ends or every receiver is gone.
async fn read_watch(
    mut stream: Stream,
    peer: PeerId,
    cx: &Context,
    events: broadcast::Sender<WatchEvent>,
) {
    let max = cx.config.blob_limits.max_frame_bytes();
    let mut buf = Vec::new();
    loop {
        // Waiting for a frame has no deadline (a store may be quiet for days); a begun frame
        // moves under the progress rule.
        match read_frame(&mut stream, max, &mut buf, cx.frame_timeout()).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(StreamError::Frame(e)) => return cx.report(peer, e.into()).await,
            Err(e) => {
                tracing::debug!(%peer, %e, "a blob watch ended");
                return;
            }
        }
        let sent = match blob_wire::decode(&buf) {
            Ok(BlobMessage::Arrived(ids)) if !ids.is_empty() && ids.len() <= MAX_ARRIVED_IDS => {
                ids.into_iter().try_for_each(|id| {
                    events
                        .send(WatchEvent::Arrived(BlobId::from_bytes(id)))
                        .map(drop)
                })
            }
            Ok(BlobMessage::Lagged) => events.send(WatchEvent::Lagged).map(drop),
            Ok(other) => {
                let detail = "Arrived (1 to 256 ids) or Lagged";
                let violation = Violation::Unexpected {
                    message: other.name(),
                    detail,
                };
                return cx.report(peer, violation).await;
            }
            Err(e) => return cx.report(peer, e.into()).await,
        };
        if sent.is_err() {
            // Nobody reads the watch any more.
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Serving.

/// The watch streams each peer holds open (see
/// [`BlobLimits::max_watches_per_peer`](crate::blob_wire::BlobLimits::max_watches_per_peer)).
#[derive(Debug, Default)]
pub(crate) struct WatchSlots(Mutex<HashMap<PeerId, usize>>);

/// One of a peer's watch slots, given back when dropped.
struct WatchSlot {
    slots: Arc<WatchSlots>,
    peer: PeerId,
}

impl WatchSlots {
    fn take(self: &Arc<Self>, peer: PeerId, max: usize) -> Option<WatchSlot> {
        let mut open = lock(&self.0);
        let count = open.entry(peer).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(WatchSlot {
            slots: self.clone(),
            peer,
        })
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.slots.0);
        if let Some(count) = open.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

/// Answers a `List`: the ids (cheap: a range read of the metadata), or a refusal.
pub(crate) async fn answer_list(
    cx: &Context,
    after: Option<[u8; 32]>,
    limit: u32,
) -> Result<BlobMessage, SessionEnd> {
    let Some(blobs) = &cx.config.blobs else {
        return Ok(BlobMessage::Refused(BlobRefusal::NoStore));
    };
    let size = blob_wire::list_size(limit, &cx.config.blob_limits);
    let mut ids = blobs
        .list(after.map(BlobId::from_bytes), size.saturating_add(1))
        .await
        .map_err(|e| SessionEnd::Closed(format!("blob store: {e}")))?;
    let more = ids.len() > size;
    ids.truncate(size);
    let ids = ids.iter().map(|id| *id.as_bytes()).collect();
    Ok(BlobMessage::Ids { ids, more })
}

/// Serves a `Watch`: confirms it, then sends the id of every blob that becomes complete
/// (batched, at most [`MAX_ARRIVED_IDS`] a frame) until the client closes the stream. The
/// client sends nothing more: a byte from it is a violation.
pub(crate) async fn serve_watch(
    stream: Stream,
    peer: PeerId,
    cx: &Context,
    slots: &Arc<WatchSlots>,
) -> Result<(), SessionEnd> {
    let limits = &cx.config.blob_limits;
    let (mut reader, mut writer) = stream.split();
    let slot = slots.take(peer, limits.max_watches_per_peer);
    let (blobs, _slot) = match (&cx.config.blobs, slot) {
        (Some(blobs), Some(slot)) => (blobs, slot),
        (blobs, _) => {
            let refusal = match blobs {
                None => BlobRefusal::NoStore,
                Some(_) => BlobRefusal::Busy,
            };
            send(&mut writer, &BlobMessage::Refused(refusal), cx).await?;
            return Ok(writer.close().await?);
        }
    };
    // Subscribed before the confirmation: every blob complete after it is told.
    let mut arrivals = blobs.arrivals();
    send(&mut writer, &BlobMessage::Watching, cx).await?;
    let mut byte = [0u8; 1];
    loop {
        let mut lagged = false;
        let batch = tokio::select! {
            read = reader.read(&mut byte) => {
                return match read {
                    Ok(0) | Err(_) => {
                        let _ = writer.close().await;
                        Ok(())
                    }
                    Ok(_) => Err(SessionEnd::Violation(Violation::Unexpected {
                        message: "a frame",
                        detail: "nothing from a watching client",
                    })),
                };
            }
            arrival = arrivals.recv() => match arrival {
                Ok(first) => {
                    let mut batch = vec![*first.id.as_bytes()];
                    while batch.len() < MAX_ARRIVED_IDS {
                        match arrivals.try_recv() {
                            Ok(next) => batch.push(*next.id.as_bytes()),
                            Err(broadcast::error::TryRecvError::Lagged(_)) => {
                                lagged = true;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    batch
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    lagged = true;
                    Vec::new()
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Ok(writer.close().await?);
                }
            },
        };
        if !batch.is_empty() {
            send(&mut writer, &BlobMessage::Arrived(batch), cx).await?;
        }
        if lagged {
            send(&mut writer, &BlobMessage::Lagged, cx).await?;
        }
    }
}

/// Writes one message of the server.
async fn send<W: futures::AsyncWrite + Unpin>(
    writer: &mut W,
    message: &BlobMessage,
    cx: &Context,
) -> Result<(), StreamError> {
    let frame = blob_wire::encode(message, cx.config.blob_limits.max_frame_bytes())?;
    write_frame(writer, &frame, cx.frame_timeout()).await
}
