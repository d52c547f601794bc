//! The blob protocol's stream tasks: serving ranges of the node's blobs, and fetching a blob's
//! missing ranges from several peers at once ([`crate::NodeHandle::fetch_blob`]).
//!
//! A server answers one request at a time per stream, holds at most one request's encoding
//! per frame permit of the peer (the permits the feed protocol's data frames use, see
//! [`crate::session`]), and closes a stream that stays idle for a frame deadline. A client
//! verifies every response before it is stored ([`multibee_blobs::Blobs::import_ranges`]).

// Lists of byte ranges are what requests carry: a list of one range is not a mistake here.
#![allow(clippy::single_range_in_vec_init)]

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, IncomingStreams};
use multibee_blobs::{BlobId, Blobs};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

use crate::blob_sync::{self, WatchSlots};
use crate::blob_wire::{
    self, BLOBS_PROTOCOL, BlobMessage, BlobRefusal, BlobRequest, check_request, clamp,
    max_encoded_len,
};
use crate::error::{FetchError, Violation};
use crate::event::{Counters, Event};
use crate::io::{StreamError, read_frame, write_frame};
use crate::session::{Context, SessionEnd, lock};

/// The blob protocol's name.
pub(crate) fn blobs_protocol() -> StreamProtocol {
    StreamProtocol::new(BLOBS_PROTOCOL)
}

/// The most requests one fetch has in flight over all its peers (each holds up to
/// `BlobLimits::request_bytes` of encoding): with more peers, fewer per peer, at least one.
const MAX_REQUESTS_IN_FLIGHT: usize = 16;

/// What a [`crate::NodeHandle::fetch_blob`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FetchOutcome {
    /// The blob, now complete in the node's blob store.
    pub id: BlobId,
    /// Its size.
    pub size: u64,
    /// Bytes of encoding (data and proofs) received, verified and stored by this fetch: about
    /// the bytes that were missing, plus 0.4% of proofs.
    pub bytes_fetched: u64,
    /// Requests answered with data that verified.
    pub requests: u64,
    /// Peers dropped from the fetch for sending bytes that did not verify or for breaking the
    /// protocol (each also reported as [`Event::BlobPeerRejected`]).
    pub rejected: Vec<PeerId>,
}

// ---------------------------------------------------------------------------------------------
// Serving.

/// Accepts blob streams and serves each in its own task, at most `max_streams_per_peer` at
/// once per peer. Stops like [`crate::session::accept_replicate`].
pub(crate) async fn accept_blobs(
    incoming: IncomingStreams,
    cx: Arc<Context>,
    stop: watch::Receiver<bool>,
) {
    let watches = Arc::new(WatchSlots::default());
    crate::session::accept_streams(
        incoming,
        cx,
        stop,
        "serving blobs",
        move |peer, stream, cx, frames| {
            let watches = watches.clone();
            async move { serve(peer, stream, &cx, &frames, &watches).await }
        },
        |mut stream, cx| async move {
            let _ = refuse(&mut stream, BlobRefusal::Busy, &cx).await;
            let _ = stream.close().await;
        },
    )
    .await;
}

/// Serves one blob stream: answers requests one by one until the client closes the stream or
/// sends nothing for a frame deadline; a `Watch` turns it into a watch stream
/// ([`blob_sync::serve_watch`]).
async fn serve(
    peer: PeerId,
    mut stream: Stream,
    cx: &Context,
    frames: &Semaphore,
    watches: &Arc<WatchSlots>,
) -> Result<(), SessionEnd> {
    let limits = &cx.config.blob_limits;
    let mut buf = Vec::new();
    loop {
        let max = limits.max_request_frame();
        let read = read_frame(&mut stream, max, &mut buf, cx.frame_timeout());
        // An idle stream is closed: a client that has more to ask opens a new one.
        let Ok(read) = tokio::time::timeout(cx.frame_timeout(), read).await else {
            return Ok(stream.close().await?);
        };
        if !read? {
            return Ok(stream.close().await?);
        }
        let message = blob_wire::decode(&buf).map_err(|e| SessionEnd::Violation(e.into()))?;
        let request = match message {
            BlobMessage::Request(request) => request,
            BlobMessage::List { after, limit } => {
                let answer = blob_sync::answer_list(cx, after, limit).await?;
                let frame = blob_wire::encode(&answer, limits.max_frame_bytes())
                    .map_err(|e| SessionEnd::Closed(format!("cannot encode ids: {e}")))?;
                write_frame(&mut stream, &frame, cx.frame_timeout()).await?;
                continue;
            }
            BlobMessage::Watch => return blob_sync::serve_watch(stream, peer, cx, watches).await,
            other => {
                return Err(SessionEnd::Violation(Violation::Unexpected {
                    message: other.name(),
                    detail: "a blob client sends only Request, List or Watch",
                }));
            }
        };
        match answer(&request, cx, frames).await? {
            Ok((size, encoded)) => send(&mut stream, size, &encoded, cx).await?,
            Err(refusal) => refuse(&mut stream, refusal, cx).await?,
        }
    }
}

