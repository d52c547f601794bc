//! Blobs over HTTP: a streamed upload larger than the JSON body limit, whole and ranged
//! downloads with their headers, listing, deletion, and bad requests; and the node's `blob`
//! commands on stdin.

use std::collections::HashMap;

use multibee::MultiBee;
use multibee::blobs::Blobs;
use multibee::http::HttpApi;
use serde_json::{Value as Json, json};

use crate::common::{serve_on_loopback, within};
use crate::node::Node;

/// One HTTP/1.1 request with raw bytes; the status, the headers (names lowercased) and the
/// body bytes (the server sends a Content-Length, or none with no body).
async fn raw(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> (u16, HashMap<String, String>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = within(tokio::net::TcpStream::connect(addr)).await.unwrap();
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    within(stream.read_to_end(&mut response)).await.unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8(response[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, response[split + 4..].to_vec())
}

fn json_of(body: &[u8]) -> Json {
    serde_json::from_slice(body).unwrap_or(Json::Null)
}

#[tokio::test]
async fn blobs_upload_stream_range_list_and_delete_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let mb = MultiBee::open(dir.path().join("db")).await.unwrap();
    let blobs = Blobs::open(dir.path().join("blobs")).unwrap();
    let (server, addr) = serve_on_loopback(HttpApi::new(mb.clone()).blobs(blobs)).await;

    // 3 MiB: over the 1 MiB limit of JSON bodies, streamed into the store.
    let data: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
        .collect();
    let (status, _, body) = raw(&addr, "PUT", "/blobs", &["Content-Type: image/png"], &data).await;
    let answer = json_of(&body);
    assert_eq!(status, 200, "{answer}");
    let id = blake3::hash(&data).to_hex().to_string();
    assert_eq!(answer, json!({"ok": true, "id": id, "size": data.len()}));

    let path = format!("/blobs/{id}");
    let (status, headers, body) = raw(&addr, "GET", &path, &[], b"").await;
    assert_eq!(status, 200);
    assert!(body == data, "the bytes read back differ");
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["content-length"], data.len().to_string());
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(headers["etag"], format!("\"{id}\""));

    let n = data.len();
    for (range, from, to) in [
        ("bytes=10-19", 10, 20),
        ("bytes=-5", n - 5, n),
        (&format!("bytes={}-", n - 3) as &str, n - 3, n),
        (&format!("bytes=0-{}", n + 100) as &str, 0, n),
    ] {
        let header = format!("Range: {range}");
        let (status, headers, body) = raw(&addr, "GET", &path, &[&header], b"").await;
        assert_eq!(status, 206, "{range}");
        assert!(body == data[from..to], "{range}: other bytes");
        assert_eq!(
            headers["content-range"],
            format!("bytes {from}-{}/{n}", to - 1)
        );
    }
    for bad in [
        format!("bytes={n}-"),
        "bytes=5-2".to_string(),
        "bytes=-0".to_string(),
    ] {
        let header = format!("Range: {bad}");
        let (status, headers, body) = raw(&addr, "GET", &path, &[&header], b"").await;
        assert_eq!(status, 416, "{bad}: {}", json_of(&body));
        assert_eq!(headers["content-range"], format!("bytes */{n}"));
    }
    let header = format!("If-None-Match: \"{id}\"");
    let (status, _, body) = raw(&addr, "GET", &path, &[&header], b"").await;
    assert_eq!((status, body.len()), (304, 0));
    let (status, headers, body) = raw(&addr, "HEAD", &path, &[], b"").await;
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(headers["content-length"], n.to_string());

    // Listed with size and type; a second, untyped blob pages after it.
    let (status, _, body) = raw(&addr, "PUT", "/blobs", &[], b"small").await;
    assert_eq!(status, 200);
    let small = json_of(&body)["id"].as_str().unwrap().to_string();
    let (status, _, body) = raw(&addr, "GET", "/blobs?limit=1", &[], b"").await;
    assert_eq!(status, 200);
    let page = json_of(&body);
    let first = page["blobs"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(page["next"], json!(first));
    let (_, _, body) = raw(&addr, "GET", &format!("/blobs?after={first}"), &[], b"").await;
    let rest = json_of(&body);
    assert_eq!(rest["next"], Json::Null);
    let mut all = vec![page["blobs"][0].clone(), rest["blobs"][0].clone()];
    all.sort_by_key(|b| b["id"].as_str().unwrap().to_string());
    let mut want = vec![
        json!({"id": id, "size": n, "type": "image/png"}),
        json!({"id": small, "size": 5, "type": null}),
    ];
    want.sort_by_key(|b| b["id"].as_str().unwrap().to_string());
    assert_eq!(all, want);

    // Bad requests: clear errors, nothing changed.
    for (method, path, status) in [
        ("GET", "/blobs/xyz".to_string(), 400),
        ("GET", format!("/blobs/{}", id.to_uppercase()), 400),
        ("GET", format!("/blobs/{}", "0".repeat(64)), 404),
        ("GET", "/blobs?limit=0".to_string(), 400),
        ("GET", "/blobs?after=nothex".to_string(), 400),
        ("GET", "/blobs?bogus=1".to_string(), 400),
        ("DELETE", format!("/blobs/{}", "0".repeat(64)), 404),
    ] {
        let (got, _, body) = raw(&addr, method, &path, &[], b"").await;
        let answer = json_of(&body);
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert!(answer["reason"].is_string(), "{method} {path}: {answer}");
    }

    // No node behind this API: nothing is ever downloading.
    let (status, _, body) = raw(&addr, "GET", "/blobs/_downloads", &[], b"").await;
    assert_eq!((status, json_of(&body)), (200, json!({"downloads": []})));

    let (status, _, _) = raw(&addr, "DELETE", &path, &[], b"").await;
    assert_eq!(status, 200);
    let (status, _, body) = raw(&addr, "GET", &path, &[], b"").await;
    assert_eq!(
        (status, json_of(&body)["error"].clone()),
        (404, json!("not_found"))
    );
    within(server.shutdown()).await;
    mb.close().await;
}

#[tokio::test]
async fn without_a_blob_store_the_blob_routes_answer_404() {
    let dir = tempfile::tempdir().unwrap();
    let mb = MultiBee::open(dir.path()).await.unwrap();
    let (server, addr) = serve_on_loopback(HttpApi::new(mb.clone())).await;
    let (status, _, body) = raw(&addr, "PUT", "/blobs", &[], b"x").await;
    assert_eq!(status, 404, "{}", json_of(&body));
    let (status, _, body) = raw(&addr, "GET", "/blobs/_downloads", &[], b"").await;
    assert_eq!(status, 404, "{}", json_of(&body));
    within(server.shutdown()).await;
    mb.close().await;
}

#[test]
fn the_node_adds_gets_lists_and_reports_blobs_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("photo.bin");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let mut node = Node::start(&dir.path().join("node"), &[]);
    // The answer and the arrival's event line, in whichever order they come.
    node.send(&format!("blob add {}", file.display())).unwrap();
    let wanted = |l: &Json| l.get("ok").is_some() || l["event"] == "blob_arrived";
    let mut lines = [
        node.next_matching("the answer and the arrival", wanted),
        node.next_matching("the answer and the arrival", wanted),
    ];
    lines.sort_by_key(|l| l.get("ok").is_some());
    let [arrived, added] = lines;
    let id = blake3::hash(&data).to_hex().to_string();
    assert_eq!(
        arrived,
        json!({"event": "blob_arrived", "id": id, "size": 100_000, "keys": []})
    );
    assert_eq!(added["ok"], true, "{added}");
    assert_eq!(
        (added["id"].as_str(), added["size"].as_u64()),
        (Some(&*id), Some(100_000))
    );
    let out = dir.path().join("copy.bin");
    let got = node.ok(&format!("blob get {id} {}", out.display()));
    assert_eq!(got["size"], 100_000);
    assert!(std::fs::read(&out).unwrap() == data);
    // Into a folder: a file named after the id; nothing else is left in it.
    let folder = dir.path().join("out");
    std::fs::create_dir(&folder).unwrap();
    let got = node.ok(&format!("blob get {id} {}", folder.display()));
    assert_eq!(got["path"], json!(folder.join(&id).display().to_string()));
    assert!(std::fs::read(folder.join(&id)).unwrap() == data);
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 1);
    let listed = node.ok("blob list");
    assert_eq!(listed["blobs"], json!([{"id": id, "size": 100_000}]));
    assert_eq!(listed["more"], false);
    let status = node.ok(&format!("blob status {id}"));
    assert_eq!(
        (&status["complete"], &status["held_bytes"], &status["size"]),
        (&json!(true), &json!(100_000), &json!(100_000))
    );
    for (line, says) in [
        ("blob get nothex /tmp/x".to_string(), "bad blob id"),
        (
            format!("blob get {} {}", "0".repeat(64), out.display()),
            "not found",
        ),
        (
            format!("blob add {}", dir.path().join("missing").display()),
            "missing",
        ),
        ("blob status a b".to_string(), "usage"),
        ("blob".to_string(), "usage"),
        ("blob add".to_string(), "usage: blob add PATH"),
        (format!("blob get {id}"), "usage: blob get ID PATH"),
        (format!("blob get {}", "0".repeat(64)), "usage"),
        (
            format!("blob get {} {}", "0".repeat(64), out.display()),
            "blob fetch",
        ),
        (
            format!(
                "blob get {id} {}",
                dir.path().join("no/such/dir/x").display()
            ),
            "cannot write",
        ),
        (format!("blob add {}", dir.path().display()), "regular file"),
        ("blob status nothex".to_string(), "bad blob id"),
        (format!("blob status {}", id.to_uppercase()), "uppercase"),
        ("blob list nothex".to_string(), "bad blob id"),
        ("blob fetch".to_string(), "usage: blob fetch ID"),
        ("blob fetch nothex".to_string(), "bad blob id"),
        (
            format!("blob fetch {}", "0".repeat(64)),
            "no peer is connected",
        ),
        ("blob frobnicate".to_string(), "unknown blob action"),
        ("blob gc now".to_string(), "usage"),
    ] {
        let answer = node.cmd(&line);
        assert_eq!(answer["ok"], false, "{line}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(says), "{line}: {error}");
    }
    // Held: fetching it needs no peer; nothing is being downloaded.
    assert_eq!(node.ok(&format!("blob fetch {id}"))["fetched_bytes"], 0);
    assert_eq!(node.ok("blob status")["downloads"], json!([]));
    // Just added: a collection keeps it.
    assert_eq!(node.ok("blob gc")["removed"], json!([]));
    node.stop();
}

