//! The blob protocol (`/multibee/blobs/1`): its messages, its limits, and the pure parts of
//! both sides (checking a request, bounding a response, planning a download).
//!
//! Frames have the layout of [`crate::wire`]: a 4-byte big-endian length, a version byte
//! ([`crate::wire::WIRE_VERSION`]) and one [`BlobMessage`] in postcard. On a stream the client
//! sends a [`BlobRequest`] and reads the answer before it sends the next one: either a
//! [`BlobMessage::Refused`], or a [`BlobMessage::Response`] with the blob's size and the
//! length of the bao encoding that follows in [`BlobMessage::Data`] frames. Store sync (the
//! coffer way: sorted id lists once, then a live queue of new ids) uses [`BlobMessage::List`]
//! (answered by [`BlobMessage::Ids`]) and [`BlobMessage::Watch`] (answered by
//! [`BlobMessage::Watching`], then [`BlobMessage::Arrived`] and [`BlobMessage::Lagged`]
//! frames until the client closes the stream). See `PROTOCOL.md`.

// Lists of byte ranges are what requests carry: a list of one range is not a mistake here.
#![allow(clippy::single_range_in_vec_init)]

use std::collections::VecDeque;
use std::ops::Range;

use multibee_blobs::BlobId;
use serde::{Deserialize, Serialize};

use crate::error::FrameError;
use crate::wire;

/// The blob protocol: one stream per (fetch, peer), carrying requests one after the other.
pub const BLOBS_PROTOCOL: &str = "/multibee/blobs/1";
/// The bytes of a chunk group, the unit of verification (see [`multibee_blobs::BLOCK_SIZE`]).
pub const GROUP_BYTES: u64 = 16 << 10;
/// Hash-pair bytes per node of the tree in an encoding.
const PAIR_BYTES: u64 = 64;
/// The deepest a tree gets (blobs are at most 2^56 bytes: 42 levels above the groups).
const MAX_DEPTH: u64 = 64;
/// Postcard overhead of a data frame around its bytes (version, variant, length varint).
const DATA_FRAME_OVERHEAD: usize = 16;

/// Sizes of the blob protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlobLimits {
    /// Served: the most bytes one request may ask for (the sum of its ranges, before they are
    /// clamped to the blob's size). A larger request is refused ([`BlobRefusal::TooLarge`]).
    /// The server holds one request's encoding in memory while it sends it.
    pub max_request_bytes: u64,
    /// Served: the most ranges one request may name.
    pub max_ranges: usize,
    /// Fetched: the bytes each request of a download asks for (rounded down to whole chunk
    /// groups, at most `max_request_bytes`).
    pub request_bytes: u64,
    /// Both: the most encoded bytes in one data frame.
    pub data_frame_bytes: usize,
    /// Fetched: requests in flight to one peer at once, each on its own stream, so that the
    /// peer encodes and sends the next answers while this node verifies and stores one.
    pub requests_in_flight: usize,
    /// Served: the most ids one [`BlobMessage::Ids`] answer carries; a [`BlobMessage::List`]
    /// asking for more is clamped to it (not refused: the answer says `more`).
    pub max_list_ids: usize,
    /// Served: the most watch streams ([`BlobMessage::Watch`]) one peer may hold open at once
    /// (beyond, [`BlobRefusal::Busy`]).
    pub max_watches_per_peer: usize,
}

impl Default for BlobLimits {
    fn default() -> Self {
        BlobLimits {
            max_request_bytes: 16 << 20,
            max_ranges: 64,
            request_bytes: 2 << 20,
            data_frame_bytes: 1 << 20,
            requests_in_flight: 4,
            max_list_ids: 1024,
            max_watches_per_peer: 2,
        }
    }
}

impl BlobLimits {
    /// The longest frame either side reads: a data frame.
    pub fn max_frame_bytes(&self) -> usize {
        self.data_frame_bytes + DATA_FRAME_OVERHEAD
    }

    /// The longest request frame a server reads.
    pub fn max_request_frame(&self) -> usize {
        // id, variant, count, and two varints of at most 10 bytes per range.
        64 + 20 * self.max_ranges
    }

    /// [`BlobLimits::request_bytes`] in whole chunk groups, within the served limit.
    fn request_size(&self) -> u64 {
        let bytes = self.request_bytes.min(self.max_request_bytes);
        (bytes / GROUP_BYTES).max(1) * GROUP_BYTES
    }
}