/// The encoding that answers `request` (with the blob's size), or why there is none.
async fn answer(
    request: &BlobRequest,
    cx: &Context,
    frames: &Semaphore,
) -> Result<Result<(u64, Vec<u8>), BlobRefusal>, SessionEnd> {
    let Some(blobs) = &cx.config.blobs else {
        return Ok(Err(BlobRefusal::NoStore));
    };
    let (id, ranges) = match check_request(request, &cx.config.blob_limits) {
        Ok(checked) => checked,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let Some(status) = blobs.status(id).await.map_err(local)? else {
        return Ok(Err(BlobRefusal::NotFound));
    };
    // Held until the answer is written: bounds the encodings held for one peer.
    let _permit = frames
        .acquire()
        .await
        .map_err(|_| SessionEnd::Closed("stopped".into()))?;
    let ranges = clamp(&ranges, status.size);
    match blobs.export_ranges(id, &ranges).await {
        Ok(encoded) => Ok(Ok((status.size, encoded))),
        Err(multibee_blobs::Error::NotFound(_)) => Ok(Err(BlobRefusal::NotFound)),
        Err(multibee_blobs::Error::NotHeld(_) | multibee_blobs::Error::Incomplete(_)) => {
            Ok(Err(BlobRefusal::NotHeld))
        }
        Err(e) => Err(local(e)),
    }
}

fn local(e: multibee_blobs::Error) -> SessionEnd {
    tracing::warn!(%e, "the blob store failed while serving");
    SessionEnd::Closed(format!("blob store: {e}"))
}

async fn refuse(
    stream: &mut Stream,
    refusal: BlobRefusal,
    cx: &Context,
) -> Result<(), StreamError> {
    let limits = &cx.config.blob_limits;
    let frame = blob_wire::encode(&BlobMessage::Refused(refusal), limits.max_frame_bytes())?;
    write_frame(stream, &frame, cx.frame_timeout()).await
}

/// Writes a response: its header, then the encoding in data frames.
async fn send(
    stream: &mut Stream,
    size: u64,
    encoded: &[u8],
    cx: &Context,
) -> Result<(), StreamError> {
    let limits = &cx.config.blob_limits;
    let header = BlobMessage::Response {
        size,
        encoded_len: encoded.len() as u64,
    };
    let frame = blob_wire::encode(&header, limits.max_frame_bytes())?;
    write_frame(stream, &frame, cx.frame_timeout()).await?;
    for chunk in encoded.chunks(limits.data_frame_bytes.max(1)) {
        let frame = blob_wire::encode_data(chunk, limits.max_frame_bytes())?;
        // Counted before it is written: the client may hold it before the write returns.
        Counters::add(&cx.counters.blob_bytes_sent, chunk.len() as u64);
        write_frame(stream, &frame, cx.frame_timeout()).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Fetching.

/// One request of a download.
#[derive(Clone, Debug)]
struct Job {
    ranges: Vec<Range<u64>>,
    /// The size was not known when it was planned: once answered, the rest is planned.
    probe: bool,
}

/// The requests of a download not answered yet, shared by the peers' workers.
struct Queue {
    state: Mutex<QueueState>,
    changed: Notify,
}

struct QueueState {
    jobs: VecDeque<Job>,
    /// Jobs taken by a worker and not finished: they may come back.
    taken: usize,
}

/// A job a worker took; goes back to the queue (first) unless finished.
struct Taken<'a> {
    queue: &'a Queue,
    job: Option<Job>,
}

impl Queue {
    fn new(jobs: VecDeque<Job>) -> Self {
        Queue {
            state: Mutex::new(QueueState { jobs, taken: 0 }),
            changed: Notify::new(),
        }
    }

    /// The next job, and whether the worker had to wait for it; `None` once no job is left
    /// and none can come back.
    async fn next(&self) -> Option<(Taken<'_>, bool)> {
        let mut waited = false;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = lock(&self.state);
                if let Some(job) = state.jobs.pop_front() {
                    state.taken += 1;
                    let taken = Taken {
                        queue: self,
                        job: Some(job),
                    };
                    return Some((taken, waited));
                }
                if state.taken == 0 {
                    return None;
                }
            }
            changed.await;
            waited = true;
        }
    }
}