#[tokio::test]
async fn a_collection_over_http_keeps_what_documents_reference() {
    let dir = tempfile::tempdir().unwrap();
    let mb = MultiBee::open(dir.path().join("db")).await.unwrap();
    let blobs = Blobs::open(dir.path().join("blobs")).unwrap();
    let (server, addr) = serve_on_loopback(HttpApi::new(mb.clone()).blobs(blobs)).await;
    let upload = |body: &'static [u8]| {
        let addr = addr.clone();
        async move {
            let (status, _, answer) = raw(&addr, "PUT", "/blobs", &[], body).await;
            assert_eq!(status, 200);
            json_of(&answer)["id"].as_str().unwrap().to_string()
        }
    };
    let kept = upload(b"a photo").await;
    let dropped = upload(b"a draft nobody kept").await;
    let doc =
        json!({"title": "trip", "photos": [{"$blob": kept, "size": 7, "type": "image/jpeg"}]});
    let (status, _, _) = raw(&addr, "PUT", "/docs/trip", &[], doc.to_string().as_bytes()).await;
    assert_eq!(status, 200);

    // Just added: both are spared within the grace period.
    let (status, _, body) = raw(&addr, "POST", "/blobs/_gc", &[], b"").await;
    let answer = json_of(&body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["removed"], json!([]));
    assert_eq!(answer["kept"]["referenced"], 1);
    // Without one, the unreferenced blob goes and the referenced one stays.
    let (status, _, body) = raw(&addr, "POST", "/blobs/_gc?grace_ms=0", &[], b"").await;
    let answer = json_of(&body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["removed"], json!([dropped]));
    let (status, _, _) = raw(&addr, "GET", &format!("/blobs/{kept}"), &[], b"").await;
    assert_eq!(status, 200);
    let (status, _, _) = raw(&addr, "GET", &format!("/blobs/{dropped}"), &[], b"").await;
    assert_eq!(status, 404);
    let (status, _, _) = raw(&addr, "POST", "/blobs/_gc?grace=1", &[], b"").await;
    assert_eq!(status, 400);
    within(server.shutdown()).await;
    mb.close().await;
}