/// The most ids in one [`BlobMessage::Arrived`] frame (a protocol constant: a client rejects
/// a frame with more).
pub const MAX_ARRIVED_IDS: usize = 256;

/// "Send me these byte ranges of this blob, with their proof."
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct BlobRequest {
    /// The blob's id (its BLAKE3 hash).
    pub id: [u8; 32],
    /// Byte ranges, at most [`BlobLimits::max_ranges`] of them, asking for at most
    /// [`BlobLimits::max_request_bytes`] in all. The server clamps them to the blob's size (so a
    /// client that does not know the size asks from 0) and rounds them out to whole chunk
    /// groups, as the client does when it verifies.
    pub ranges: Vec<Range<u64>>,
}

/// Why a server does not answer a [`BlobRequest`] with data. The stream stays open for the
/// next request.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum BlobRefusal {
    /// The server has no such blob.
    NotFound,
    /// The server holds only part of the blob, and not every chunk group asked for.
    NotHeld,
    /// The server keeps no blob store.
    NoStore,
    /// The request names too many ranges, asks for too many bytes, or has an inverted range.
    TooLarge,
    /// Too many streams from this peer at once (the stream ends).
    Busy,
}

/// Every message of the blob protocol.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum BlobMessage {
    /// Client to server: a request (the next one only once the previous one is answered).
    Request(BlobRequest),
    /// Server to client: the requested ranges follow, `encoded_len` bytes of bao encoding (in
    /// pre-order, the ranges clamped to `size` and rounded out to chunk groups) in
    /// [`BlobMessage::Data`] frames.
    Response {
        /// The blob's size, as the server holds it (proven by the encoding when it carries the
        /// last chunk group).
        size: u64,
        /// The length of the encoding.
        encoded_len: u64,
    },
    /// Server to client: the next bytes of the encoding (at most
    /// [`BlobLimits::data_frame_bytes`], never empty).
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Server to client: the request is not answered.
    Refused(BlobRefusal),
    /// Client to server: "your complete blobs' ids after `after` (from the first if `None`),
    /// in order, at most `limit` of them" (clamped to [`BlobLimits::max_list_ids`]). Answered
    /// by [`BlobMessage::Ids`]; the stream stays open for the next request.
    List {
        /// The last id of the previous page, if any.
        after: Option<[u8; 32]>,
        /// The most ids wanted.
        limit: u32,
    },
    /// Server to client: ids of complete blobs, sorted, strictly after the `List`'s `after`.
    Ids {
        /// The ids, at most the (clamped) limit asked for.
        ids: Vec<[u8; 32]>,
        /// Whether more ids follow the last one (ask again with it as `after`).
        more: bool,
    },
    /// Client to server: "tell me the id of every blob that becomes complete from now on".
    /// The last request of a stream: the client then only reads, and closes the stream to
    /// stop.
    Watch,
    /// Server to client: the watch is in place (every blob complete after this is told).
    Watching,
    /// Server to client: ids of blobs that became complete, in order (1 to
    /// [`MAX_ARRIVED_IDS`]).
    Arrived(Vec<[u8; 32]>),
    /// Server to client: the watcher fell behind and ids were skipped: list again.
    Lagged,
}

impl BlobMessage {
    /// The message's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            BlobMessage::Request(_) => "Request",
            BlobMessage::Response { .. } => "Response",
            BlobMessage::Data(_) => "Data",
            BlobMessage::Refused(_) => "Refused",
            BlobMessage::List { .. } => "List",
            BlobMessage::Ids { .. } => "Ids",
            BlobMessage::Watch => "Watch",
            BlobMessage::Watching => "Watching",
            BlobMessage::Arrived(_) => "Arrived",
            BlobMessage::Lagged => "Lagged",
        }
    }
}

/// Encodes a message as a whole frame (prefix included), failing over `max_frame_bytes`.
pub fn encode(message: &BlobMessage, max_frame_bytes: usize) -> Result<Vec<u8>, FrameError> {
    wire::encode_value(message, max_frame_bytes)
}

/// Decodes a frame body (what follows the [`crate::wire::PREFIX_BYTES`]-byte prefix).
pub fn decode(body: &[u8]) -> Result<BlobMessage, FrameError> {
    wire::decode_value(body)
}