impl Taken<'_> {
    fn job(&self) -> Option<&Job> {
        self.job.as_ref()
    }

    /// The job is done; `follow` are the jobs it leads to.
    fn finish(mut self, follow: impl IntoIterator<Item = Job>) {
        self.job = None;
        let mut state = lock(&self.queue.state);
        state.jobs.extend(follow);
        state.taken -= 1;
        drop(state);
        self.queue.changed.notify_waiters();
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        let Some(job) = self.job.take() else { return };
        let mut state = lock(&self.queue.state);
        state.jobs.push_front(job);
        state.taken -= 1;
        drop(state);
        self.queue.changed.notify_waiters();
    }
}

/// Why a request to a peer failed: the peer is asked nothing more in this fetch.
#[derive(Debug)]
enum Fault {
    /// The peer refused.
    Refused(BlobRefusal),
    /// The stream failed, closed or was too slow.
    Closed(String),
    /// The peer broke the protocol.
    Violation(Violation),
    /// The peer's bytes did not verify.
    Rejected(String),
    /// The local store failed.
    Local(multibee_blobs::Error),
}

impl From<StreamError> for Fault {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Io(e) => Fault::Closed(e.to_string()),
            StreamError::Frame(e) => Fault::Violation(e.into()),
            StreamError::Slow(waited) => Fault::Closed(format!("no progress for {waited:?}")),
        }
    }
}

/// One download: what every worker shares.
struct Fetch {
    id: BlobId,
    blobs: Blobs,
    cx: Arc<Context>,
    queue: Queue,
    bytes: std::sync::atomic::AtomicU64,
    requests: std::sync::atomic::AtomicU64,
    rejected: Mutex<Vec<PeerId>>,
    /// Peers asked nothing more in this fetch (by any of their workers).
    dropped: Mutex<std::collections::HashSet<PeerId>>,
    /// The blob started over under a size a peer proved (the one recorded was false): the
    /// next finished job plans the rest again.
    replan: std::sync::atomic::AtomicBool,
    /// The first failure of the local store, reported if the blob is not completed.
    local: Mutex<Option<multibee_blobs::Error>>,
}

