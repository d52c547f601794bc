//! Filtered replication: the stream tasks of a peer that keeps a partial view (client) and of
//! a peer answering one (server). The entries' meaning (which key an entry is of) belongs to
//! the layer above, behind [`Filter`]; this module carries its answers over the wire.

use std::fmt;

use futures::{AsyncRead, AsyncWrite};
use libp2p::PeerId;
use multibee_feed::{Feed, FeedKey, SparseBatch};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::event::{Counters, Event};
use crate::io::{StreamError, write_frame, write_message};
use crate::protocol::{Client, ClientAction, Server};
use crate::session::{Context, SessionEnd, receive_answers};

/// What filtered replication needs from the layer above: which entries this node wants of a
/// feed, and which entries of a feed answer another node's filtered request.
pub trait Filter: Send + Sync + fmt::Debug + 'static {
    /// What this node asks of `feed`: `None` for the whole feed (plain replication), or
    /// `(prefix, from)` pairs for a filtered request.
    fn wanted(&self, feed: &FeedKey) -> Option<Vec<(Vec<u8>, u64)>>;

    /// The next answer to a filtered request for `wants` of `feed`: the entries asked for
    /// from index `cursor` on (at most `max_bytes` of them), proven over `base`, and the index
    /// the answer covers the request up to (greater than `cursor`). `None` when there is
    /// nothing more to answer for now.
    fn next(
        &self,
        feed: &Feed,
        wants: &[(Vec<u8>, u64)],
        cursor: u64,
        base: u64,
        max_bytes: usize,
    ) -> multibee_feed::Result<Option<(SparseBatch, u64)>>;
}

/// Serves a filtered request on an accepted stream until the client ends it: every answer
/// the filter gives, then new ones whenever the feed changes.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve<W, E>(
    writer: &mut W,
    ended: &mut E,
    server: &Server,
    feed: &Feed,
    mut wants: Vec<(Vec<u8>, u64)>,
    base: u64,
    cx: &Context,
    frames: &Semaphore,
) -> Result<(), SessionEnd>
where
    W: AsyncWrite + Unpin,
    E: Future<Output = Result<bool, StreamError>> + Unpin,
{
    let Some(filter) = cx.config.filter.clone() else {
        return Err(SessionEnd::Closed("no filter to answer with".into()));
    };
    let mut status = feed.subscribe();
    let mut cursor = wants.iter().map(|(_, from)| *from).min().unwrap_or(0);
    let mut base = base;
    let mut max_bytes = cx.config.limits.target_batch_bytes.max(1);
    loop {
        status.borrow_and_update();
        loop {
            // The filter reads and decodes entries: off the runtime's threads.
            let next = {
                let (filter, feed, wants) = (filter.clone(), feed.clone(), wants.clone());
                tokio::task::spawn_blocking(move || {
                    filter.next(&feed, &wants, cursor, base, max_bytes)
                })
            };
            let next = tokio::select! {
                next = next => next.map_err(|e| SessionEnd::Closed(format!("the filter failed: {e}")))?,
                end = &mut *ended => return crate::session::client_end(end),
            };
            let Some((batch, covered)) = next? else {
                break;
            };
            let (count, length) = (batch.entries.len() as u64, batch.proof.length);
            let _permit = tokio::select! {
                permit = frames.acquire() => permit.map_err(|_| SessionEnd::Closed("stopped".into()))?,
                end = &mut *ended => return crate::session::client_end(end),
            };
            let Some(frame) = server.sparse_frame(batch, covered) else {
                if count <= 1 {
                    return Err(SessionEnd::Local(multibee_feed::Error::InvalidArgument(
                        "an entry does not fit in a frame".into(),
                    )));
                }
                max_bytes = (max_bytes / 2).max(1);
                continue;
            };
            tokio::select! {
                written = write_frame(writer, &frame, cx.frame_timeout()) => written?,
                end = &mut *ended => return crate::session::client_end(end),
            }
            Counters::add(&cx.counters.sent, count);
            Counters::add(&cx.counters.bytes_sent, frame.len() as u64);
            cursor = covered;
            base = base.max(length);
            // What the client held before its request is below `cursor` now.
            for (_, from) in &mut wants {
                *from = (*from).max(cursor);
            }
        }
        tokio::select! {
            changed = status.changed() => if changed.is_err() { return Ok(()) },
            end = &mut *ended => return crate::session::client_end(end),
        }
    }
}

/// Fetches `feed` with a filtered request for `wants` from `peer` on an opened stream, storing
/// every answer through the sink, until the stream ends. Always returns how it ended.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn fetch<R, W>(
    reader: R,
    mut writer: W,
    permit: Option<OwnedSemaphorePermit>,
    peer: PeerId,
    feed: Feed,
    wants: Vec<(Vec<u8>, u64)>,
    cx: &Context,
    mut client: Client,
) -> SessionEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let base = feed.status().signed_length;
    let request = client.want_filtered(&wants, base);
    if let Err(e) = write_message(&mut writer, &request, cx.max_frame(), cx.frame_timeout()).await {
        return e.into();
    }
    let prefixes: Vec<Vec<u8>> = wants.into_iter().map(|(p, _)| p).collect();
    let (batches, mut to_store) =
        mpsc::channel::<(SparseBatch, u64)>(cx.config.pipeline_depth.max(1));
    // The client refuses `Data` on a filtered stream: `verify` is never called.
    let verify = |_| {
        Err::<(), _>(multibee_feed::Error::InvalidArgument(
            "contiguous data on a filtered stream".into(),
        ))
    };
    let sparse = |action| match action {
        ClientAction::StoreSparse { batch, covered } => {
            Counters::add(&cx.counters.received, batch.entries.len() as u64);
            Some((batch, covered))
        }
        _ => None,
    };
    let receive = receive_answers(
        reader,
        &mut client,
        permit,
        cx,
        peer,
        verify,
        batches,
        sparse,
    );
    let store = async {
        while let Some((batch, covered)) = to_store.recv().await {
            // Verified here, in order: the proof leaves out roots the previous batch brought.
            let proven = batch.proof.length;
            let verified = feed.verify_sparse(batch)?;
            let ingested = match &cx.config.sink {
                Some(sink) => {
                    sink.ingest_sparse(verified, prefixes.clone(), covered)
                        .await?
                }
                None => {
                    feed.store()
                        .write(move |txn| txn.ingest_sparse(&verified))
                        .await?
                }
            };
            feed.check_not_forked()?;
            if !ingested.stored {
                // Proven over a head we no longer hold (another peer moved it on): ask again.
                return Err(SessionEnd::Closed(
                    "an answer that does not join the head held".into(),
                ));
            }
            Counters::add(&cx.counters.stored, ingested.added);
            let _ = cx.events.send(Event::FeedProgressed {
                key: feed.key(),
                length: covered.min(proven),
                peer,
            });
        }
        Ok::<(), SessionEnd>(())
    };
    let end = match tokio::try_join!(receive, store) {
        Ok(((), ())) => SessionEnd::Closed("stopped".into()),
        Err(end) => end,
    };
    drop(writer);
    end
}