#[test]
fn a_node_fetches_a_blob_from_the_peer_that_added_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) =
        crate::node::counting_each_other(&dir.path().join("a"), &dir.path().join("b"));
    let file = dir.path().join("video.bin");
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i % 253) as u8 ^ (i >> 11) as u8)
        .collect();
    std::fs::write(&file, &data).unwrap();
    let id = a.ok(&format!("blob add {}", file.display()))["id"]
        .as_str()
        .unwrap()
        .to_string();

    // B does not hold it, fetches it from A (verified as it arrives), then holds it. The
    // fetch asks the peers connected now: wait for the connection (a dial answers once made).
    let addr = a.addr();
    b.ok(&format!("dial {addr}"));
    let missing = b.cmd(&format!("blob status {id}"));
    assert_eq!(missing["ok"], false, "{missing}");
    let fetched = b.ok(&format!("blob fetch {id}"));
    assert_eq!(fetched["size"], 3_000_000);
    let bytes = fetched["fetched_bytes"].as_u64().unwrap();
    assert!((3_000_000..3_100_000).contains(&bytes), "{fetched}");
    let out = dir.path().join("copy.bin");
    b.ok(&format!("blob get {id} {}", out.display()));
    assert!(std::fs::read(&out).unwrap() == data);
    // Held now: fetching again moves nothing; an unknown blob is not found anywhere.
    assert_eq!(b.ok(&format!("blob fetch {id}"))["fetched_bytes"], 0);
    let unknown = b.cmd(&format!("blob fetch {}", "0".repeat(64)));
    assert_eq!(unknown["ok"], false, "{unknown}");
    let error = unknown["error"].as_str().unwrap();
    assert!(error.contains("no connected peer holds blob"), "{error}");
    a.stop();
    b.stop();
}