/// Fetches what the store lacks of blob `id` from `peers` (each with its stream opener, see
/// [`crate::session::fetch`]), one worker per peer, until the blob is complete or no peer
/// can serve the rest.
pub(crate) async fn fetch(
    control: Control,
    cx: Arc<Context>,
    blobs: Blobs,
    id: BlobId,
    peers: Vec<(PeerId, Arc<Semaphore>)>,
) -> Result<FetchOutcome, FetchError> {
    let limits = &cx.config.blob_limits;
    let jobs: VecDeque<Job> = match blobs.status(id).await? {
        Some(status) if status.complete => VecDeque::new(),
        Some(status) => blob_wire::plan(&status.missing(), status.size, limits)
            .into_iter()
            .map(|ranges| Job {
                ranges,
                probe: false,
            })
            .collect(),
        None => VecDeque::from([Job {
            ranges: blob_wire::probe(limits),
            probe: true,
        }]),
    };
    let fetch = Fetch {
        id,
        blobs: blobs.clone(),
        cx: cx.clone(),
        queue: Queue::new(jobs),
        bytes: Default::default(),
        requests: Default::default(),
        rejected: Mutex::default(),
        dropped: Mutex::default(),
        replan: Default::default(),
        local: Mutex::default(),
    };
    // Several requests in flight per peer, and at most MAX_REQUESTS_IN_FLIGHT in all, so that
    // the memory a fetch holds does not grow with the number of peers.
    let in_flight = limits
        .requests_in_flight
        .min(MAX_REQUESTS_IN_FLIGHT / peers.len().max(1))
        .max(1);
    let workers = peers
        .into_iter()
        .flat_map(|(peer, opener)| (0..in_flight).map(move |_| (peer, opener.clone())));
    let workers = workers.map(|(peer, opener)| fetch.worker(control.clone(), peer, opener));
    futures::future::join_all(workers).await;
    let status = blobs.status(id).await?;
    if !status.as_ref().is_some_and(|s| s.complete) {
        // What was imported is kept for the next fetch, even across a restart.
        if let Err(e) = blobs.flush().await {
            tracing::warn!(%e, %id, "cannot save an unfinished download's progress");
        }
    }
    match status {
        Some(status) if status.complete => Ok(FetchOutcome {
            id,
            size: status.size,
            bytes_fetched: fetch.bytes.into_inner(),
            requests: fetch.requests.into_inner(),
            rejected: lock(&fetch.rejected).clone(),
        }),
        other => match lock(&fetch.local).take() {
            Some(e) => Err(FetchError::Store(e)),
            None => Err(FetchError::Incomplete {
                id,
                missing: other
                    .map(|s| s.missing().iter().map(|r| r.end - r.start).sum())
                    .unwrap_or(0),
            }),
        },
    }
}

impl Fetch {
    /// Asks `peer` for jobs until none is left, the peer fails one, or it disconnects.
    async fn worker(&self, control: Control, peer: PeerId, opener: Arc<Semaphore>) {
        let gone = self.cx.gone(peer);
        tokio::select! {
            () = self.work(control, peer, opener) => {}
            () = gone => tracing::debug!(%peer, "the peer left during a blob fetch"),
        }
    }

    async fn work(&self, mut control: Control, peer: PeerId, opener: Arc<Semaphore>) {
        let mut stream: Option<Stream> = None;
        while let Some((taken, waited)) = self.queue.next().await {
            if lock(&self.dropped).contains(&peer) {
                return;
            }
            if waited {
                // The server closes streams idle for a frame deadline.
                stream = None;
            }
            let Some(job) = taken.job().cloned() else {
                return;
            };
            let mut permit = None;
            if stream.is_none() {
                match open(&mut control, peer, &opener).await {
                    Ok((opened, held)) => {
                        permit = Some(held);
                        stream = Some(opened);
                    }
                    Err(e) => {
                        tracing::debug!(%peer, %e, "cannot open a blob stream");
                        return;
                    }
                }
            }
            let Some(open_stream) = stream.as_mut() else {
                return;
            };
            match self.request(open_stream, peer, &mut permit, &job).await {
                Ok(()) => taken.finish(self.follow(&job).await),
                Err(fault) => return self.on_fault(peer, fault).await,
            }
        }
    }

    /// The jobs that follow a probe: the rest of the blob, now that its size is known.
    async fn follow(&self, job: &Job) -> Vec<Job> {
        let replan = self
            .replan
            .swap(false, std::sync::atomic::Ordering::Relaxed);
        if !job.probe && !replan {
            return Vec::new();
        }
        match self.blobs.status(self.id).await {
            Ok(Some(status)) if !status.complete => {
                let limits = &self.cx.config.blob_limits;
                blob_wire::plan(&status.missing(), status.size, limits)
                    .into_iter()
                    .map(|ranges| Job {
                        ranges,
                        probe: false,
                    })
                    .collect()
            }
            Ok(_) => Vec::new(),
            Err(e) => {
                tracing::warn!(%e, "cannot read a blob's status");
                Vec::new()
            }
        }
    }

