//! The attacks: what the attacker draws on (a writer's feed, a second history of it, another
//! feed) and the table of scenarios, each an attack and what the honest node must do.

use std::time::Duration;

use multibee_feed::VerifyError;
use multibee_feed::{Batch, Feed, FeedKey, Store};
use multibee_net::wire::{self, Announce, Data, Have, Message};
use multibee_net::{FrameError, Violation};
use tempfile::TempDir;

use crate::attacker::{self, Script, answer, dribble, send_and_close};
use crate::common::{append, copy_dir};

/// Feeds the attacker draws on.
pub struct Material {
    _dirs: Vec<TempDir>,
    /// The writer's feed: 50 entries, signed at lengths 40 and 50.
    pub one: Feed,
    /// A second history of the same key, diverging at entry 40 (the writer equivocated).
    pub two: Feed,
    /// Another feed of 50 entries.
    pub other: Feed,
    /// A proof of entries 0..20 against the signed length 40.
    pub at_40: Batch,
    /// Feeds the honest node asks the attacker for in the claims scenario.
    pub claimed: Vec<FeedKey>,
    /// A store folder holding only [`Material::large`], copied for each honest node.
    pub template: TempDir,
    /// A feed of 2,048 entries of 4 KiB (8 MiB).
    pub large: FeedKey,
}

pub async fn material() -> Material {
    let (first, second, third) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (key, at_40) = {
        let store = Store::open(first.path()).unwrap();
        let feed = store.create_feed().await.unwrap();
        append(&feed, 0, 40).await;
        (feed.key(), feed.proof(0..20).unwrap())
    };
    copy_dir(first.path(), second.path());
    let one = Store::open(first.path()).unwrap().feed(&key).unwrap();
    append(&one, 40, 50).await;
    let two = Store::open(second.path()).unwrap().feed(&key).unwrap();
    let diverging = (40..50).map(|i| format!("other history {i}").into_bytes());
    two.append_batch(diverging.collect()).await.unwrap();
    let store = Store::open(third.path()).unwrap();
    let other = store.create_feed().await.unwrap();
    append(&other, 0, 50).await;
    let mut claimed = Vec::new();
    for _ in 0..64 {
        claimed.push(store.create_feed().await.unwrap().key());
    }
    let template = tempfile::tempdir().unwrap();
    let large = {
        let store = Store::open(template.path()).unwrap();
        let large = store.create_feed().await.unwrap();
        let block = vec![7u8; 4096];
        for _ in 0..4 {
            large.append_batch(vec![block.clone(); 512]).await.unwrap();
        }
        large.key()
    };
    Material {
        _dirs: vec![first, second, third],
        one,
        two,
        other,
        at_40,
        claimed,
        template,
        large,
    }
}

pub fn frame(message: &Message) -> Vec<u8> {
    wire::encode(message, wire::DEFAULT_MAX_FRAME_BYTES).unwrap()
}

/// A data message of `feed`'s entries `range`, proven against its current length.
fn data(feed: &Feed, range: std::ops::Range<u64>) -> Data {
    let batch = feed.proof(range).unwrap();
    Data {
        discovery_key: feed.discovery_key(),
        start: batch.start,
        entries: batch.entries,
        proof: batch.proof,
    }
}

fn have(feed: &Feed, length: u64) -> Vec<u8> {
    frame(&Message::Have(Have {
        discovery_key: feed.discovery_key(),
        length,
    }))
}

/// A frame whose length prefix is rewritten to cover the whole of `body_and_more`.
fn reframed(mut bytes: Vec<u8>) -> Vec<u8> {
    let length = (bytes.len() - wire::PREFIX_BYTES) as u32;
    bytes[..wire::PREFIX_BYTES].copy_from_slice(&length.to_be_bytes());
    bytes
}

/// What the attacker does as a client of the honest node.
pub enum Request {
    /// Opens a replicate stream and sends these bytes as its request.
    Raw(Vec<u8>),
    /// Sends a valid request for the served feed, then these bytes.
    WantThen(Vec<u8>),
    /// Sends a valid request one byte per second.
    SlowWant,
    /// Opens this many replicate streams at once, each with a valid request.
    Streams(usize),
    /// Opens this many streams asking for the large feed, and never reads them.
    NeverRead(usize),
    /// Sends these bytes on an announce stream.
    Announce(Vec<u8>),
    /// This many more identities connect at once.
    Crowd(usize),
}

pub enum Attack {
    /// The honest node asks the attacker for the writer's feed (and, with `claims`, for the
    /// claimed feeds); the attacker answers every stream with the script.
    Serve { script: Script, claims: bool },
    /// The attacker connects to the honest node and makes a request.
    Request(Request),
}