#[test]
fn a_blob_read_over_http_on_a_peer_that_lacks_it_is_fetched_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = crate::http::http_pair(&dir.path().join("a"), &dir.path().join("b"));
    let (a_http, b_http) = (crate::http::http_addr(&a), crate::http::http_addr(&b));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let data: Vec<u8> = (0..1_500_000u32).map(|i| (i % 241) as u8).collect();
        let (status, _, body) = raw(&a_http, "PUT", "/blobs", &[], &data).await;
        assert_eq!(status, 200);
        let id = json_of(&body)["id"].as_str().unwrap().to_string();
        // B joined A with a ticket: they are connected; B fetches the blob when it is read.
        let (status, _, body) = raw(&b_http, "GET", &format!("/blobs/{id}"), &[], b"").await;
        assert_eq!(status, 200, "{}", json_of(&body));
        assert!(body == data, "other bytes");
        let (status, _, body) = raw(&b_http, "GET", "/blobs", &[], b"").await;
        assert_eq!(status, 200);
        assert_eq!(json_of(&body)["blobs"][0]["id"], json!(id));
        // A blob no peer has: 404, saying so.
        let nobody = "0".repeat(64);
        let (status, _, body) = raw(&b_http, "GET", &format!("/blobs/{nobody}"), &[], b"").await;
        assert_eq!(status, 404, "{}", json_of(&body));
    });
    drop((a, b));
}