    async fn on_fault(&self, peer: PeerId, fault: Fault) {
        let reason = match fault {
            Fault::Refused(refusal) => {
                tracing::debug!(%peer, ?refusal, id = %self.id, "blob request refused");
                return;
            }
            Fault::Closed(why) => {
                tracing::debug!(%peer, why, id = %self.id, "blob stream ended");
                return;
            }
            Fault::Local(e) => {
                tracing::warn!(%peer, %e, id = %self.id, "storing a blob failed");
                lock(&self.local).get_or_insert(e);
                return;
            }
            _ if !lock(&self.dropped).insert(peer) => {
                return; // another request to the peer failed first
            }
            Fault::Rejected(reason) => reason,
            Fault::Violation(violation) => {
                let reason = violation.to_string();
                self.cx.report(peer, violation).await;
                reason
            }
        };
        tracing::warn!(%peer, reason, id = %self.id, "blob peer rejected");
        lock(&self.rejected).push(peer);
        let _ = self.cx.events.send(Event::BlobPeerRejected {
            peer,
            id: self.id,
            reason,
        });
    }

    /// Sends one request on `stream`, then verifies and stores the answer.
    async fn request(
        &self,
        stream: &mut Stream,
        peer: PeerId,
        permit: &mut Option<OwnedSemaphorePermit>,
        job: &Job,
    ) -> Result<(), Fault> {
        self.request_ranges(stream, peer, permit, &job.ranges, false)
            .await
    }

