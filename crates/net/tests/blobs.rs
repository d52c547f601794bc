#![allow(clippy::unwrap_used)]
// Lists of byte ranges are what requests carry: a list of one range is not a mistake here.
#![allow(clippy::single_range_in_vec_init)]
//! The blob protocol: fetching from one and several peers, resuming, rejecting a peer whose
//! bytes do not verify, and refusing bad requests.

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use multibee_blobs::{BlobId, Blobs};
use multibee_net::blob_wire::{
    self, BLOBS_PROTOCOL, BlobLimits, BlobMessage, BlobRefusal, BlobRequest,
};
use multibee_net::{Event, FetchError, wire};

use crate::common::{Peer, Transport, Watchdog, bare_swarm, config, dial_bare, within};

const SIZE: usize = 8 << 20;

/// `len` bytes that do not compress or repeat in chunk groups.
pub(crate) fn bytes(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A node with a blob store (in `DIR/blobs`), Kademlia off.
pub(crate) async fn peer_with(limits: BlobLimits) -> (Peer, Blobs) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Blobs::open(dir.path().join("blobs")).unwrap();
    let config = config()
        .kademlia(false)
        .blobs(blobs.clone())
        .blob_limits(limits);
    (Peer::start_in(dir, config).await, blobs)
}

pub(crate) async fn peer() -> (Peer, Blobs) {
    peer_with(BlobLimits::default()).await
}

/// Small requests, so that a download of [`SIZE`] bytes takes many of them.
fn small_requests() -> BlobLimits {
    let mut limits = BlobLimits::default();
    limits.request_bytes = 256 << 10;
    limits
}