/// Waits for B's `blob_arrived` line for `id`.
fn wait_arrival(node: &mut Node, id: &str) -> Json {
    node.next_matching(&format!("blob {id} to arrive"), |l| {
        l["event"] == "blob_arrived" && l["id"] == id
    })
}

#[test]
fn blobs_referenced_by_merged_documents_are_fetched_by_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    let mut a = Node::start(&dir_a, &[]);
    // B fetches only what documents under photos/ reference.
    let mut b = Node::start(
        &dir_b,
        &[
            "--dial",
            &a.addr(),
            "--writer",
            &a.diff_key(),
            "--blob-fetch",
            "photos/",
        ],
    );
    a.ok(&format!("writer add {}", b.diff_key()));
    let add = |a: &mut Node, name: &str, bytes: &[u8]| {
        let file = dir.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        a.ok(&format!("blob add {}", file.display()))["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let draft = add(&mut a, "draft.bin", &[7u8; 50_000]);
    let photo = add(&mut a, "photo.bin", &[9u8; 70_000]);
    a.ok(&format!(r#"put other/x {{"file":{{"$blob":"{draft}"}}}}"#));
    a.ok(&format!(
        r#"put photos/y {{"title":"beach","img":{{"$blob":"{photo}","size":70000,"type":"image/png"}}}}"#
    ));
    // B merges both documents in order; it fetches the photo, and passed over the draft.
    let arrived = wait_arrival(&mut b, &photo);
    assert_eq!(arrived["keys"], json!(["photos/y"]), "{arrived}");
    let out = dir.path().join("copy.png");
    b.ok(&format!("blob get {photo} {}", out.display()));
    assert_eq!(std::fs::read(&out).unwrap(), vec![9u8; 70_000]);
    // The reference's media type comes with it (kept before the arrival is told).
    let photo_on_b = b.ok(&format!("blob status {photo}"));
    assert_eq!(photo_on_b["type"], "image/png", "{photo_on_b}");
    let draft_on_b = b.cmd(&format!("blob status {draft}"));
    assert_eq!(draft_on_b["ok"], false, "{draft_on_b}");
    a.stop();
    b.stop();
}

/// How long a transfer of hundreds of MiB may take in a debug build on a loaded 2-core machine.
const LONG: std::time::Duration = std::time::Duration::from_secs(600);

/// SplitMix64: a small seeded generator, for test data and random choices that replay.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The seed of a test's random choices: `MULTIBEE_TEST_SEED` if set (to replay a failure),
/// else `default`. Printed either way.
fn seed(default: u64) -> u64 {
    let seed = std::env::var("MULTIBEE_TEST_SEED")
        .ok()
        .map(|s| s.parse().expect("MULTIBEE_TEST_SEED is a number"))
        .unwrap_or(default);
    eprintln!("seed {seed} (set MULTIBEE_TEST_SEED to replay)");
    seed
}

/// Writes `size` bytes from a generator seeded with `seed` to `path`; their BLAKE3 hash.
fn write_random_file(path: &std::path::Path, size: u64, seed: u64) -> blake3::Hash {
    use std::io::Write;
    let mut rng = SplitMix64(seed);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hasher = blake3::Hasher::new();
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        for word in chunk[..n].chunks_mut(8) {
            let bytes = rng.next().to_le_bytes();
            word.copy_from_slice(&bytes[..word.len()]);
        }
        hasher.update(&chunk[..n]);
        file.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    file.into_inner().unwrap().sync_all().unwrap();
    hasher.finalize()
}

/// The BLAKE3 hash of the file at `path`, read a MiB at a time.
fn hash_file(path: &std::path::Path) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(std::fs::File::open(path).unwrap())
        .unwrap();
    hasher.finalize()
}

/// Whether two files hold the same bytes (compared a MiB at a time).
fn same_bytes(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::io::Read;
    let (mut a, mut b) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    if a.metadata().unwrap().len() != b.metadata().unwrap().len() {
        return false;
    }
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x).unwrap();
        if n == 0 {
            return true;
        }
        b.read_exact(&mut y[..n]).unwrap();
        if x[..n] != y[..n] {
            return false;
        }
    }
}