    /// Asks for `ranges` on `stream`, then verifies and stores the answer; `proving`: the
    /// request asks the peer to prove its size (it is not asked again).
    async fn request_ranges(
        &self,
        stream: &mut Stream,
        peer: PeerId,
        permit: &mut Option<OwnedSemaphorePermit>,
        ranges: &[Range<u64>],
        proving: bool,
    ) -> Result<(), Fault> {
        let limits = &self.cx.config.blob_limits;
        let request = BlobMessage::Request(BlobRequest {
            id: *self.id.as_bytes(),
            ranges: ranges.to_vec(),
        });
        let frame = blob_wire::encode(&request, limits.max_request_frame())
            .map_err(|e| Fault::Closed(format!("cannot encode a request: {e}")))?;
        write_frame(stream, &frame, self.cx.frame_timeout()).await?;
        let mut buf = Vec::new();
        let header = self.read(stream, &mut buf).await?;
        // The server took the stream: the next stream to this peer may be opened.
        permit.take();
        let (size, encoded_len) = match header {
            BlobMessage::Response { size, encoded_len } => (size, encoded_len),
            BlobMessage::Refused(refusal) => return Err(Fault::Refused(refusal)),
            other => return Err(unexpected(other.name(), "a Response or a Refused")),
        };
        let ranges = clamp(ranges, size);
        if encoded_len > max_encoded_len(&ranges, size) {
            return Err(unexpected(
                "Response",
                "no longer an encoding than the ranges'",
            ));
        }
        let encoded = self.receive(stream, &mut buf, encoded_len).await?;
        match self
            .blobs
            .import_ranges(self.id, size, &ranges, &encoded)
            .await
        {
            Ok(imported) => {
                Counters::add(&self.bytes, encoded_len);
                Counters::add(&self.requests, 1);
                let _ = self.cx.events.send(Event::BlobProgress {
                    id: self.id,
                    peer,
                    held_bytes: imported.held_bytes,
                    size,
                });
                Ok(())
            }
            // The size recorded for the partial blob is not the one this peer claims: the
            // recorded one may be a lie of the peer that started the download. The peer's
            // last chunk group proves its size; if it verifies, the blob starts over under it.
            Err(multibee_blobs::Error::Rejected {
                reason: multibee_blobs::VerifyError::SizeMismatch { .. },
                ..
            }) if !proving => {
                let last = [size.saturating_sub(1)..size];
                Box::pin(self.request_ranges(stream, peer, permit, &last, true)).await?;
                self.replan
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            Err(multibee_blobs::Error::Rejected { reason, .. }) => {
                Err(Fault::Rejected(reason.to_string()))
            }
            // The only argument the peer chose is the size (the ranges are clamped to it).
            Err(multibee_blobs::Error::InvalidArgument(e)) => {
                Err(Fault::Rejected(format!("claimed size {size}: {e}")))
            }
            Err(e) => Err(Fault::Local(e)),
        }
    }

    /// Reads the data frames of an encoding of `encoded_len` bytes.
    async fn receive(
        &self,
        stream: &mut Stream,
        buf: &mut Vec<u8>,
        encoded_len: u64,
    ) -> Result<Vec<u8>, Fault> {
        // encoded_len is bounded by the request's ranges (checked by the caller).
        let mut encoded = Vec::with_capacity(encoded_len as usize);
        while (encoded.len() as u64) < encoded_len {
            self.read_frame(stream, buf).await?;
            let message = match blob_wire::data_of(buf) {
                // Most frames: their bytes are taken from the frame without decoding a copy.
                Some(bytes)
                    if !bytes.is_empty() && (encoded.len() + bytes.len()) as u64 <= encoded_len =>
                {
                    Counters::add(&self.cx.counters.blob_bytes_received, bytes.len() as u64);
                    encoded.extend_from_slice(bytes);
                    continue;
                }
                _ => blob_wire::decode(buf).map_err(|e| Fault::Violation(e.into()))?,
            };
            match message {
                BlobMessage::Data(_) => {
                    return Err(unexpected(
                        "Data",
                        "non-empty data within the announced length",
                    ));
                }
                other => return Err(unexpected(other.name(), "the rest of the encoding")),
            }
        }
        Ok(encoded)
    }

    /// Reads one message, which must begin within a frame deadline.
    async fn read(&self, stream: &mut Stream, buf: &mut Vec<u8>) -> Result<BlobMessage, Fault> {
        self.read_frame(stream, buf).await?;
        blob_wire::decode(buf).map_err(|e| Fault::Violation(e.into()))
    }

    /// Reads one frame's body into `buf`; it must begin within a frame deadline.
    async fn read_frame(&self, stream: &mut Stream, buf: &mut Vec<u8>) -> Result<(), Fault> {
        let (limits, deadline) = (&self.cx.config.blob_limits, self.cx.frame_timeout());
        let read = read_frame(stream, limits.max_frame_bytes(), buf, deadline);
        let read = tokio::time::timeout(deadline, read)
            .await
            .map_err(|_| Fault::Closed(format!("no answer within {deadline:?}")))?;
        match read? {
            true => Ok(()),
            false => Err(Fault::Closed("closed by the peer".into())),
        }
    }
}

fn unexpected(message: &'static str, detail: &'static str) -> Fault {
    Fault::Violation(Violation::Unexpected { message, detail })
}

/// Opens a blob stream to `peer`, holding its opener's permit (kept until the first answer).
pub(crate) async fn open(
    control: &mut Control,
    peer: PeerId,
    opener: &Arc<Semaphore>,
) -> Result<(Stream, OwnedSemaphorePermit), String> {
    let permit = opener
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| "the peer disconnected".to_string())?;
    let stream = control
        .open_stream(peer, blobs_protocol())
        .await
        .map_err(|e| e.to_string())?;
    Ok((stream, permit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: u64) -> Job {
        Job {
            ranges: vec![n..n + 1],
            probe: false,
        }
    }

    #[tokio::test]
    async fn a_job_not_finished_goes_back_to_a_waiting_worker() {
        let queue = Queue::new(VecDeque::from([job(1)]));
        let (taken, waited) = queue.next().await.unwrap();
        assert!(!waited);
        let waiting = queue.next();
        tokio::pin!(waiting);
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        drop(taken);
        let (again, waited) = waiting.await.unwrap();
        assert!(waited);
        assert_eq!(again.job().unwrap().ranges, vec![1..2]);
        again.finish([job(5)]);
        let (next, _) = queue.next().await.unwrap();
        next.finish([]);
        assert!(queue.next().await.is_none());
    }
}
