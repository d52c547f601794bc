//! The HTTP API (`multibee::http`): requests to the router in-process, on a store in a
//! temporary folder, and one to a server bound on a loopback port.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use multibee::MultiBee;
use multibee::http::{HttpApi, MAX_LIMIT, router, serve_http};
use serde_json::{Value as Json, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

use crate::common::within;
use crate::node::Node;

struct Api {
    _dir: TempDir,
    mb: MultiBee,
    router: axum::Router,
}

impl Api {
    async fn new() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let mb = MultiBee::open(dir.path()).await.unwrap();
        let router = router(HttpApi::new(mb.clone()).body_limit(64 * 1024));
        Api {
            _dir: dir,
            mb,
            router,
        }
    }

    /// Sends a request; the status and the JSON answer.
    async fn call(&self, method: Method, uri: &str, body: impl Into<Body>) -> (StatusCode, Json) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(body.into())
            .unwrap();
        let response = within(self.router.clone().oneshot(request)).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .unwrap();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{uri}: not JSON ({e}): {bytes:?}"));
        (status, json)
    }

    async fn get(&self, uri: &str) -> (StatusCode, Json) {
        self.call(Method::GET, uri, Body::empty()).await
    }

    async fn ok(&self, method: Method, uri: &str, body: &str) -> Json {
        let (status, json) = self.call(method, uri, body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {json}");
        json
    }
}

/// A document answer without its revision (checked to be there), to compare the rest.
pub fn without_rev(mut doc: Json) -> Json {
    let rev = doc.as_object_mut().and_then(|o| o.remove("rev"));
    assert!(rev.as_ref().is_some_and(Json::is_string), "no rev in {doc}");
    doc
}

fn error_kind(answer: &(StatusCode, Json)) -> (StatusCode, &str) {
    assert!(answer.1["reason"].is_string(), "{}", answer.1);
    (answer.0, answer.1["error"].as_str().unwrap())
}

#[tokio::test]
async fn documents_put_patch_get_delete_and_null_versus_absent() {
    let api = Api::new().await;
    let (status, info) = api.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["diff_key"], json!(api.mb.diff_key().to_string()));
    assert_eq!(info["version"], json!(api.mb.version().unwrap()));
    assert_eq!(
        info["state_hash"],
        json!(hex::encode(api.mb.state_hash().unwrap()))
    );
    assert_eq!(info["peer_id"], Json::Null);

    api.ok(Method::PUT, "/docs/a", r#"{"x":1,"y":{"z":2}}"#)
        .await;
    api.ok(Method::PATCH, "/docs/a", r#"{"y":{"z":null,"w":3}}"#)
        .await;
    let (status, doc) = api.get("/docs/a").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        without_rev(doc),
        json!({"key": "a", "doc": {"x": 1, "y": {"w": 3}}})
    );

    // A key with a slash, spaces and non-ASCII, percent-encoded.
    let key = "dir/sub dir/é?#";
    let path = "/docs/dir/sub%20dir/%C3%A9%3F%23";
    api.ok(Method::PUT, path, "[1,2]").await;
    assert_eq!(api.mb.get(key).unwrap(), Some(json!([1, 2]).into()));
    assert_eq!(
        without_rev(api.get(path).await.1),
        json!({"key": key, "doc": [1, 2]})
    );

    // A stored null is not an absent document.
    api.ok(Method::PUT, "/docs/n", "null").await;
    let (status, doc) = api.get("/docs/n").await;
    assert_eq!(
        (status, without_rev(doc)),
        (StatusCode::OK, json!({"key": "n", "doc": null}))
    );
    let absent = api.get("/docs/missing").await;
    assert_eq!(error_kind(&absent), (StatusCode::NOT_FOUND, "not_found"));

    api.ok(Method::DELETE, "/docs/a", "").await;
    assert_eq!(api.get("/docs/a").await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.mb.get("a").unwrap(), None);

    let info = api.get("/").await.1;
    assert_eq!(info["version"], json!(api.mb.version().unwrap()));
}