/// The most a fetch of `missing` bytes may receive: the bytes and their proofs (about 0.4%),
/// with room for the chunk groups at the edges of what was held.
fn fetch_bound(missing: u64) -> u64 {
    missing + missing / 100 + (64 << 10)
}

/// `blob status ID`'s held bytes on `node` (0 when it holds nothing of the blob).
fn held_bytes(node: &mut Node, id: &str) -> u64 {
    let status = node.cmd(&format!("blob status {id}"));
    match status["ok"].as_bool() {
        Some(true) => status["held_bytes"].as_u64().unwrap(),
        _ => {
            let error = status["error"].as_str().unwrap();
            assert!(error.contains("not found"), "{status}");
            0
        }
    }
}

#[test]
fn a_download_in_progress_is_listed_with_the_bytes_held_of_its_size() {
    const SIZE: u64 = 24 << 20;
    const HELD: u64 = 8 << 20;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    let hash = write_random_file(&file, SIZE, 24);
    let id = hash.to_hex().to_string();
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    // B starts with the first 8 MiB of the blob, verified, as an interrupted download leaves
    // it (exported with their proofs from a copy of the blob in another store).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let source = Blobs::open(dir.path().join("source")).unwrap();
        let blob = source.add_file(&file).await.unwrap();
        let prefix = std::slice::from_ref(&(0..HELD));
        let encoded = source.export_ranges(blob, prefix).await.unwrap();
        let b = Blobs::open(dir_b.join("blobs")).unwrap();
        b.import_ranges(blob, SIZE, prefix, &encoded).await.unwrap();
    });
    let mut a = Node::start(&dir_a, &[]);
    assert_eq!(
        a.ok(&format!("blob add {}", file.display()))["id"],
        json!(id)
    );
    let mut b = Node::start(&dir_b, &["--http", "127.0.0.1:0"]);
    b.ok(&format!("dial {}", a.addr()));
    let partial = b.ok(&format!("blob status {id}"));
    assert_eq!(
        (&partial["complete"], &partial["held_bytes"]),
        (&json!(false), &json!(HELD)),
        "{partial}"
    );
    // Held in part, but nothing is being fetched.
    assert_eq!(b.ok("blob status")["downloads"], json!([]));

    // A stops answering (SIGSTOP): a download B starts now cannot advance until A continues.
    // A read over HTTP starts one (a read on demand) and waits for it.
    a.signal("STOP");
    let b_http = crate::http::http_addr(&b);
    let reader = {
        let (addr, path) = (b_http.clone(), format!("/blobs/{id}"));
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(raw(&addr, "GET", &path, &[], b""))
        })
    };
    // Listed once the read has started it (nothing says when: ask until it shows).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let listed = loop {
        let downloads = b.ok("blob status")["downloads"].clone();
        if downloads != json!([]) {
            break downloads;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the read on demand never showed as a download"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let want = json!([{"id": id, "size": SIZE, "held_bytes": HELD, "peers": [a.peer_id()]}]);
    assert_eq!(listed, want);
    let (status, _, body) = runtime.block_on(raw(&b_http, "GET", "/blobs/_downloads", &[], b""));
    assert_eq!(status, 200);
    assert_eq!(json_of(&body), json!({"downloads": want}));

    // A continues: the read gets the whole blob, and the download has left the list.
    a.signal("CONT");
    let (status, _, body) = reader.join().unwrap();
    assert_eq!(status, 200, "{}", json_of(&body));
    assert_eq!(blake3::hash(&body), hash, "other bytes");
    assert_eq!(b.ok("blob status")["downloads"], json!([]));
    // A download that fails (no peer holds the blob) leaves it too.
    let nobody = format!("/blobs/{}", "0".repeat(64));
    let (status, _, _) = runtime.block_on(raw(&b_http, "GET", &nobody, &[], b""));
    assert_eq!(status, 404);
    assert_eq!(b.ok("blob status")["downloads"], json!([]));
    a.stop();
    // With --http, B keeps running when its stdin closes: `quit` stops it.
    b.send("quit").unwrap();
    b.wait_exit("quit");
}

