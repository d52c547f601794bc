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
            "/_changes?feed=sometimes",
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

/// Sends one HTTP/1.1 request on a fresh connection; the status and the body.
pub async fn http_request(addr: &str, method: &str, path: &str, body: &str) -> (u16, Json) {
    let mut stream = within(tokio::net::TcpStream::connect(addr)).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    within(stream.read_to_end(&mut response)).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, serde_json::from_str(&body).unwrap_or(Json::Null))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

#[tokio::test]
async fn a_bound_server_answers_and_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let mb = MultiBee::open(dir.path()).await.unwrap();
    let server = serve_http("127.0.0.1:0".parse().unwrap(), HttpApi::new(mb.clone()))
        .await
        .unwrap();
    let addr = server.local_addr().to_string();
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
fn http_addr(node: &crate::node::Node) -> String {
    let url = node.ready["http"]
        .as_str()
        .expect("an http address")
        .to_string();
    url.strip_prefix("http://").unwrap().to_string()
}

#[test]
fn two_nodes_with_http_replicate_and_outlive_their_stdin() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = crate::node::Node::start(dir_a.path(), &["--http", "127.0.0.1:0"]);
    let ticket = a.ok("invite")["ticket"].as_str().unwrap().to_string();
    a.close_stdin();
    let mut b =
        crate::node::Node::start(dir_b.path(), &["--join", &ticket, "--http", "127.0.0.1:0"]);
    b.close_stdin();
    let (http_a, http_b) = (http_addr(&a), http_addr(&b));
    rt.block_on(async {
        let (status, info) = http_request(&http_a, "GET", "/", "").await;
        assert_eq!(status, 200);
        assert_eq!(info["diff_key"], a.ready["diff_key"]);
        let (status, _) = http_request(&http_a, "PUT", "/docs/from%20a", r#"{"n":1}"#).await;
        assert_eq!(status, 200);
        // Long polls on B until the write arrives (each answers at once if it already has).
        let mut since = 0;
        loop {
            let path = format!("/_changes?since={since}&feed=longpoll&timeout=60000");
            let (status, changes) = http_request(&http_b, "GET", &path, "").await;
            assert_eq!(status, 200, "{changes}");
            if changes["results"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["key"] == "from a")
            {
                break;
            }
            since = changes["last_seq"].as_u64().unwrap();
        }
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