#[tokio::test]
async fn bad_input_answers_an_error_and_writes_nothing() {
    let api = Api::new().await;
    let version = api.mb.version().unwrap();
    let huge = format!("\"{}\"", "x".repeat(100 * 1024));
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let cases: Vec<(Method, &str, String, StatusCode, &str)> = vec![
        (
            Method::PUT,
            "/docs/k",
            "{\"a\":".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::PUT,
            "/docs/k",
            "".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::PATCH,
            "/docs/k",
            "nope".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::PUT,
            "/docs/k",
            deep,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        // %FF decodes to bytes that are not UTF-8.
        (
            Method::PUT,
            "/docs/%FF",
            "1".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/docs/%FF%FE",
            "".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::PUT,
            "/docs/k",
            huge.clone(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            Method::POST,
            "/docs/_bulk",
            huge,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            Method::GET,
            "/docs?limit=0",
            "".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/docs?limit=abc",
            "".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/docs?limit=1001",
            "".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/docs?limit=-1",
            "".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/docs?reverse=maybe",
            "".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/docs?colour=red",
            "".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/_changes?feed=continuously",
            "".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/_changes?since=x",
            "".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/_changes?limit=100000",
            "".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/_changes?feed=longpoll&timeout=99999999",
            "".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/nowhere",
            "".into(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::POST,
            "/docs/k",
            "1".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (method, uri, body, status, kind) in cases {
        let answer = api.call(method.clone(), uri, body).await;
        assert_eq!(
            error_kind(&answer),
            (status, kind),
            "{method} {uri}: {}",
            answer.1
        );
    }
    assert_eq!(api.mb.version().unwrap(), version, "nothing was written");
    assert_eq!(api.mb.get("k").unwrap(), None);
}

#[tokio::test]
async fn range_pages_in_order_with_a_prefix_both_ways() {
    let api = Api::new().await;
    let ops: Vec<Json> = (0..25)
        .map(|i| json!({"put": format!("p/{i:02}"), "doc": i}))
        .chain([json!({"put": "o", "doc": 0}), json!({"put": "q", "doc": 0})])
        .collect();
    api.ok(
        Method::POST,
        "/docs/_bulk",
        &json!({ "ops": ops }).to_string(),
    )
    .await;

    for reverse in [false, true] {
        let mut keys = Vec::new();
        let mut start: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut uri = format!("/docs?prefix=p%2F&limit=10&reverse={reverse}");
            if let Some(s) = &start {
                uri += &format!("&start={}", s.replace('/', "%2F"));
            }
            let page = api.ok(Method::GET, &uri, "").await;
            pages += 1;
            for d in page["docs"].as_array().unwrap() {
                let key = d["key"].as_str().unwrap().to_string();
                assert_eq!(d["doc"], json!(key[2..].parse::<u32>().unwrap()));
                keys.push(key);
            }
            match &page["next"] {
                Json::Null => break,
                next => start = Some(next.as_str().unwrap().to_string()),
            }
        }
        let mut expected: Vec<String> = (0..25).map(|i| format!("p/{i:02}")).collect();
        if reverse {
            expected.reverse();
        }
        assert_eq!(keys, expected, "reverse {reverse}");
        assert_eq!(pages, 3);
    }

    // No parameters: every key, at most the default limit; the largest limit is accepted.
    let all = api.ok(Method::GET, "/docs", "").await;
    assert_eq!(all["docs"].as_array().unwrap().len(), 27);
    assert_eq!(all["docs"][0]["key"], json!("o"));
    assert_eq!(all["next"], Json::Null);
    let max = api
        .ok(Method::GET, &format!("/docs?limit={MAX_LIMIT}"), "")
        .await;
    assert_eq!(max["docs"].as_array().unwrap().len(), 27);
    // A start past the prefix, or before it in reverse: nothing.
    let none = api.ok(Method::GET, "/docs?prefix=p%2F&start=q", "").await;
    assert_eq!(none["docs"], json!([]));
    let none = api
        .ok(Method::GET, "/docs?prefix=p%2F&start=o&reverse=true", "")
        .await;
    assert_eq!(none["docs"], json!([]));
}

#[tokio::test]
async fn bulk_is_one_atomic_batch() {
    let api = Api::new().await;
    api.ok(Method::PUT, "/docs/old", r#"{"a":1}"#).await;
    let before = api.mb.version().unwrap();

    let bad_bodies = [
        json!({"ops": [{"put": "x", "doc": 1}, {"put": "y"}]}),
        json!({"ops": [{"put": "x", "doc": 1}, {"delete": 3}]}),
        json!({"ops": [{"put": "x", "doc": 1}, {"put": "y", "delete": "y"}]}),
        json!({"ops": [{"put": "x", "doc": 1}, {"frob": "y"}]}),
        json!({"ops": [{"put": "x", "doc": 1}, {"put": "y", "doc": 1, "extra": 2}]}),
        json!({"ops": [{"put": "x", "doc": 1}, "put"]}),
        json!({"ops": []}),
        json!({"ops": {}}),
        json!([]),
    ];
    for body in bad_bodies {
        let answer = api
            .call(Method::POST, "/docs/_bulk", body.to_string())
            .await;
        assert_eq!(
            error_kind(&answer),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{body}"
        );
    }
    assert_eq!(api.mb.version().unwrap(), before);
    assert_eq!(api.mb.get("x").unwrap(), None);

    let body = json!({"ops": [
        {"put": "x", "doc": {"n": 1}},
        {"patch": "old", "doc": {"b": 2}},
        {"delete": "gone"},
        {"put": "y z/w", "doc": null},
    ]});
    let answer = api.ok(Method::POST, "/docs/_bulk", &body.to_string()).await;
    assert_eq!(answer["ops"], json!(4));
    assert_eq!(api.mb.get("x").unwrap(), Some(json!({"n": 1}).into()));
    assert_eq!(
        api.mb.get("old").unwrap(),
        Some(json!({"a": 1, "b": 2}).into())
    );
    assert_eq!(api.mb.get("y z/w").unwrap(), Some(Json::Null.into()));
    // One batch: the changes feed holds them under versions after `before`.
    let changes = api
        .ok(Method::GET, &format!("/_changes?since={before}"), "")
        .await;
    let keys: Vec<&str> = changes["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["old", "x", "y z/w"], "{changes}");
    assert_eq!(changes["last_seq"], json!(api.mb.version().unwrap()));
}

#[tokio::test]
async fn changes_page_filter_include_docs_and_longpoll() {
    let api = Api::new().await;
    api.ok(Method::PUT, "/docs/a", "1").await;
    api.ok(Method::PUT, "/docs/b/1", "2").await;
    api.ok(Method::DELETE, "/docs/a", "").await;

    let all = api.ok(Method::GET, "/_changes?include_docs=true", "").await;
    let results = all["results"].as_array().unwrap();
    let rows: Vec<(&str, bool, &Json)> = results
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap(),
                r["deleted"].as_bool().unwrap(),
                &r["doc"],
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("a", false, &json!(1)),
            ("b/1", false, &json!(2)),
            ("a", true, &Json::Null)
        ]
    );
    let last = all["last_seq"].as_u64().unwrap();
    assert_eq!(last, api.mb.version().unwrap());
    assert_eq!(results[2]["seq"].as_u64(), Some(last));
    assert!(
        results
            .windows(2)
            .all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64())
    );

    // Without include_docs: no doc. Paging with since (exclusive) and limit.
    let first = api.ok(Method::GET, "/_changes?limit=1", "").await;
    assert_eq!(first["results"].as_array().unwrap().len(), 1);
    assert!(first["results"][0].get("doc").is_none());
    let rest = api
        .ok(
            Method::GET,
            &format!("/_changes?since={}", first["last_seq"]),
            "",
        )
        .await;
    assert_eq!(rest["results"].as_array().unwrap().len(), 2);
    assert_eq!(rest["last_seq"], json!(last));
    let prefixed = api.ok(Method::GET, "/_changes?prefix=b%2F", "").await;
    assert_eq!(prefixed["results"].as_array().unwrap().len(), 1);
    assert_eq!(prefixed["results"][0]["key"], json!("b/1"));

    // Nothing new: normal answers at once, longpoll with a short timeout answers empty.
    let now = api
        .ok(Method::GET, &format!("/_changes?since={last}"), "")
        .await;
    assert_eq!(now, json!({"results": [], "last_seq": last}));
    let waited = api
        .ok(
            Method::GET,
            &format!("/_changes?since={last}&feed=longpoll&timeout=50"),
            "",
        )
        .await;
    assert_eq!(waited, json!({"results": [], "last_seq": last}));

    // A longpoll waiting when the write comes answers it.
    let router = api.router.clone();
    let uri = format!("/_changes?since={last}&feed=longpoll&timeout=60000&include_docs=true");
    let poll = tokio::spawn(async move {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        let response = router.oneshot(request).await.unwrap();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice::<Json>(&bytes).unwrap()
    });
    // Whether the poll started waiting before this write or not, it answers the write.
    api.ok(Method::PUT, "/docs/c", r#"{"late":true}"#).await;
    let answer = within(poll).await.unwrap();
    assert_eq!(answer["results"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(answer["results"][0]["key"], json!("c"));
    assert_eq!(answer["results"][0]["doc"], json!({"late": true}));
    assert!(answer["last_seq"].as_u64().unwrap() > last);
}

/// Long polls `_changes` on `addr` from the start until an answer holds a change of `key`;
/// that answer's `last_seq`.
async fn longpoll_until(addr: &str, key: &str) -> u64 {
    let mut since = 0;
    loop {
        let path = format!("/_changes?since={since}&feed=longpoll&timeout=60000");
        let (status, changes) = http_request(addr, "GET", &path, "").await;
        assert_eq!(status, 200, "{changes}");
        since = changes["last_seq"].as_u64().unwrap();
        let results = changes["results"].as_array().unwrap();
        if results.iter().any(|r| r["key"] == key) {
            return since;
        }
    }
}

/// Sends one HTTP/1.1 JSON request on a fresh connection; the status and the body.
pub async fn http_request(addr: &str, method: &str, path: &str, body: &str) -> (u16, Json) {
    let json = ["Content-Type: application/json".to_string()];
    crate::common::http_with_headers(addr, method, path, &json, body).await
}

#[tokio::test]
async fn a_bound_server_answers_and_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let mb = MultiBee::open(dir.path()).await.unwrap();
    let (server, addr) = crate::common::serve_on_loopback(HttpApi::new(mb.clone())).await;
    let (status, _) = http_request(&addr, "PUT", "/docs/a%20b", r#"{"v":1}"#).await;
    assert_eq!(status, 200);
    let (status, doc) = http_request(&addr, "GET", "/docs/a%20b", "").await;
    assert_eq!(
        (status, without_rev(doc)),
        (200, json!({"key": "a b", "doc": {"v": 1}}))
    );
    let (status, err) = http_request(&addr, "PUT", "/docs/a", "{").await;
    assert_eq!((status, err["error"].as_str()), (400, Some("bad_request")));
    within(server.shutdown()).await;
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
    mb.close().await;
}

/// The address (`host:port`) of a node's HTTP API, from its ready line.
pub fn http_addr(node: &Node) -> String {
    let url = node.ready["http"]
        .as_str()
        .expect("an http address")
        .to_string();
    url.strip_prefix("http://").unwrap().to_string()
}

/// Node A serving HTTP, and node B that joined it with a ticket and serves HTTP too, both
/// with stdin closed.
pub fn http_pair(dir_a: &std::path::Path, dir_b: &std::path::Path) -> (Node, Node) {
    let mut a = Node::start(dir_a, &["--http", "127.0.0.1:0"]);
    let ticket = a.ok("invite")["ticket"].as_str().unwrap().to_string();
    a.close_stdin();
    let mut b = Node::start(dir_b, &["--join", &ticket, "--http", "127.0.0.1:0"]);
    b.close_stdin();
    (a, b)
}

#[test]
fn two_nodes_with_http_replicate_and_outlive_their_stdin() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = http_pair(dir_a.path(), dir_b.path());
    let (http_a, http_b) = (http_addr(&a), http_addr(&b));
    rt.block_on(async {
        let (status, info) = http_request(&http_a, "GET", "/", "").await;
        assert_eq!(status, 200);
        assert_eq!(info["diff_key"], a.ready["diff_key"]);
        let (status, _) = http_request(&http_a, "PUT", "/docs/from%20a", r#"{"n":1}"#).await;
        assert_eq!(status, 200);
        // Long polls on B until the write arrives (each answers at once if it already has).
        longpoll_until(&http_b, "from a").await;
        let (status, doc) = http_request(&http_b, "GET", "/docs/from%20a", "").await;
        assert_eq!(
            (status, without_rev(doc)),
            (200, json!({"key": "from a", "doc": {"n": 1}}))
        );
        for addr in [&http_a, &http_b] {
            let (status, _) = http_request(addr, "POST", "/_shutdown", "").await;
            assert_eq!(status, 200);
        }
    });
    a.wait_exit("POST /_shutdown");
    b.wait_exit("POST /_shutdown");
}

/// A streamed body read a line or an event at a time.
struct Stream {
    chunks: futures::stream::BoxStream<'static, Vec<u8>>,
    buf: Vec<u8>,
}

impl Stream {
    /// The body of an in-process response.
    fn of(response: axum::response::Response) -> Stream {
        use futures::StreamExt;
        let chunks = response
            .into_body()
            .into_data_stream()
            .map(|chunk| chunk.unwrap().to_vec())
            .fuse()
            .boxed();
        Stream {
            chunks,
            buf: Vec::new(),
        }
    }

    /// The rest of a TCP connection (after the response head).
    fn of_tcp(stream: tokio::net::TcpStream, head_rest: Vec<u8>) -> Stream {
        use futures::StreamExt;
        let chunks = futures::stream::unfold(stream, |mut stream| async move {
            let mut chunk = vec![0; 64 * 1024];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => None,
                Ok(n) => {
                    chunk.truncate(n);
                    Some((chunk, stream))
                }
            }
        });
        Stream {
            chunks: futures::stream::iter([head_rest])
                .chain(chunks)
                .fuse()
                .boxed(),
            buf: Vec::new(),
        }
    }

    /// The text up to the next `end` (excluded); `None` at the end of the body.
    async fn until(&mut self, end: &[u8]) -> Option<String> {
        use futures::StreamExt;
        loop {
            if let Some(at) = self.buf.windows(end.len()).position(|w| w == end) {
                let item: Vec<u8> = self.buf.drain(..at + end.len()).take(at).collect();
                return Some(String::from_utf8(item).unwrap());
            }
            let chunk = within(self.chunks.next()).await?;
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// The next line (empty for a heartbeat).
    async fn line(&mut self) -> Option<String> {
        self.until(b"\n").await
    }

    /// The next JSON line, skipping heartbeats.
    async fn json(&mut self) -> Option<Json> {
        loop {
            let line = self.line().await?;
            if !line.is_empty() {
                return Some(serde_json::from_str(&line).unwrap());
            }
        }
    }

    /// The next Server-Sent Event: its id (if any) and data; heartbeats (comments) are
    /// `(None, ":")`.
    async fn event(&mut self) -> Option<(Option<u64>, String)> {
        let event = self.until(b"\n\n").await?;
        let (mut id, mut data) = (None, String::new());
        for line in event.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.parse().unwrap());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            } else if line.starts_with(':') {
                data.push(':');
            } else {
                panic!("unexpected event line {line:?}");
            }
        }
        Some((id, data))
    }

    /// The next event that is a result: its id and JSON, skipping heartbeats.
    async fn result(&mut self) -> Option<(Option<u64>, Json)> {
        loop {
            let (id, data) = self.event().await?;
            if data != ":" {
                return Some((id, serde_json::from_str(&data).unwrap()));
            }
        }
    }
}

impl Api {
    /// Starts a streamed request; the response (its status checked) as a [`Stream`].
    async fn stream(&self, uri: &str, headers: &[(&str, &str)]) -> Stream {
        let mut request = Request::get(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Body::empty()).unwrap();
        let response = within(self.router.clone().oneshot(request)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        Stream::of(response)
    }

    async fn put(&self, key: &str, doc: &str) -> u64 {
        let answer = self.ok(Method::PUT, &format!("/docs/{key}"), doc).await;
        answer["version"].as_u64().unwrap()
    }
}

#[tokio::test]
async fn continuous_catches_up_then_follows_live_changes_with_docs_and_prefix() {
    let api = Api::new().await;
    let v1 = api.put("b%2F1", r#"{"n":1}"#).await;
    api.put("a", "0").await;
    api.ok(Method::DELETE, "/docs/b%2F1", "").await;
    let v3 = api.mb.version().unwrap();

    let mut all = api
        .stream("/_changes?feed=continuous&include_docs=true", &[])
        .await;
    let mut only_b = api
        .stream("/_changes?feed=continuous&prefix=b%2F&since=0", &[])
        .await;
    let first = all.json().await.unwrap();
    assert_eq!(
        first,
        json!({"seq": v1, "key": "b/1", "deleted": false, "doc": {"n": 1}})
    );
    assert_eq!(all.json().await.unwrap()["key"], "a");
    let deleted = all.json().await.unwrap();
    assert_eq!(
        deleted,
        json!({"seq": v3, "key": "b/1", "deleted": true, "doc": null})
    );
    assert_eq!(
        only_b.json().await.unwrap(),
        json!({"seq": v1, "key": "b/1", "deleted": false})
    );
    assert_eq!(only_b.json().await.unwrap()["seq"], json!(v3));

    // Live: a change made after the catch-up, and one the prefix leaves out.
    api.put("c", "[1]").await;
    let v5 = api.put("b%2F2", r#""x""#).await;
    assert_eq!(all.json().await.unwrap()["key"], "c");
    assert_eq!(
        all.json().await.unwrap(),
        json!({"seq": v5, "key": "b/2", "deleted": false, "doc": "x"})
    );
    assert_eq!(
        only_b.json().await.unwrap(),
        json!({"seq": v5, "key": "b/2", "deleted": false})
    );
}

#[tokio::test]
async fn eventsource_sends_ids_and_resumes_from_last_event_id() {
    let api = Api::new().await;
    let v1 = api.put("a", r#"{"x":1}"#).await;
    let v2 = api.put("b", "2").await;

    let mut events = api
        .stream("/_changes?feed=eventsource&include_docs=true", &[])
        .await;
    let (id, row) = events.result().await.unwrap();
    assert_eq!(id, Some(v1));
    assert_eq!(
        row,
        json!({"seq": v1, "key": "a", "deleted": false, "doc": {"x": 1}})
    );
    assert_eq!(events.result().await.unwrap().0, Some(v2));
    let v3 = api.put("c", "3").await;
    let (id, row) = events.result().await.unwrap();
    assert_eq!((id, &row["key"]), (Some(v3), &json!("c")));

    // A reconnect with the id of the first event gets what followed it, and live ones.
    let v1_id = v1.to_string();
    let mut resumed = api
        .stream(
            "/_changes?feed=eventsource",
            &[("last-event-id", v1_id.as_str())],
        )
        .await;
    assert_eq!(resumed.result().await.unwrap().0, Some(v2));
    assert_eq!(resumed.result().await.unwrap().0, Some(v3));
    let v4 = api.put("d", "4").await;
    assert_eq!(
        resumed.result().await.unwrap(),
        (Some(v4), json!({"seq": v4, "key": "d", "deleted": false}))
    );
    // `since` wins over the header.
    let mut since = api
        .stream(
            &format!("/_changes?feed=eventsource&since={v3}"),
            &[("last-event-id", v1_id.as_str())],
        )
        .await;
    assert_eq!(since.result().await.unwrap().0, Some(v4));
}

#[tokio::test]
async fn idle_streams_send_heartbeats() {
    let api = Api::new().await;
    let now = api.put("a", "1").await;
    let mut lines = api
        .stream(
            &format!("/_changes?feed=continuous&since={now}&heartbeat=100"),
            &[],
        )
        .await;
    assert_eq!(lines.line().await.unwrap(), "");
    assert_eq!(lines.line().await.unwrap(), "");
    let mut events = api
        .stream(
            &format!("/_changes?feed=eventsource&since={now}&heartbeat=100"),
            &[],
        )
        .await;
    assert_eq!(events.event().await.unwrap(), (None, ":".to_string()));
    // A change still comes between heartbeats.
    let v2 = api.put("b", "2").await;
    assert_eq!(lines.json().await.unwrap()["seq"], json!(v2));
    assert_eq!(events.result().await.unwrap().0, Some(v2));
}

#[tokio::test]
async fn limit_and_timeout_end_a_stream() {
    let api = Api::new().await;
    let v1 = api.put("a", "1").await;
    let v2 = api.put("b", "2").await;
    api.put("c", "3").await;
    let mut lines = api.stream("/_changes?feed=continuous&limit=2", &[]).await;
    assert_eq!(lines.json().await.unwrap()["seq"], json!(v1));
    assert_eq!(lines.json().await.unwrap()["seq"], json!(v2));
    assert_eq!(lines.json().await.unwrap(), json!({"last_seq": v2}));
    assert_eq!(lines.line().await, None);

    // A live stream that waits for its limit.
    let now = api.mb.version().unwrap();
    let mut events = api
        .stream(
            &format!("/_changes?feed=eventsource&since={now}&limit=1"),
            &[],
        )
        .await;
    let v4 = api.put("d", "4").await;
    assert_eq!(events.result().await.unwrap().0, Some(v4));
    assert_eq!(events.event().await, None);

    // No result for `timeout` ms ends it too; last_seq is past what the prefix skipped.
    let mut idle = api
        .stream(
            &format!("/_changes?feed=continuous&since={now}&prefix=zz&timeout=100&heartbeat=100"),
            &[],
        )
        .await;
    assert_eq!(idle.json().await.unwrap(), json!({"last_seq": v4}));
    assert_eq!(idle.line().await, None);
}

#[tokio::test]
async fn bad_changes_parameters_answer_bad_request() {
    let api = Api::new().await;
    for uri in [
        "/_changes?feed=continuous&heartbeat=99",
        "/_changes?feed=eventsource&heartbeat=300001",
        "/_changes?feed=sometimes",
        "/_changes?feed=continuous&limit=0",
        "/_changes?feed=continuous&timeout=120001",
        "/_changes?feed=continuous&since=-1",
        "/_changes?feed=continuous&bogus=1",
    ] {
        let answer = api.get(uri).await;
        assert_eq!(
            error_kind(&answer),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{uri}"
        );
    }
    let request = Request::get("/_changes?feed=eventsource")
        .header("last-event-id", "yesterday")
        .body(Body::empty())
        .unwrap();
    let response = within(api.router.clone().oneshot(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn last_seq_is_past_the_changes_a_prefix_skipped() {
    let api = Api::new().await;
    let va = api.put("a1", "1").await;
    api.put("z1", "1").await;
    let vb = api.put("a2", "2").await;
    let vz = api.put("z2", "2").await;

    // Everything scanned: last_seq is the version, not the seq of the last result.
    let page = api.ok(Method::GET, "/_changes?prefix=a", "").await;
    assert_eq!(page["results"].as_array().unwrap().len(), 2);
    assert_eq!(page["last_seq"], json!(vz));
    // A page cut by the limit ends at its last result.
    let page = api.ok(Method::GET, "/_changes?prefix=a&limit=1", "").await;
    assert_eq!(page["results"][0]["seq"], json!(va));
    assert_eq!(page["last_seq"], json!(va));
    let page = api
        .ok(Method::GET, &format!("/_changes?prefix=a&since={va}"), "")
        .await;
    assert_eq!(page["results"][0]["seq"], json!(vb));
    assert_eq!(page["last_seq"], json!(vz));
    // Nothing for the prefix: an empty page that still moves on.
    let page = api
        .ok(Method::GET, &format!("/_changes?prefix=a&since={vb}"), "")
        .await;
    assert_eq!(page, json!({"results": [], "last_seq": vz}));
    // A long poll that times out has scanned up to the version too.
    let vz3 = api.put("z3", "3").await;
    let page = api
        .ok(
            Method::GET,
            &format!("/_changes?prefix=a&since={vz}&feed=longpoll&timeout=50"),
            "",
        )
        .await;
    assert_eq!(page, json!({"results": [], "last_seq": vz3}));
}

#[tokio::test]
async fn a_client_that_reads_nothing_is_cut_off_with_bounded_buffering() {
    use multibee::{BatchOp, Value};
    let dir = tempfile::tempdir().unwrap();
    let mb = MultiBee::open(dir.path()).await.unwrap();
    let api = HttpApi::new(mb.clone()).too_slow_after(std::time::Duration::from_secs(2));
    let cut_offs = api.too_slow_cut_offs();
    let server = serve_http("127.0.0.1:0".parse().unwrap(), api)
        .await
        .unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut client = within(socket.connect(server.local_addr())).await.unwrap();
    // HTTP/1.0: the body is not chunked, it ends when the connection does.
    let request = "GET /_changes?feed=continuous&include_docs=true HTTP/1.0\r\n\r\n";
    client.write_all(request.as_bytes()).await.unwrap();

    // Changes (2 MiB a batch) while the client reads nothing, until it is cut off.
    let doc = json!({"text": "x".repeat(4000)});
    let (mut batches, per_batch) = (0, 512);
    while *cut_offs.borrow() == 0 {
        assert!(batches < 40, "not cut off after {batches} batches");
        let ops = (0..per_batch)
            .map(|i| {
                let key = format!("k{batches:03}-{i:04}").into_bytes();
                BatchOp::Put(key, Value::Json(doc.clone()))
            })
            .collect();
        within(mb.batch(ops)).await.unwrap();
        batches += 1;
    }
    let total = (batches * per_batch) as u64;

    // Reading now (before the connection is closed, twice the cut-off after its writes
    // began to wait) gets what was buffered, then the too_slow line, then the end.
    let mut stream = Stream::of_tcp(client, Vec::new());
    let head = stream.until(b"\r\n\r\n").await.unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    let (mut rows, mut last) = (0u64, None);
    let mut bytes = 0;
    while let Some(line) = stream.line().await {
        bytes += line.len();
        let json: Json = serde_json::from_str(&line).unwrap();
        if json.get("error").is_some() {
            last = Some(json);
            break;
        }
        rows += 1;
        assert_eq!(json["seq"], json!(rows));
    }
    assert_eq!(stream.line().await, None);
    let last = last.expect("a too_slow line");
    assert_eq!(last["error"], "too_slow", "{last}");
    assert_eq!(last["last_seq"], json!(rows));
    // The node held back far less than everything (kernel socket buffers included).
    assert!(rows < total / 2, "{rows} of {total} changes were buffered");
    assert!(bytes < 12 << 20, "{bytes} bytes were buffered");
    within(server.shutdown()).await;
    mb.close().await;
}

/// Opens a streamed `_changes` over HTTP/1.0 (its body ends with the connection).
async fn open_stream(addr: &str, path: &str) -> Stream {
    let mut tcp = within(tokio::net::TcpStream::connect(addr)).await.unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut stream = Stream::of_tcp(tcp, Vec::new());
    let head = stream.until(b"\r\n\r\n").await.unwrap();
    assert!(head.contains(" 200 "), "{path}: {head}");
    stream
}

/// The keys of B's changes after `since`, read from its event stream until every key of
/// `expected` came (each counted as often as it came).
async fn keys_until(addr: &str, since: u64, expected: &[String]) -> Vec<String> {
    let path = format!("/_changes?feed=eventsource&since={since}");
    let mut events = open_stream(addr, &path).await;
    let mut keys = Vec::new();
    let mut last = since;
    while !expected.iter().all(|k| keys.contains(k)) {
        let (id, row) = events.result().await.expect("the stream goes on");
        let id = id.expect("a result has an id");
        assert!(id > last, "ids increase: {id} after {last}");
        last = id;
        keys.push(row["key"].as_str().unwrap().to_string());
    }
    keys
}

#[test]
fn a_client_resumes_from_last_seq_across_a_node_restart() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = http_pair(dir_a.path(), dir_b.path());
    let http_a = http_addr(&a);
    let keys = |range: std::ops::Range<u32>| range.map(|i| format!("d{i}")).collect::<Vec<_>>();
    let put_on_a = |keys: Vec<String>| {
        let http_a = http_a.clone();
        async move {
            for key in keys {
                let (status, _) = http_request(&http_a, "PUT", &format!("/docs/{key}"), "1").await;
                assert_eq!(status, 200);
            }
        }
    };
    let last_seq = rt.block_on(async {
        put_on_a(keys(0..1)).await;
        let http_b = http_addr(&b);
        // A long poll on B delivers it (each poll answers at once if B already has it).
        let since = longpoll_until(&http_b, "d0").await;
        // So does B's event stream.
        assert_eq!(keys_until(&http_b, 0, &keys(0..1)).await, keys(0..1));
        since
    });

    // B goes down; A writes meanwhile, and after B is back.
    b.kill();
    rt.block_on(put_on_a(keys(1..4)));
    let mut b = Node::start(
        dir_b.path(),
        &["--dial", &a.addr(), "--http", "127.0.0.1:0"],
    );
    b.close_stdin();
    let http_b = http_addr(&b);
    rt.block_on(async {
        put_on_a(keys(4..7)).await;
        // The client resumes from the last_seq it had: all of them, once each, nothing else.
        let got = keys_until(&http_b, last_seq, &keys(1..7)).await;
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, keys(1..7), "after last_seq {last_seq}: {got:?}");
        let path = format!("/_changes?since={last_seq}");
        let (_, page) = http_request(&http_b, "GET", &path, "").await;
        let paged: Vec<&str> = page["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["key"].as_str().unwrap())
            .collect();
        assert_eq!(paged, got, "the normal feed agrees");
        for addr in [&http_a, &http_b] {
            let (status, _) = http_request(addr, "POST", "/_shutdown", "").await;
            assert_eq!(status, 200);
        }
    });
    a.wait_exit("POST /_shutdown");
    b.wait_exit("POST /_shutdown");
}

#[tokio::test]
async fn indexes_and_queries_over_http() {
    let api = Api::new().await;
    for (key, doc) in [
        (
            "c/1",
            r#"{"city":"Paris","pop":2100000,"tags":["capital","fr"]}"#,
        ),
        ("c/2", r#"{"city":"Lyon","pop":520000,"tags":["fr"]}"#),
        ("c/3", r#"{"city":"New York","pop":8300000,"tags":["us"]}"#),
        ("other", r#"{"city":"Paris","pop":1}"#),
    ] {
        api.ok(
            Method::PUT,
            &format!("/docs/{}", key.replace('/', "%2F")),
            doc,
        )
        .await;
    }
    // No index yet: refused unless a scan is allowed.
    let q = "/_query?q=%2Fcity%20eq%20%22Paris%22";
    assert_eq!(
        error_kind(&api.get(q).await),
        (StatusCode::BAD_REQUEST, "no_index")
    );
    let scanned = api.ok(Method::GET, &format!("{q}&scan=true"), "").await;
    assert_eq!(scanned["index"], "scan");
    assert_eq!(scanned["results"].as_array().unwrap().len(), 2);

    let (status, added) = api
        .call(Method::POST, "/_index", r#"{"path":"/city"}"#)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{added}");
    let id = added["id"].as_u64().unwrap();
    api.mb.wait_index(id as u32).await.unwrap();
    let (status, every) = api.call(Method::POST, "/_index", r#"{"every":"c/"}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{every}");
    api.mb
        .wait_index(every["id"].as_u64().unwrap() as u32)
        .await
        .unwrap();
    let listed = api.ok(Method::GET, "/_index", "").await;
    assert_eq!(listed["indexes"].as_array().unwrap().len(), 2, "{listed}");
    assert!(
        listed["indexes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["state"] == "ready")
    );

    let paris = api.ok(Method::GET, q, "").await;
    let keys: Vec<&str> = paris["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["c/1", "other"]);
    assert_eq!(paris["results"][0]["doc"]["pop"], 2100000);
    assert!(
        paris["index"].as_str().unwrap().starts_with("index"),
        "{paris}"
    );
    // A string with a space, two conditions, a key prefix (answered by the every-path index).
    let both = api
        .ok(
            Method::GET,
            "/_query?q=%2Fpop%20gte%201000000%20%2Ftags%2F%5B%5D%20eq%20%22fr%22&prefix=c%2F",
            "",
        )
        .await;
    assert_eq!(both["results"].as_array().unwrap().len(), 1, "{both}");
    let ny = api
        .ok(
            Method::POST,
            "/_query",
            r#"{"where":[{"path":"/city","op":"prefix","value":"New "}]}"#,
        )
        .await;
    assert_eq!(ny["results"][0]["key"], "c/3");
    // Pages of one, resumed with `next`.
    let first = api.ok(Method::GET, &format!("{q}&limit=1"), "").await;
    let next = first["next"].as_str().unwrap();
    let second = api
        .ok(Method::GET, &format!("{q}&limit=1&after={next}"), "")
        .await;
    assert_eq!(
        (
            first["results"][0]["key"].as_str(),
            second["results"][0]["key"].as_str()
        ),
        (Some("c/1"), Some("other"))
    );
    // Bad queries are 400s with a reason; nothing breaks.
    for bad in [
        "/_query",
        "/_query?q=city%20eq%201",
        "/_query?q=%2Fcity%20equals%201",
        "/_query?q=%2Fcity%20eq%20%7B",
        "/_query?q=%2Fcity%20eq%201&limit=0",
        "/_query?q=%2Fcity%20eq%201&order=sideways",
        "/_query?q=%2Fcity%20eq%201&after=zz",
        "/_query?q=%2Fcity%20prefix%201",
    ] {
        assert_eq!(api.get(bad).await.0, StatusCode::BAD_REQUEST, "{bad}");
    }
    for bad in [r#"{"path":"city"}"#, r#"{"path":1}"#, "[]", "{"] {
        assert_eq!(
            api.call(Method::POST, "/_index", bad).await.0,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    api.ok(Method::DELETE, &format!("/_index/{id}"), "").await;
    assert_eq!(
        error_kind(&api.get(q).await),
        (StatusCode::BAD_REQUEST, "no_index")
    );
    // An index that does not exist (any more) is not found.
    let gone = api.call(Method::DELETE, &format!("/_index/{id}"), "").await;
    assert_eq!(gone.0, StatusCode::NOT_FOUND, "{gone:?}");
}