#[test]
fn a_256_mib_blob_added_on_a_reaches_c_through_b_byte_identical() {
    const SIZE: u64 = 256 << 20;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("input.bin");
    let started = std::time::Instant::now();
    let hash = write_random_file(&file, SIZE, 256);
    let id = hash.to_hex().to_string();
    let mut a = Node::start(&dir.path().join("a"), &[]);
    let added = a.ok_within(&format!("blob add {}", file.display()), LONG);
    assert_eq!((&added["id"], &added["size"]), (&json!(id), &json!(SIZE)));
    let after_add = started.elapsed();

    // B, connected to A, fetches it.
    let mut b = Node::start(&dir.path().join("b"), &[]);
    b.ok(&format!("dial {}", a.addr()));
    let fetched = b.ok_within(&format!("blob fetch {id}"), LONG);
    assert_eq!(fetched["size"], SIZE);
    let bytes = fetched["fetched_bytes"].as_u64().unwrap();
    assert!((SIZE..=fetch_bound(SIZE)).contains(&bytes), "{fetched}");
    let after_b = started.elapsed();

    // C, connected only to B, fetches it from B.
    let mut c = Node::start(&dir.path().join("c"), &[]);
    c.ok(&format!("dial {}", b.addr()));
    // The fetch asks the peers connected when it starts: B alone. (C may meet A later, through
    // the DHT; the progress lines say where every range came from.)
    assert_eq!(c.ok("status")["peers"], json!([b.peer_id()]));
    c.send(&format!("blob fetch {id}")).unwrap();
    let from = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let fetched = c.next_matching_within("the answer to blob fetch", LONG, |l| {
        if l["event"] == "blob_progress" {
            from.borrow_mut()
                .insert(l["peer_id"].as_str().unwrap().to_string());
        }
        l.get("ok").is_some()
    });
    assert_eq!(fetched["ok"], true, "{fetched}");
    let bytes = fetched["fetched_bytes"].as_u64().unwrap();
    assert!((SIZE..=fetch_bound(SIZE)).contains(&bytes), "{fetched}");
    let after_c = started.elapsed();
    assert_eq!(
        from.into_inner(),
        [b.peer_id()].into(),
        "C's ranges came from B"
    );

    let out = dir.path().join("output.bin");
    let got = c.ok_within(&format!("blob get {id} {}", out.display()), LONG);
    assert_eq!(got["size"], SIZE);
    assert_eq!(hash_file(&out), hash, "C's copy hashes to another id");
    assert!(same_bytes(&file, &out), "C's copy differs from the input");
    eprintln!(
        "256 MiB: generated and added on A in {after_add:?}, A -> B in {:?}, B -> C in {:?}, \
         written out and compared in {:?}",
        after_b - after_add,
        after_c - after_b,
        started.elapsed() - after_c
    );
    c.stop();
    b.stop();
    a.stop();
}