/// Postcard's index of [`BlobMessage::Data`].
const DATA_VARIANT: u8 = 2;

/// The frame of `BlobMessage::Data(bytes)`, byte for byte what [`encode`] makes of it, with
/// `bytes` copied once (a data frame is most of what the protocol sends).
pub fn encode_data(bytes: &[u8], max_frame_bytes: usize) -> Result<Vec<u8>, FrameError> {
    let mut frame = Vec::with_capacity(wire::PREFIX_BYTES + 12 + bytes.len());
    frame.extend_from_slice(&[0; wire::PREFIX_BYTES]);
    frame.extend_from_slice(&[wire::WIRE_VERSION, DATA_VARIANT]);
    let mut len = [0u8; 10];
    let len = postcard::to_slice(&(bytes.len() as u64), &mut len)
        .map_err(|e| FrameError::Malformed(format!("cannot encode: {e}")))?;
    frame.extend_from_slice(len);
    frame.extend_from_slice(bytes);
    wire::seal_frame(frame, max_frame_bytes)
}

/// The bytes of a frame body holding a [`BlobMessage::Data`], borrowed from it; `None` for
/// any other body (to be decoded with [`decode`], which also reports what is wrong with it).
pub fn data_of(body: &[u8]) -> Option<&[u8]> {
    match body {
        [wire::WIRE_VERSION, DATA_VARIANT, rest @ ..] => {
            let (len, bytes) = postcard::take_from_bytes::<u64>(rest).ok()?;
            (bytes.len() as u64 == len).then_some(bytes)
        }
        _ => None,
    }
}

/// Checks a request against the served limits: the blob and its ranges, or the refusal.
pub fn check_request(
    request: &BlobRequest,
    limits: &BlobLimits,
) -> Result<(BlobId, Vec<Range<u64>>), BlobRefusal> {
    if request.ranges.len() > limits.max_ranges {
        return Err(BlobRefusal::TooLarge);
    }
    let mut total: u64 = 0;
    for r in &request.ranges {
        if r.start > r.end {
            return Err(BlobRefusal::TooLarge);
        }
        total = total.saturating_add(r.end - r.start);
    }
    if total > limits.max_request_bytes {
        return Err(BlobRefusal::TooLarge);
    }
    Ok((BlobId::from_bytes(request.id), request.ranges.clone()))
}

/// How many ids a server answers a `List` asking for `limit` with.
pub fn list_size(limit: u32, limits: &BlobLimits) -> usize {
    (limit as usize).min(limits.max_list_ids)
}

/// Checks an `Ids` answer to a `List { after, limit }`: at most `limit` ids, strictly
/// increasing, all after `after`. The ids, or what is wrong.
pub fn check_ids(
    after: Option<BlobId>,
    limit: usize,
    ids: &[[u8; 32]],
) -> Result<Vec<BlobId>, &'static str> {
    if ids.len() > limit {
        return Err("no more ids than asked for");
    }
    let mut last = after.map(|a| *a.as_bytes());
    for id in ids {
        if last.is_some_and(|l| *id <= l) {
            return Err("sorted ids after the one asked for");
        }
        last = Some(*id);
    }
    Ok(ids.iter().map(|id| BlobId::from_bytes(*id)).collect())
}

/// `ranges` cut at `size` (empty ones dropped): what both sides encode and verify.
pub fn clamp(ranges: &[Range<u64>], size: u64) -> Vec<Range<u64>> {
    ranges
        .iter()
        .map(|r| r.start.min(size)..r.end.min(size))
        .filter(|r| r.start < r.end)
        .collect()
}

/// An upper bound on the encoding of `ranges` (clamped) of a blob of `size` bytes: their chunk
/// groups, the hash pairs inside them and the ones on their paths to the root. A response
/// announcing more is a violation, refused before any of it is read.
pub fn max_encoded_len(ranges: &[Range<u64>], size: u64) -> u64 {
    ranges
        .iter()
        .map(|r| {
            let start = r.start / GROUP_BYTES * GROUP_BYTES;
            let end = r.end.div_ceil(GROUP_BYTES).saturating_mul(GROUP_BYTES);
            let groups = end.saturating_sub(start) / GROUP_BYTES;
            (end.min(size).saturating_sub(start.min(size)))
                .saturating_add(PAIR_BYTES.saturating_mul(groups + 2 * MAX_DEPTH))
        })
        .fold(0, u64::saturating_add)
}