/// What the honest node must do.
pub enum Expect {
    /// Reject the attacker for a violation that `is` accepts.
    Rejected(fn(&Violation) -> bool),
    /// Treat the stream as failed (indistinguishable from a network fault) and ask again.
    AskedAgain,
    /// Answer within the protocol (refusals) and go on; the attacker is not rejected.
    Served,
    /// Freeze the feed, keeping the evidence that its writer equivocated, and not reject the
    /// attacker (a peer that only forwards the writer's second history looks the same).
    Frozen,
}

pub struct Scenario {
    pub name: &'static str,
    pub attack: Attack,
    pub expect: Expect,
    /// Entries of the writer's feed (history one) the honest node holds before the attack.
    pub held: u64,
    /// The most entries it may hold after, every one of them the writer's.
    pub max_stored: u64,
}

fn rejected(is: fn(&Violation) -> bool) -> Expect {
    Expect::Rejected(is)
}

fn serve(script: Script) -> Attack {
    Attack::Serve {
        script,
        claims: false,
    }
}

/// The scenarios, in the order the README's table lists them.
pub fn scenarios(m: &Material) -> Vec<Scenario> {
    let one = &m.one;
    let ok = |d: Data| frame(&Message::Data(d));
    let hello = || have(one, 50);
    let scenario = |name, attack, expect| Scenario {
        name,
        attack,
        expect,
        held: 0,
        max_stored: 0,
    };
    let mut forged_signature = data(one, 0..20);
    forged_signature.proof.signature.0[10] ^= 1;
    let mut other_roots = data(one, 0..20);
    other_roots.proof.signature = m.at_40.proof.signature;
    let mut altered_entry = data(one, 0..20);
    altered_entry.entries[7] = b"forged".to_vec();
    let mut altered_proof = data(one, 0..20);
    altered_proof.proof.nodes[0].0[5] ^= 0x40;
    let mut never_signed = data(one, 0..20);
    never_signed.proof.length = 45;
    let mut renamed = data(&m.other, 0..20);
    renamed.discovery_key = one.discovery_key();
    let mut huge_length = data(one, 0..20);
    huge_length.proof.length = 1 << 63;
    let mut at_the_end = data(one, 0..20);
    at_the_end.start = u64::MAX - 1;
    let mut empty = data(one, 0..20);
    empty.entries.clear();
    let mut trailing = ok(data(one, 0..20));
    trailing.extend_from_slice(&[0, 0, 0]);
    let mut unknown_version = ok(data(one, 0..20));
    unknown_version[wire::PREFIX_BYTES] = 77;
    let whole = ok(data(one, 0..20));
    let cut = whole[..whole.len() / 2].to_vec();
    let mut over_limit = (64u32 << 20).to_be_bytes().to_vec();
    over_limit.extend_from_slice(&[0; 1024]);
    let pushed = frame(&Message::Data(data(&m.other, 0..1)));
    let announce_too_many = frame(&Message::Announce(Announce {
        discovery_keys: vec![one.discovery_key(); wire::MAX_ANNOUNCED + 1],
    }));

    let bad_signature: fn(&Violation) -> bool =
        |v| *v == Violation::Invalid(VerifyError::BadSignature);
    let out_of_order: fn(&Violation) -> bool = |v| matches!(v, Violation::OutOfOrder { .. });
    vec![
        scenario(
            "forged signature",
            serve(answer(vec![hello(), ok(forged_signature)])),
            rejected(bad_signature),
        ),
        scenario(
            "valid signature over other roots",
            serve(answer(vec![hello(), ok(other_roots)])),
            rejected(bad_signature),
        ),
        scenario(
            "altered entry",
            serve(answer(vec![hello(), ok(altered_entry)])),
            rejected(bad_signature),
        ),
        scenario(
            "altered proof",
            serve(answer(vec![hello(), ok(altered_proof)])),
            rejected(bad_signature),
        ),
        scenario(
            "proof for a length never signed",
            serve(answer(vec![hello(), ok(never_signed)])),
            rejected(|v| matches!(v, Violation::Invalid(VerifyError::BadProof(_)))),
        ),
        scenario(
            "entries of a feed not asked for",
            serve(answer(vec![hello(), ok(data(&m.other, 0..20))])),
            rejected(|v| matches!(v, Violation::UnrequestedFeed { .. })),
        ),
        scenario(
            "another feed's entries under the name asked for",
            serve(answer(vec![hello(), ok(renamed)])),
            rejected(bad_signature),
        ),
        Scenario {
            held: 45,
            max_stored: 45,
            ..scenario(
                "equivocation: a second signed history",
                serve(answer(vec![hello(), ok(data(&m.two, 45..50))])),
                Expect::Frozen,
            )
        },
        Scenario {
            max_stored: 20,
            ..scenario(
                "replayed batch",
                serve(answer(vec![
                    hello(),
                    ok(data(one, 0..20)),
                    ok(data(one, 0..20)),
                ])),
                rejected(out_of_order),
            )
        },
        Scenario {
            max_stored: 20,
            ..scenario(
                "overlapping ranges",
                serve(answer(vec![
                    hello(),
                    ok(data(one, 0..20)),
                    ok(data(one, 10..30)),
                ])),
                rejected(out_of_order),
            )
        },
        scenario(
            "out-of-order range",
            serve(answer(vec![hello(), ok(data(one, 20..40))])),
            rejected(out_of_order),
        ),
        scenario(
            "length claim of 2^63",
            serve(answer(vec![have(one, 1 << 63), ok(huge_length)])),
            rejected(|v| matches!(v, Violation::Invalid(VerifyError::TooLarge(_)))),
        ),
        scenario(
            "entries starting at 2^64 - 2",
            serve(answer(vec![hello(), ok(at_the_end)])),
            rejected(out_of_order),
        ),
        scenario(
            "data message without entries",
            serve(answer(vec![hello(), ok(empty)])),
            rejected(|v| matches!(v, Violation::EmptyData)),
        ),
        scenario(
            "data before the answer",
            serve(answer(vec![ok(data(one, 0..20))])),
            rejected(|v| matches!(v, Violation::Unexpected { .. })),
        ),
        scenario(
            "zero-length frame",
            serve(answer(vec![hello(), vec![0, 0, 0, 0]])),
            rejected(|v| matches!(v, Violation::Frame(FrameError::Malformed(_)))),
        ),
        scenario(
            "over-limit frame",
            serve(answer(vec![hello(), over_limit])),
            rejected(|v| matches!(v, Violation::Frame(FrameError::TooLarge { .. }))),
        ),
        scenario(
            "frame cut in the middle",
            serve(send_and_close([hello(), cut].concat())),
            Expect::AskedAgain,
        ),
        scenario(
            "garbage bytes",
            serve(answer(vec![
                hello(),
                [&[0, 0, 0, 8, 1][..], &[0xff; 7]].concat(),
            ])),
            rejected(|v| matches!(v, Violation::Frame(FrameError::Malformed(_)))),
        ),
        scenario(
            "valid frame with trailing bytes",
            serve(answer(vec![hello(), reframed(trailing)])),
            rejected(|v| matches!(v, Violation::Frame(FrameError::TrailingBytes(3)))),
        ),
        scenario(
            "unknown protocol version",
            serve(answer(vec![hello(), unknown_version])),
            rejected(|v| matches!(v, Violation::Frame(FrameError::UnknownVersion(77)))),
        ),
        scenario(
            "slowloris server: a frame at one byte per second",
            serve(dribble(hello(), whole.clone(), Duration::from_secs(1))),
            rejected(|v| matches!(v, Violation::TooSlow(_))),
        ),
        scenario(
            "64 streams each claiming a 9 MiB frame, then silence",
            Attack::Serve {
                script: attacker::claim_then_stall((wire::DEFAULT_MAX_FRAME_BYTES) as u32),
                claims: true,
            },
            rejected(|v| matches!(v, Violation::TooSlow(_))),
        ),
        scenario(
            "entries pushed for a feed never added",
            Attack::Request(Request::Raw(pushed)),
            // A request frame may hold a filtered request's prefixes: a small Data frame fits,
            // and is refused as out of turn.
            rejected(|v| {
                matches!(
                    v,
                    Violation::Unexpected {
                        message: "Data",
                        ..
                    }
                )
            }),
        ),
        scenario(
            "garbage request",
            Attack::Request(Request::Raw(vec![0, 0, 0, 3, 1, 0xfe, 0xfe])),
            rejected(|v| matches!(v, Violation::Frame(FrameError::Malformed(_)))),
        ),
        scenario(
            "a second message after the request",
            Attack::Request(Request::WantThen(frame(&Message::Have(Have {
                discovery_key: one.discovery_key(),
                length: 1,
            })))),
            rejected(|v| matches!(v, Violation::Unexpected { .. })),
        ),
        scenario(
            "slowloris client: a request at one byte per second",
            Attack::Request(Request::SlowWant),
            rejected(|v| matches!(v, Violation::TooSlow(_))),
        ),
        scenario(
            "2,000 streams opened at once",
            Attack::Request(Request::Streams(2000)),
            Expect::Served,
        ),
        scenario(
            "a reader that never reads (64 streams)",
            Attack::Request(Request::NeverRead(64)),
            rejected(|v| matches!(v, Violation::TooSlow(_))),
        ),
        scenario(
            "a crowd of 100 identities connecting at once",
            Attack::Request(Request::Crowd(100)),
            Expect::Served,
        ),
        scenario(
            "announcement of too many feeds",
            Attack::Request(Request::Announce(announce_too_many)),
            rejected(|v| matches!(v, Violation::AnnounceTooLarge(_))),
        ),
    ]
}