pub(crate) async fn connect(from: &Peer, to: &Peer) -> PeerId {
    let addr = to.addr(Transport::Tcp).await;
    within(
        "a connection",
        from.node.handle().connect(addr, crate::common::PATIENCE),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_is_fetched_from_a_peer_byte_identical() {
    let _watchdog = Watchdog::arm("blobs::a_blob_is_fetched_from_a_peer_byte_identical");
    let data = bytes(SIZE);
    let (a, a_blobs) = peer().await;
    let (b, b_blobs) = peer().await;
    let id = a_blobs.add_bytes(&data).await.unwrap();
    let a_id = connect(&b, &a).await;

    let outcome = within("the fetch", b.node.handle().fetch_blob(id, vec![a_id]))
        .await
        .unwrap();
    assert_eq!(outcome.size, SIZE as u64);
    assert!(outcome.rejected.is_empty());
    // The data, and about 0.4% of proofs.
    assert!(outcome.bytes_fetched >= SIZE as u64, "{outcome:?}");
    assert!(
        outcome.bytes_fetched <= SIZE as u64 * 1005 / 1000,
        "{outcome:?}"
    );
    assert_eq!(b_blobs.read(id).await.unwrap(), data);
    assert_eq!(
        b.node.handle().stats().blob_bytes_received,
        outcome.bytes_fetched
    );
    assert_eq!(
        a.node.handle().stats().blob_bytes_sent,
        outcome.bytes_fetched
    );

    // Fetching a complete blob asks nothing.
    let again = b.node.handle().fetch_blob(id, vec![a_id]).await.unwrap();
    assert_eq!((again.bytes_fetched, again.requests), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_is_fetched_from_two_peers_at_once() {
    let _watchdog = Watchdog::arm("blobs::a_blob_is_fetched_from_two_peers_at_once");
    let data = bytes(SIZE);
    let (a, a_blobs) = peer().await;
    let (b, b_blobs) = peer().await;
    let (c, c_blobs) = peer_with(small_requests()).await;
    let id = a_blobs.add_bytes(&data).await.unwrap();
    assert_eq!(b_blobs.add_bytes(&data).await.unwrap(), id);
    let a_id = connect(&c, &a).await;
    let b_id = connect(&c, &b).await;

    let outcome = within(
        "the fetch",
        c.node.handle().fetch_blob(id, vec![a_id, b_id]),
    )
    .await
    .unwrap();
    assert_eq!(outcome.size, SIZE as u64);
    assert_eq!(c_blobs.read(id).await.unwrap(), data);
    let (from_a, from_b) = (
        a.node.handle().stats().blob_bytes_sent,
        b.node.handle().stats().blob_bytes_sent,
    );
    assert!(from_a > 0 && from_b > 0, "A sent {from_a}, B sent {from_b}");
    assert_eq!(from_a + from_b, outcome.bytes_fetched);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_resumes_from_what_is_held() {
    let _watchdog = Watchdog::arm("blobs::a_fetch_resumes_from_what_is_held");
    let data = bytes(SIZE);
    let (a, a_blobs) = peer().await;
    let (b, b_blobs) = peer().await;
    let id = a_blobs.add_bytes(&data).await.unwrap();
    // B already holds the first half (an interrupted download).
    let half = [0..SIZE as u64 / 2];
    let encoded = a_blobs.export_ranges(id, &half).await.unwrap();
    let imported = b_blobs
        .import_ranges(id, SIZE as u64, &half, &encoded)
        .await
        .unwrap();
    assert!(!imported.complete);
    let a_id = connect(&b, &a).await;

    let outcome = within("the fetch", b.node.handle().fetch_blob(id, vec![a_id]))
        .await
        .unwrap();
    assert_eq!(b_blobs.read(id).await.unwrap(), data);
    let rest = SIZE as u64 / 2;
    assert!(
        outcome.bytes_fetched >= rest && outcome.bytes_fetched <= rest * 1005 / 1000,
        "only the missing half is fetched: {outcome:?}"
    );
    assert_eq!(
        a.node.handle().stats().blob_bytes_sent,
        outcome.bytes_fetched
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_fetch_resumes_without_fetching_again_what_verified() {
    let _watchdog = Watchdog::arm("blobs::an_interrupted_fetch_resumes");
    let data = bytes(SIZE);
    let (a, a_blobs) = peer().await;
    let (mut b, b_blobs) = peer_with(small_requests()).await;
    let id = a_blobs.add_bytes(&data).await.unwrap();
    let a_id = connect(&b, &a).await;

    let handle = b.node.handle();
    let fetch = tokio::spawn(async move { handle.fetch_blob(id, vec![a_id]).await });
    b.event(|e| match e {
        Event::BlobProgress {
            id: got,
            held_bytes,
            size,
            ..
        } if *got == id && *held_bytes >= SIZE as u64 / 4 => {
            assert_eq!(*size, SIZE as u64);
            Some(())
        }
        _ => None,
    })
    .await;
    fetch.abort();
    assert!(fetch.await.unwrap_err().is_cancelled());
    // An import already running when the fetch was dropped finishes on the blocking pool:
    // whatever it stored is held (and not asked for again). The fetch may even have finished
    // before the abort landed: then the resumed fetch must ask for nothing, which the bound
    // below checks as well.
    let held = b_blobs.status(id).await.unwrap().unwrap();

    let outcome = within(
        "the resumed fetch",
        b.node.handle().fetch_blob(id, vec![a_id]),
    )
    .await
    .unwrap();
    assert_eq!(b_blobs.read(id).await.unwrap(), data);
    let held_bytes: u64 = held.held.iter().map(|r| r.end - r.start).sum();
    let missing = SIZE as u64 - held_bytes;
    assert!(held_bytes >= SIZE as u64 / 4);
    assert!(
        outcome.bytes_fetched <= missing * 1005 / 1000 + (256 << 10),
        "{held_bytes} bytes were held, {} fetched",
        outcome.bytes_fetched
    );
}

/// Reads one blob protocol message from a raw stream; `None` if the stream ended.
async fn read_message(stream: &mut Stream) -> Option<BlobMessage> {
    let mut prefix = [0u8; wire::PREFIX_BYTES];
    stream.read_exact(&mut prefix).await.ok()?;
    let length = wire::body_length(prefix, BlobLimits::default().max_frame_bytes()).unwrap();
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    Some(blob_wire::decode(&body).unwrap())
}

async fn write_message(stream: &mut Stream, message: &BlobMessage) {
    let frame = blob_wire::encode(message, 32 << 20).unwrap();
    stream.write_all(&frame).await.unwrap();
    stream.flush().await.unwrap();
}

/// How a liar lies.
#[derive(Clone, Copy)]
enum Lie {
    /// Flips a bit of every encoding.
    FlipBit,
    /// Claims the blob has this size (smaller than the true one), sending the true encoding
    /// of the ranges asked, cut at that size: the first ranges verify all the same.
    Size(u64),
}

/// A bare peer holding `data` that connects to `to` and answers its blob requests with a bit
/// flipped ([`serve_lies`]); its id, and the folder of its store (keep it alive).
async fn start_liar(to: &mut Peer, data: &[u8]) -> (libp2p::PeerId, tempfile::TempDir) {
    start_lying(to, data, Lie::FlipBit).await
}

/// [`start_liar`] with a chosen lie.
async fn start_lying(to: &mut Peer, data: &[u8], lie: Lie) -> (libp2p::PeerId, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Blobs::open(dir.path()).unwrap();
    blobs.add_bytes(data).await.unwrap();
    let mut swarm = bare_swarm();
    let liar = *swarm.local_peer_id();
    let incoming = swarm
        .behaviour()
        .new_control()
        .accept(StreamProtocol::new(BLOBS_PROTOCOL))
        .unwrap();
    assert!(dial_bare(&mut swarm, to.addr(Transport::Tcp).await).await);
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    tokio::spawn(serve_lies(incoming, blobs, lie));
    to.event(|e| match e {
        Event::PeerConnected { peer, .. } if *peer == liar => Some(()),
        _ => None,
    })
    .await;
    (liar, dir)
}

/// A peer that speaks the blob protocol but lies in every answer ([`Lie`]).
async fn serve_lies(mut incoming: libp2p_stream::IncomingStreams, blobs: Blobs, lie: Lie) {
    while let Some((_, mut stream)) = incoming.next().await {
        let blobs = blobs.clone();
        tokio::spawn(async move {
            while let Some(BlobMessage::Request(request)) = read_message(&mut stream).await {
                let id = BlobId::from_bytes(request.id);
                let size = match lie {
                    Lie::FlipBit => blobs.size(id).await.unwrap(),
                    Lie::Size(size) => size,
                };
                let ranges = blob_wire::clamp(&request.ranges, size);
                let mut encoded = blobs.export_ranges(id, &ranges).await.unwrap();
                if let Lie::FlipBit = lie {
                    let middle = encoded.len() / 2;
                    encoded[middle] ^= 1;
                }
                let header = BlobMessage::Response {
                    size,
                    encoded_len: encoded.len() as u64,
                };
                write_message(&mut stream, &header).await;
                for chunk in encoded.chunks(1 << 20) {
                    write_message(&mut stream, &BlobMessage::Data(chunk.to_vec())).await;
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_bytes_do_not_verify_is_rejected_and_an_honest_one_completes() {
    let _watchdog = Watchdog::arm("blobs::a_peer_whose_bytes_do_not_verify_is_rejected");
    let data = bytes(SIZE);
    let (a, a_blobs) = peer().await;
    let (mut c, c_blobs) = peer_with(small_requests()).await;
    let id = a_blobs.add_bytes(&data).await.unwrap();
    let a_id = connect(&c, &a).await;

    let (liar, _liar_dir) = start_liar(&mut c, &data).await;

    // The liar first: it is asked first.
    let outcome = within(
        "the fetch",
        c.node.handle().fetch_blob(id, vec![liar, a_id]),
    )
    .await
    .unwrap();
    assert_eq!(outcome.rejected, vec![liar]);
    assert_eq!(c_blobs.read(id).await.unwrap(), data);
    c.event(|e| match e {
        Event::BlobPeerRejected {
            peer,
            id: got,
            reason,
        } if *peer == liar && *got == id => {
            assert!(reason.contains("hash mismatch"), "{reason}");
            Some(())
        }
        _ => None,
    })
    .await;

    // With the liar alone, nothing that does not verify is stored.
    let (mut d, d_blobs) = peer().await;
    let (liar, _liar_dir) = start_liar(&mut d, &data).await;
    let alone = within("the fetch", d.node.handle().fetch_blob(id, vec![liar])).await;
    assert!(
        matches!(alone, Err(FetchError::Incomplete { .. })),
        "{alone:?}"
    );
    assert_eq!(d_blobs.status(id).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_the_node_keeps_serving() {
    let _watchdog = Watchdog::arm("blobs::bad_requests_are_refused_and_the_node_keeps_serving");
    let data = bytes(1 << 20);
    let (mut a, a_blobs) = peer().await;
    let id = a_blobs.add_bytes(&data).await.unwrap();
    let storeless = Peer::start(config().kademlia(false)).await;

    let mut swarm = bare_swarm();
    let me = *swarm.local_peer_id();
    let mut control = swarm.behaviour().new_control();
    assert!(dial_bare(&mut swarm, a.addr(Transport::Tcp).await).await);
    assert!(dial_bare(&mut swarm, storeless.addr(Transport::Tcp).await).await);
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let protocol = StreamProtocol::new(BLOBS_PROTOCOL);
    let (a_id, storeless_id) = (a.node.peer_id(), storeless.node.peer_id());
    let ask = |ranges: Vec<std::ops::Range<u64>>, id: [u8; 32]| {
        BlobMessage::Request(BlobRequest { id, ranges })
    };

    let mut stream = within("a stream", control.open_stream(a_id, protocol.clone()))
        .await
        .unwrap();
    // One stream, several requests: each answered in turn.
    let answers = within("the answers", async {
        let mut answers = Vec::new();
        for request in [
            ask(vec![0..100], [7; 32]),
            ask(vec![0..(16 << 20) + 1], *id.as_bytes()),
            ask(vec![0..1; 65], *id.as_bytes()),
            ask(vec![std::ops::Range { start: 10, end: 5 }], *id.as_bytes()),
        ] {
            write_message(&mut stream, &request).await;
            answers.push(read_message(&mut stream).await.unwrap());
        }
        // A good request on the same stream is served (ranges beyond the end are clamped).
        write_message(&mut stream, &ask(vec![0..16 << 20], *id.as_bytes())).await;
        answers.push(read_message(&mut stream).await.unwrap());
        answers
    })
    .await;
    use BlobRefusal::*;
    assert_eq!(
        answers[..4],
        [NotFound, TooLarge, TooLarge, TooLarge].map(BlobMessage::Refused)
    );
    assert!(
        matches!(answers[4], BlobMessage::Response { size, .. } if size == data.len() as u64),
        "{:?}",
        answers[4]
    );

    // A node without a blob store refuses.
    let mut stream = within(
        "a stream",
        control.open_stream(storeless_id, protocol.clone()),
    )
    .await
    .unwrap();
    write_message(&mut stream, &ask(vec![0..1], *id.as_bytes())).await;
    let answer = within("the answer", read_message(&mut stream)).await;
    assert_eq!(answer, Some(BlobMessage::Refused(NoStore)));
    let no_store = storeless.node.handle().fetch_blob(id, vec![a_id]).await;
    assert!(matches!(no_store, Err(FetchError::NoStore)), "{no_store:?}");

    // Garbage: the stream is closed and the sender rejected.
    let mut stream = within("a stream", control.open_stream(a_id, protocol.clone()))
        .await
        .unwrap();
    stream
        .write_all(&[0, 0, 0, 4, wire::WIRE_VERSION, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    stream.flush().await.unwrap();
    let after = within("the stream to close", read_message(&mut stream)).await;
    assert_eq!(after, None);
    a.event(|e| match e {
        Event::PeerRejected { peer, .. } if *peer == me => Some(()),
        _ => None,
    })
    .await;

    // The node keeps serving others.
    let (b, b_blobs) = peer().await;
    let a_id = connect(&b, &a).await;
    within("the fetch", b.node.handle().fetch_blob(id, vec![a_id]))
        .await
        .unwrap();
    assert_eq!(b_blobs.read(id).await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_during_a_fetch_is_a_clear_error_and_keeps_what_verified() {
    use multibee_feed::faults::{Fault, Faults};
    let _watchdog = Watchdog::arm("blobs::a_full_disk_during_a_fetch");
    let data = bytes(SIZE);
    let (a, a_blobs) = peer().await;
    let faults = Faults::new();
    let dir = tempfile::tempdir().unwrap();
    let options = multibee_blobs::Options::default().faults(faults.clone());
    let b_blobs = Blobs::open_with(dir.path().join("blobs"), options).unwrap();
    let config = config().kademlia(false).blobs(b_blobs.clone());
    let b = Peer::start_in(dir, config).await;
    let id = a_blobs.add_bytes(&data).await.unwrap();
    let a_id = connect(&b, &a).await;

    // A first part is held; then the disk fills up.
    let first = [0..SIZE as u64 / 4];
    let encoded = a_blobs.export_ranges(id, &first).await.unwrap();
    b_blobs
        .import_ranges(id, SIZE as u64, &first, &encoded)
        .await
        .unwrap();
    faults.set(Fault::DiskFull);
    let err = within("the fetch", b.node.handle().fetch_blob(id, vec![a_id]))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Store(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("writing blob"), "{message}");
    assert!(message.contains("no storage space"), "{message}");
    // The peer is not blamed, and what was held still is, and verifies.
    let status = b_blobs.status(id).await.unwrap().unwrap();
    assert_eq!(status.held, [0..SIZE as u64 / 4]);
    let verifier_dir = tempfile::tempdir().unwrap();
    let verifier = Blobs::open(verifier_dir.path()).unwrap();
    let held = b_blobs.export_ranges(id, &status.held).await.unwrap();
    verifier
        .import_ranges(id, SIZE as u64, &status.held, &held)
        .await
        .unwrap();

    // Space again: the fetch completes from what was held.
    faults.set(Fault::None);
    let outcome = within("the fetch", b.node.handle().fetch_blob(id, vec![a_id]))
        .await
        .unwrap();
    assert!(outcome.rejected.is_empty());
    assert!(
        outcome.bytes_fetched < SIZE as u64 * 3 / 4 * 1005 / 1000,
        "{outcome:?}"
    );
    assert_eq!(b_blobs.read(id).await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_false_size_from_the_first_peer_does_not_make_an_honest_one_a_liar() {
    let _watchdog = Watchdog::arm("blobs::a_false_size_from_the_first_peer");
    let data = bytes(SIZE);
    let (a, a_blobs) = peer().await;
    let (mut c, c_blobs) = peer_with(small_requests()).await;
    let id = a_blobs.add_bytes(&data).await.unwrap();
    let a_id = connect(&c, &a).await;
    // 6 MiB instead of 8: the tree has the same left half, so the first ranges verify.
    let (liar, _liar_dir) = start_lying(&mut c, &data, Lie::Size(6 << 20)).await;

    // The liar is asked first: the download starts under its size.
    let outcome = within(
        "the fetch",
        c.node.handle().fetch_blob(id, vec![liar, a_id]),
    )
    .await
    .unwrap();
    assert!(!outcome.rejected.contains(&a_id), "{outcome:?}");
    assert_eq!(outcome.size, SIZE as u64);
    assert_eq!(c_blobs.read(id).await.unwrap(), data);
}