/// The requests of a download: `missing` (sorted, disjoint byte ranges of a blob of `size`
/// bytes, whole chunk groups as [`multibee_blobs::Status::missing`] gives them) cut at
/// multiples of [`BlobLimits::request_bytes`] and packed into requests of at most that many
/// bytes and [`BlobLimits::max_ranges`] ranges. The request that carries the last chunk group
/// comes first: its verification proves the size that the others are imported under.
pub fn plan(missing: &[Range<u64>], size: u64, limits: &BlobLimits) -> VecDeque<Vec<Range<u64>>> {
    let step = limits.request_size();
    let max_ranges = limits.max_ranges.max(1);
    let mut requests: VecDeque<Vec<Range<u64>>> = VecDeque::new();
    let mut current: Vec<Range<u64>> = Vec::new();
    let mut current_bytes = 0;
    for r in clamp(missing, size) {
        let mut at = r.start;
        while at < r.end {
            let room = step - current_bytes;
            let end = r.end.min(at.saturating_add(room));
            current.push(at..end);
            current_bytes += end - at;
            at = end;
            if current_bytes == step || current.len() == max_ranges {
                requests.push_back(std::mem::take(&mut current));
                current_bytes = 0;
            }
        }
    }
    if !current.is_empty() {
        requests.push_back(current);
    }
    if let Some(last) = requests.pop_back() {
        requests.push_front(last);
    }
    requests
}

/// The first request of a download whose size is not known: the first
/// [`BlobLimits::request_bytes`] (the answer tells the size).
pub fn probe(limits: &BlobLimits) -> Vec<Range<u64>> {
    vec![0..limits.request_size()]
}

#[cfg(test)]
mod tests {
    #[test]
    fn data_frames_encode_and_borrow_as_postcard_does() {
        for len in [1usize, 127, 128, 16_383, 16_384, 300_000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let frame = encode_data(&bytes, 1 << 20).unwrap();
            assert_eq!(
                frame,
                encode(&BlobMessage::Data(bytes.clone()), 1 << 20).unwrap()
            );
            let body = &frame[wire::PREFIX_BYTES..];
            assert_eq!(data_of(body), Some(&bytes[..]));
            assert_eq!(decode(body).unwrap(), BlobMessage::Data(bytes));
        }
        assert!(encode_data(&[0; 100], 50).is_err());
        let other = encode(&BlobMessage::Refused(BlobRefusal::Busy), 1 << 20).unwrap();
        assert_eq!(data_of(&other[wire::PREFIX_BYTES..]), None);
        let mut truncated = encode_data(&[1, 2, 3], 1 << 20).unwrap();
        truncated.pop();
        assert_eq!(data_of(&truncated[wire::PREFIX_BYTES..]), None);
    }

    use super::*;
    use crate::wire::PREFIX_BYTES;

    fn limits(request_bytes: u64) -> BlobLimits {
        BlobLimits {
            request_bytes,
            ..BlobLimits::default()
        }
    }

    #[test]
    fn a_request_is_a_fixed_layout() {
        let request = BlobMessage::Request(BlobRequest {
            id: [0xab; 32],
            ranges: vec![0..300],
        });
        let frame = encode(&request, 1 << 20).unwrap();
        // prefix, version, variant 0, 32 id bytes, 1 range, varint 0, varint 300.
        assert_eq!(&frame[..6], &[0, 0, 0, 38, 1, 0]);
        assert_eq!(&frame[frame.len() - 4..], &[1, 0, 0xac, 0x02]);
        let body = &frame[PREFIX_BYTES..];
        assert_eq!(decode(body).unwrap(), request);
        assert!(frame.len() - PREFIX_BYTES <= BlobLimits::default().max_request_frame());
    }

    #[test]
    fn a_full_data_frame_fits_the_frame_limit() {
        let limits = BlobLimits::default();
        let data = BlobMessage::Data(vec![7; limits.data_frame_bytes]);
        assert!(encode(&data, limits.max_frame_bytes()).is_ok());
        let request = BlobMessage::Request(BlobRequest {
            id: [0xff; 32],
            ranges: vec![u64::MAX - 1..u64::MAX; limits.max_ranges],
        });
        assert!(encode(&request, limits.max_request_frame()).is_ok());
    }

