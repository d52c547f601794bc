//! "Arbitrary bytes never panic": the frame decoders of `wire` and the replication state
//! machines of `protocol`, fed random bytes, mutations of real frames, and random sequences of
//! both. Only the absence of a panic is asserted; `fuzz/` runs the same for longer.

use std::sync::OnceLock;

use multibee_feed::{Batch, FeedKey, Store, proof};
use multibee_net::blob_wire::{self, BlobLimits, BlobMessage};
use multibee_net::protocol::{Client, Limits, Server, announce, receive_announce};
use multibee_net::wire::{self, Data, Have, Message};
use proptest::prelude::*;

#[path = "../../feed/tests/mutations.rs"]
mod mutations;
use mutations::{check_truncating, edits, mutate};

const LOCAL: &[u8] = b"local peer";
const REMOTE: &[u8] = b"remote peer";
const MAX: usize = 1 << 16;

/// A real batch: entries 2..6 of an 8-entry feed.
fn sample() -> &'static Batch {
    static SAMPLE: OnceLock<Batch> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = Store::open(dir.path()).unwrap();
            let feed = store.create_feed().await.unwrap();
            feed.append_batch((0..8u8).map(|i| vec![i; 3 + i as usize]).collect())
                .await
                .unwrap();
            feed.proof(2..6).unwrap()
        })
    })
}

/// Real frames of every message a peer sends (prefix included).
fn frames() -> Vec<Vec<u8>> {
    let batch = sample();
    let key = batch.feed;
    let mut client = Client::new(key, LOCAL, REMOTE);
    let messages = [
        client.want(2),
        Message::Have(Have {
            discovery_key: key.discovery_key(),
            length: 8,
        }),
        Message::Data(Data {
            discovery_key: key.discovery_key(),
            start: batch.start,
            entries: batch.entries.clone(),
            proof: batch.proof.clone(),
        }),
        Server::busy(),
        announce([key.discovery_key(), FeedKey([3; 32]).discovery_key()]),
    ];
    messages
        .iter()
        .map(|m| wire::encode(m, MAX).unwrap())
        .collect()
}

/// The stateless checks a receiving node runs on a batch.
fn verify(batch: Batch) -> Result<(), multibee_feed::Error> {
    proof::verify(&batch.feed, batch.start, &batch.entries, &[], &batch.proof)
        .map(drop)
        .map_err(|reason| multibee_feed::Error::Rejected {
            feed: batch.feed,
            reason,
        })
}

/// Every decoder and state machine entry point, on one frame (prefix included).
fn receive_frame(frame: &[u8]) {
    let _ = wire::decode_frame(frame, MAX);
    if let Some(prefix) = frame.first_chunk::<{ wire::PREFIX_BYTES }>() {
        let _ = wire::body_length(*prefix, MAX);
    }
    let body = frame.get(wire::PREFIX_BYTES..).unwrap_or_default();
    for bytes in [frame, body] {
        let _ = wire::decode(bytes);
        let _ = receive_announce(bytes);
        let key = sample().feed;
        let mut server = Server::new(REMOTE, LOCAL, Limits::default());
        if server.receive(bytes, |_| Some(key)).is_ok() {
            let _ = server.have(8);
            let _ = server.next_range(8);
            let _ = server.receive(bytes, |_| Some(key));
        }
    }
}

/// A client past its `Want` and the server's `Have`, ready for data.
fn streaming_client() -> Client {
    let key = sample().feed;
    let mut client = Client::new(key, LOCAL, REMOTE);
    let _ = client.want(2);
    let have = wire::encode(
        &Message::Have(Have {
            discovery_key: key.discovery_key(),
            length: 8,
        }),
        MAX,
    )
    .unwrap();
    client.receive(&have[wire::PREFIX_BYTES..], verify).unwrap();
    client
}

#[test]
fn the_sample_frames_are_accepted() {
    let frames = frames();
    for frame in &frames {
        wire::decode_frame(frame, MAX).unwrap();
    }
    let mut client = streaming_client();
    client
        .receive(&frames[2][wire::PREFIX_BYTES..], verify)
        .unwrap();
    assert_eq!(client.next(), 6);
}

#[test]
fn mutated_frames_never_panic() {
    let inputs = (0usize..5, edits());
    check_truncating(
        file!(),
        "mutated_frames_never_panic",
        inputs,
        |(which, edits)| {
            let frame = mutate(frames()[which].clone(), &edits);
            receive_frame(&frame);
            let body = frame.get(wire::PREFIX_BYTES..).unwrap_or_default();
            let _ = streaming_client().receive(body, verify);
            Ok(())
        },
    );
}

/// The blob protocol's decoder and the checks both sides run on what it decodes.
fn receive_blob_frame(body: &[u8], size: u64) {
    let limits = BlobLimits::default();
    if let Ok(BlobMessage::Request(request)) = blob_wire::decode(body)
        && let Ok((_, ranges)) = blob_wire::check_request(&request, &limits)
    {
        let clamped = blob_wire::clamp(&ranges, size);
        let _ = blob_wire::max_encoded_len(&clamped, size);
        let _ = blob_wire::max_encoded_len(&ranges, size);
        // Planning walks the ranges in request-sized steps: only for sizes a test can walk.
        let _ = blob_wire::plan(&clamped, size % (1 << 30), &limits);
    }
}

proptest! {
    #[test]
    fn arbitrary_blob_frames_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        size in any::<u64>(),
    ) {
        let mut versioned = vec![wire::WIRE_VERSION];
        versioned.extend_from_slice(&bytes);
        receive_blob_frame(&versioned, size);
        // A request's layout with arbitrary ranges.
        let mut request = vec![wire::WIRE_VERSION, 0];
        request.extend_from_slice(&[9; 32]);
        request.extend_from_slice(&bytes);
        receive_blob_frame(&request, size);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        receive_frame(&bytes);
        let mut versioned = vec![wire::WIRE_VERSION];
        versioned.extend_from_slice(&bytes);
        receive_frame(&versioned);
        let _ = streaming_client().receive(&versioned, verify);
    }

    /// The client state machine fed a sequence of real, mutated and random bodies, from each
    /// of its states.
    #[test]
    fn the_client_survives_any_sequence(
        wanted in any::<bool>(),
        steps in prop::collection::vec(
            (0usize..6, edits(), prop::collection::vec(any::<u8>(), 0..64)),
            1..8,
        ),
    ) {
        let frames = frames();
        let mut client = Client::new(sample().feed, LOCAL, REMOTE);
        if wanted {
            let _ = client.want(2);
        }
        for (which, edits, random) in steps {
            let body = match frames.get(which) {
                Some(frame) if edits.len() % 2 == 0 => frame[wire::PREFIX_BYTES..].to_vec(),
                Some(frame) => mutate(frame[wire::PREFIX_BYTES..].to_vec(), &edits),
                None => random,
            };
            let _ = client.receive(&body, verify);
        }
    }
}