/// A receiver SIGKILLed during a download keeps every range it reported verified (the groups
/// its store recorded but had not synced are verified again when it restarts, see
/// `crates/blobs/src/pending.rs`): each restart resumes from at least what the last progress
/// line said, and the download fetches nothing twice.
#[test]
fn a_receiver_killed_at_random_points_resumes_without_fetching_again_what_verified() {
    const SIZE: u64 = 128 << 20;
    /// Kills no closer to the end than this: a progress line comes before the fetch ends.
    const MARGIN: u64 = 8 << 20;
    const KILLS: usize = 4;
    let mut rng = SplitMix64(seed(0x5eed_b10b));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("input.bin");
    let hash = write_random_file(&file, SIZE, rng.next());
    let id = hash.to_hex().to_string();
    let mut a = Node::start(&dir.path().join("a"), &[]);
    assert_eq!(
        a.ok(&format!("blob add {}", file.display()))["id"],
        json!(id)
    );
    let dir_b = dir.path().join("b");

    // Each round: B (re)starts on its folder, resumes the fetch, and is SIGKILLed once its
    // progress shows a random point between what it held and the end. `fetched` counts what
    // the killed rounds verified and stored at least (from what B held at the start to what
    // its last progress line said).
    let (mut reported, mut fetched) = (0, 0);
    let mut kills = Vec::new();
    for round in 0..KILLS {
        let mut b = Node::start(&dir_b, &[]);
        b.ok(&format!("dial {}", a.addr()));
        let held = held_bytes(&mut b, &id);
        // Nothing reported verified is lost.
        assert!(
            held >= reported,
            "round {round}: held {held}, but {reported} were reported before the kill"
        );
        if held + MARGIN >= SIZE {
            b.kill();
            break;
        }
        // Spread over the rounds left: each kills somewhere in its share of what remains.
        let share = (SIZE - MARGIN - held) / (KILLS - round) as u64;
        let point = held + 1 + rng.below(share.max(1));
        b.send(&format!("blob fetch {id}")).unwrap();
        let line = b.next_matching_within(&format!("B to hold {point} bytes"), LONG, |l| {
            l.get("ok").is_some()
                || (l["event"] == "blob_progress"
                    && l["id"] == id.as_str()
                    && l["held_bytes"].as_u64().is_some_and(|h| h >= point))
        });
        assert_eq!(
            line["event"], "blob_progress",
            "the fetch ended first: {line}"
        );
        assert_eq!(line["peer_id"], json!(a.peer_id()));
        reported = line["held_bytes"].as_u64().unwrap();
        fetched += reported - held;
        b.kill();
        kills.push((point, reported, held));
    }
    eprintln!("killed at (point, held reported, held at the start of the round): {kills:?}");
    assert!(kills.len() >= 3, "too few kills: {kills:?}");

    // The last round completes, fetching only what is missing.
    let mut b = Node::start(&dir_b, &[]);
    b.ok(&format!("dial {}", a.addr()));
    let held = held_bytes(&mut b, &id);
    assert!(
        held >= reported,
        "held {held}, but {reported} were reported"
    );
    let answer = b.ok_within(&format!("blob fetch {id}"), LONG);
    let last = answer["fetched_bytes"].as_u64().unwrap();
    let missing = SIZE - held;
    assert!(
        (missing..=fetch_bound(missing)).contains(&last),
        "{missing} bytes missing: {answer}"
    );
    let total = fetched + last;
    eprintln!("{total} bytes fetched in all for {SIZE}");
    assert!(
        total <= fetch_bound(SIZE),
        "{total} bytes fetched for {SIZE}"
    );
    let out = dir.path().join("output.bin");
    b.ok_within(&format!("blob get {id} {}", out.display()), LONG);
    assert_eq!(hash_file(&out), hash);
    assert!(same_bytes(&file, &out), "B's copy differs from the input");
    b.stop();
    a.stop();
}