    #[test]
    fn requests_over_the_limits_are_refused() {
        let limits = BlobLimits::default();
        let ask = |ranges: Vec<Range<u64>>| {
            check_request(
                &BlobRequest {
                    id: [1; 32],
                    ranges,
                },
                &limits,
            )
        };
        assert!(ask(vec![0..limits.max_request_bytes]).is_ok());
        assert_eq!(
            ask(vec![0..limits.max_request_bytes + 1]),
            Err(BlobRefusal::TooLarge)
        );
        assert_eq!(
            ask(vec![Range { start: 5, end: 4 }]),
            Err(BlobRefusal::TooLarge)
        );
        assert_eq!(
            ask(vec![0..1; limits.max_ranges + 1]),
            Err(BlobRefusal::TooLarge)
        );
        assert_eq!(
            ask(vec![0..u64::MAX, 0..u64::MAX]),
            Err(BlobRefusal::TooLarge)
        );
    }

    #[test]
    fn a_full_id_list_fits_the_frame_limit_and_bad_lists_are_caught() {
        let limits = BlobLimits::default();
        let ids = BlobMessage::Ids {
            ids: vec![[0xff; 32]; limits.max_list_ids],
            more: true,
        };
        assert!(encode(&ids, limits.max_frame_bytes()).is_ok());
        let arrived = BlobMessage::Arrived(vec![[0xff; 32]; MAX_ARRIVED_IDS]);
        assert!(encode(&arrived, limits.max_frame_bytes()).is_ok());
        let list = BlobMessage::List {
            after: Some([0xff; 32]),
            limit: u32::MAX,
        };
        assert!(encode(&list, limits.max_request_frame()).is_ok());
        assert_eq!(list_size(u32::MAX, &limits), limits.max_list_ids);
        assert_eq!(list_size(3, &limits), 3);

        let (a, b) = ([1; 32], [2; 32]);
        let after = Some(BlobId::from_bytes(a));
        assert!(check_ids(None, 2, &[a, b]).is_ok());
        assert!(check_ids(after, 2, &[b]).is_ok());
        assert!(check_ids(after, 2, &[a, b]).is_err(), "not after");
        assert!(check_ids(None, 2, &[b, a]).is_err(), "not sorted");
        assert!(check_ids(None, 2, &[a, a]).is_err(), "repeated");
        assert!(check_ids(None, 1, &[a, b]).is_err(), "too many");
    }

    #[test]
    fn plans_cover_what_is_missing_in_bounded_requests_last_group_first() {
        let size = 10 * GROUP_BYTES + 5;
        let missing = vec![0..3 * GROUP_BYTES, 5 * GROUP_BYTES..size];
        let plan = plan(&missing, size, &limits(4 * GROUP_BYTES));
        assert_eq!(plan[0].last().unwrap().end, size, "{plan:?}");
        let mut covered: Vec<Range<u64>> = plan.iter().flatten().cloned().collect();
        covered.sort_by_key(|r| r.start);
        let total: u64 = covered.iter().map(|r| r.end - r.start).sum();
        assert_eq!(total, 3 * GROUP_BYTES + 5 * GROUP_BYTES + 5);
        for request in &plan {
            let bytes: u64 = request.iter().map(|r| r.end - r.start).sum();
            assert!(bytes <= 4 * GROUP_BYTES);
            for r in request {
                assert_eq!(r.start % GROUP_BYTES, 0, "{r:?} starts inside a group");
            }
        }
    }

    #[test]
    fn the_encoding_bound_holds_for_real_encodings() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let blobs = multibee_blobs::Blobs::open(dir.path()).unwrap();
            let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            let id = blobs.add_bytes(&bytes).await.unwrap();
            let size = bytes.len() as u64;
            for ranges in [
                vec![0..size],
                vec![0..1],
                vec![size - 1..size],
                vec![1000..2000, 100_000..200_000],
            ] {
                let encoded = blobs.export_ranges(id, &ranges).await.unwrap();
                assert!(
                    encoded.len() as u64 <= max_encoded_len(&ranges, size),
                    "{ranges:?}: {} > {}",
                    encoded.len(),
                    max_encoded_len(&ranges, size)
                );
            }
        });
    }
}
