//! The HTTP API beyond plain documents: revisions and conditional writes, history and
//! conflicts, paging a large range, writers, status and metrics, the token, and a table of
//! bad requests that must each get their error while every acknowledged write stays.

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use multibee::MultiBee;
use multibee::http::{HttpApi, router, serve_http};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value as Json, json};
use tempfile::TempDir;
use tower::ServiceExt;

use crate::common::within;

struct Api {
    _dir: TempDir,
    mb: MultiBee,
    router: axum::Router,
}

/// An answer: status, headers, and the body (JSON when it is, else a string).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Json,
}

impl Answer {
    fn etag(&self) -> String {
        let tag = self.headers.get("etag").expect("an ETag");
        tag.to_str().unwrap().to_string()
    }

    fn kind(&self) -> &str {
        assert!(self.body["reason"].is_string(), "{}", self.body);
        self.body["error"].as_str().unwrap()
    }
}

impl Api {
    async fn new() -> Api {
        Api::with(|api| api).await
    }

    async fn with(f: impl FnOnce(HttpApi) -> HttpApi) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let mb = MultiBee::open(dir.path()).await.unwrap();
        let router = router(f(HttpApi::new(mb.clone()).body_limit(64 * 1024)));
        Api {
            _dir: dir,
            mb,
            router,
        }
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Body::from(body.to_string())).unwrap();
        let response = within(self.router.clone().oneshot(request)).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 26)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.call(Method::GET, uri, &[], "").await
    }

    /// The keys of a `GET /docs` page.
    async fn keys(&self, uri: &str) -> Vec<String> {
        let page = self.ok(Method::GET, uri, "").await.body;
        let docs = page["docs"].as_array().unwrap();
        docs.iter()
            .map(|r| r["key"].as_str().unwrap().to_string())
            .collect()
    }

    async fn ok(&self, method: Method, uri: &str, body: &str) -> Answer {
        let answer = self.call(method, uri, &[], body).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}: {}", answer.body);
        answer
    }
}

#[tokio::test]
async fn if_match_makes_read_modify_write_safe() {
    let api = Api::new().await;
    let created = api
        .call(
            Method::PUT,
            "/docs/d",
            &[("if-none-match", "*")],
            r#"{"n":1}"#,
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let first = created.etag();
    assert_eq!(created.body["rev"], json!(first.trim_matches('"')));
    let read = api.get("/docs/d").await;
    assert_eq!(read.etag(), first);
    assert_eq!(read.body["rev"], created.body["rev"]);

    // Create-only again: 412, nothing written.
    let again = api
        .call(
            Method::PUT,
            "/docs/d",
            &[("if-none-match", "*")],
            r#"{"n":9}"#,
        )
        .await;
    assert_eq!(
        (again.status, again.kind()),
        (StatusCode::PRECONDITION_FAILED, "precondition_failed")
    );

    // A write at the revision read goes through and moves the revision.
    let second = api
        .call(
            Method::PATCH,
            "/docs/d",
            &[("if-match", &first)],
            r#"{"m":2}"#,
        )
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_ne!(second.etag(), first);

    // Another client's write with the old revision fails, whatever the method; the
    // document is as the successful write left it.
    let version = api.mb.version().unwrap();
    for (method, body) in [
        (Method::PUT, r#"{"n":3}"#),
        (Method::PATCH, r#"{"n":3}"#),
        (Method::DELETE, ""),
    ] {
        let stale = api
            .call(method.clone(), "/docs/d", &[("if-match", &first)], body)
            .await;
        assert_eq!(
            stale.status,
            StatusCode::PRECONDITION_FAILED,
            "{method}: {}",
            stale.body
        );
        assert!(
            stale.body["reason"].as_str().unwrap().contains("revision"),
            "{}",
            stale.body
        );
    }
    assert_eq!(api.mb.version().unwrap(), version);
    assert_eq!(
        api.get("/docs/d").await.body["doc"],
        json!({"n": 1, "m": 2})
    );

    // A change merged or written elsewhere moves the revision the same way.
    api.mb.put("d", json!({"n": 4})).await.unwrap();
    let stale = api
        .call(
            Method::PUT,
            "/docs/d",
            &[("if-match", &second.etag())],
            "{}",
        )
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);

    // `*`: exists. A GET with the current revision in If-None-Match: 304.
    let now = api.get("/docs/d").await.etag();
    let unchanged = api
        .call(Method::GET, "/docs/d", &[("if-none-match", &now)], "")
        .await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    assert_eq!(unchanged.etag(), now);
    let gone = api
        .call(Method::DELETE, "/docs/d", &[("if-match", "*")], "")
        .await;
    assert_eq!(gone.status, StatusCode::OK);
    assert!(gone.headers.get("etag").is_none());
    assert_eq!(gone.body["rev"], Json::Null);
    let absent = api
        .call(Method::DELETE, "/docs/d", &[("if-match", "*")], "")
        .await;
    assert_eq!(absent.status, StatusCode::PRECONDITION_FAILED);

    // Tokens that cannot be revisions are the client's mistake: 400.
    for bad in ["\"abc\"", "W/", ""] {
        let answer = api
            .call(Method::PUT, "/docs/d", &[("if-match", bad)], "{}")
            .await;
        assert_eq!(
            (answer.status, answer.kind()),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{bad:?}"
        );
    }
    let both = api
        .call(
            Method::PUT,
            "/docs/d",
            &[("if-match", "*"), ("if-none-match", "*")],
            "{}",
        )
        .await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bulk_preconditions_are_all_or_nothing() {
    let api = Api::new().await;
    let put = api.ok(Method::PUT, "/docs/a", "1").await;
    let rev_a = put.body["rev"].as_str().unwrap().to_string();
    let ops = json!({"ops": [
        {"put": "b", "doc": 2, "if_none_match": "*"},
        {"put": "a", "doc": 10, "if_match": rev_a},
    ]});
    let done = api.ok(Method::POST, "/docs/_bulk", &ops.to_string()).await;
    assert_eq!(done.body["revs"].as_array().unwrap().len(), 2);
    // The same batch again: `b` exists now and `a` moved: nothing is written.
    let version = api.mb.version().unwrap();
    let again = api
        .call(Method::POST, "/docs/_bulk", &[], &ops.to_string())
        .await;
    assert_eq!(
        again.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        again.body
    );
    assert_eq!(api.mb.version().unwrap(), version);
    assert_eq!(api.get("/docs/a").await.body["doc"], json!(10));
    let bad = json!({"ops": [{"put": "c", "doc": 1, "if_none_match": "\"3\""}]});
    let answer = api
        .call(Method::POST, "/docs/_bulk", &[], &bad.to_string())
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn history_and_conflicts_of_a_key() {
    let api = Api::new().await;
    api.ok(Method::PUT, "/docs/k", r#"{"a":1}"#).await;
    api.ok(Method::PATCH, "/docs/k", r#"{"b":2}"#).await;
    api.ok(Method::DELETE, "/docs/k", "").await;
    let history = api.ok(Method::GET, "/docs/k/_history", "").await.body;
    let rows = history["history"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{history}");
    let own = api.mb.diff_key().to_string();
    assert!(rows.iter().all(|r| r["writer"] == json!(own)));
    let seqs: Vec<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(rows[2]["change"], json!("delete"));
    let conflicts = api.ok(Method::GET, "/docs/k/_conflicts", "").await.body;
    assert_eq!(conflicts, json!({"key": "k", "conflicts": []}));
    // A key that ends in `/_history` itself, with its slash encoded.
    api.ok(Method::PUT, "/docs/x%2F_history", "7").await;
    assert_eq!(api.mb.get("x/_history").unwrap(), Some(json!(7).into()));
    assert_eq!(api.get("/docs/x%2F_history").await.body["doc"], json!(7));
    let sub = api.ok(Method::GET, "/docs/x/_history", "").await.body;
    assert_eq!(sub["key"], json!("x"));
    // Sub-resources are read only.
    let put = api.call(Method::PUT, "/docs/k/_history", &[], "1").await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn paging_walks_ten_thousand_keys_exactly_once_both_ways() {
    let api = Api::new().await;
    let keys: Vec<String> = (0..10_000).map(|i| format!("k/{i:05}")).collect();
    for chunk in keys.chunks(1000) {
        let ops: Vec<Json> = chunk
            .iter()
            .map(|k| json!({"put": k, "doc": {"k": k}}))
            .collect();
        api.ok(
            Method::POST,
            "/docs/_bulk",
            &json!({"ops": ops}).to_string(),
        )
        .await;
    }
    api.ok(Method::PUT, "/docs/j", "0").await;
    api.ok(Method::PUT, "/docs/l", "0").await;
    for (reverse, limit) in [(false, 1000), (false, 777), (true, 1000), (true, 333)] {
        let mut seen = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let mut uri =
                format!("/docs?prefix=k/&limit={limit}&reverse={reverse}&include_docs=false");
            if let Some(s) = &start {
                uri.push_str(&format!(
                    "&start={}",
                    utf8_percent_encode(s, NON_ALPHANUMERIC)
                ));
            }
            let page = api.ok(Method::GET, &uri, "").await.body;
            for row in page["docs"].as_array().unwrap() {
                assert!(row.get("doc").is_none());
                seen.push(row["key"].as_str().unwrap().to_string());
            }
            match page["next"].as_str() {
                Some(next) => start = Some(next.to_string()),
                None => break,
            }
        }
        let mut want = keys.clone();
        if reverse {
            want.reverse();
        }
        assert_eq!(seen.len(), want.len(), "reverse={reverse} limit={limit}");
        assert!(
            seen == want,
            "reverse={reverse} limit={limit}: not each key once in order"
        );
    }
    // `end` stops the range (exclusive) in the order of iteration.
    let got = api.keys("/docs?start=k/00010&end=k/00013").await;
    assert_eq!(got, ["k/00010", "k/00011", "k/00012"]);
    let got = api
        .keys("/docs?start=k/00013&end=k/00010&reverse=true")
        .await;
    assert_eq!(got, ["k/00013", "k/00012", "k/00011"]);
}

#[tokio::test]
async fn writers_status_and_metrics() {
    let api = Api::new().await;
    let other_dir = tempfile::tempdir().unwrap();
    let other = MultiBee::open(other_dir.path()).await.unwrap();
    let own = api.mb.diff_key().to_string();
    api.ok(Method::PUT, "/docs/first", "1").await;
    let writers = api.ok(Method::GET, "/_writers", "").await.body;
    assert_eq!(writers["writers"][0]["key"], json!(own));
    assert_eq!(writers["writers"][0]["state"], json!("active"));

    for (body, says) in [
        (json!({"key": own}), "own diff key"),
        (json!({"key": api.mb.store_key().to_string()}), "store key"),
        (json!({"key": "abc"}), "bad writer key"),
        (
            json!({"keys": other.diff_key().to_string()}),
            "the body must be",
        ),
    ] {
        let answer = api
            .call(Method::POST, "/_writers", &[], &body.to_string())
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            answer.body["reason"].as_str().unwrap().contains(says),
            "{}",
            answer.body
        );
    }
    let key = other.diff_key().to_string();
    api.ok(Method::POST, "/_writers", &json!({"key": key}).to_string())
        .await;
    let listed = api.ok(Method::GET, "/_writers", "").await.body;
    assert!(
        listed["writers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["key"] == json!(key) && w["state"] == json!("active"))
    );
    api.ok(Method::DELETE, &format!("/_writers/{key}"), "")
        .await;
    let listed = api.ok(Method::GET, "/_writers", "").await.body;
    let row = listed["writers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["key"] == json!(key))
        .cloned()
        .unwrap();
    assert_eq!(row["state"], json!("removed"));
    let bad = api.call(Method::DELETE, "/_writers/zz", &[], "").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    api.ok(Method::PUT, "/docs/a", "1").await;
    let status = api.ok(Method::GET, "/_status", "").await.body;
    assert_eq!(status["version"], json!(api.mb.version().unwrap()));
    let mine = status["writers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["key"] == json!(own))
        .cloned()
        .unwrap();
    assert_eq!(mine["behind"], json!(0));
    assert_eq!(mine["catching_up"], json!(false));
    assert!(mine["length"].as_u64().unwrap() >= 1);

    let metrics = api.get("/_metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.body.as_str().unwrap().to_string();
    let version = api.mb.version().unwrap();
    assert!(
        text.contains(&format!("multibee_store_version {version}\n")),
        "{text}"
    );
    assert!(text.contains("multibee_writer_merged{"), "{text}");
    assert!(
        text.contains("multibee_http_requests_total{method=\"PUT\",status=\"200\"}"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    assert!(!text.contains(".."), "help texts end in one period: {text}");
    other.close().await;
}

#[tokio::test]
async fn a_token_guards_every_route_and_other_interfaces_need_one() {
    let api = Api::with(|api| api.token("s3cret")).await;
    for headers in [
        vec![],
        vec![("authorization", "Bearer nope")],
        vec![("authorization", "s3cret")],
    ] {
        for (method, uri) in [
            (Method::GET, "/"),
            (Method::PUT, "/docs/a"),
            (Method::GET, "/_ui"),
            (Method::GET, "/nowhere"),
        ] {
            let answer = api.call(method.clone(), uri, &headers, "1").await;
            assert_eq!(
                (answer.status, answer.kind()),
                (StatusCode::UNAUTHORIZED, "unauthorized"),
                "{method} {uri} {headers:?}"
            );
            assert_eq!(answer.headers["www-authenticate"], "Bearer");
        }
    }
    assert_eq!(api.mb.get("a").unwrap(), None);
    // A browser's EventSource cannot set headers: the token may come as `access_token`.
    let page = api.get("/docs?limit=5&access_token=s3cret").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let wrong = api.get("/docs?access_token=s3cre").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let ok = api
        .call(
            Method::PUT,
            "/docs/a",
            &[("authorization", "Bearer s3cret")],
            "1",
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);

    // Listening beyond loopback without a token is refused; with one it is allowed.
    let dir = tempfile::tempdir().unwrap();
    let mb = MultiBee::open(dir.path()).await.unwrap();
    let open = serve_http("0.0.0.0:0".parse().unwrap(), HttpApi::new(mb.clone())).await;
    let e = open.expect_err("no token, not loopback");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("token"), "{e}");
    let guarded = serve_http("127.0.0.1:0".parse().unwrap(), HttpApi::new(mb).token("t"))
        .await
        .unwrap();
    guarded.shutdown().await;
}

/// A bad request: method, path, headers, body, and the status and error kind it must get.
type BadRequest<'a> = (
    Method,
    &'a str,
    &'a [(&'a str, &'a str)],
    &'a str,
    StatusCode,
    &'a str,
);

/// Every bad request gets its status and error kind, and nothing acknowledged before is lost.
#[tokio::test]
async fn bad_requests_get_their_error_and_lose_nothing() {
    let api = Api::new().await;
    api.ok(Method::PUT, "/docs/keep", r#"{"a":1}"#).await;
    api.ok(Method::PUT, "/docs/dir/x", "[1]").await;
    let hash = api.mb.state_hash().unwrap();
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let big = format!("\"{}\"", "x".repeat(70 * 1024));
    let table: &[BadRequest] = &[
        (
            Method::PUT,
            "/docs/keep",
            &[],
            "{",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::PUT,
            "/docs/keep",
            &[],
            "",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::PUT,
            "/docs/keep",
            &[],
            &deep,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::PUT,
            "/docs/keep",
            &[],
            &big,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            Method::PUT,
            "/docs/%FF%FE",
            &[],
            "1",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::PUT,
            "/docs/",
            &[],
            "1",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::PATCH,
            "/docs/keep",
            &[],
            "[1,",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::PUT,
            "/docs/keep",
            &[("if-match", "\"999999\"")],
            "2",
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
        ),
        (
            Method::GET,
            "/docs/absent",
            &[],
            "",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            "/docs?limit=0",
            &[],
            "",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/docs?limit=100000",
            &[],
            "",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/docs?limit=-1",
            &[],
            "",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/docs?frob=1",
            &[],
            "",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/docs?reverse=maybe",
            &[],
            "",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/_changes?since=x",
            &[],
            "",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/_changes?feed=sometimes",
            &[],
            "",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/_changes?timeout=99999999",
            &[],
            "",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/docs/_bulk",
            &[],
            "{\"ops\":[]}",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/docs/_bulk",
            &[],
            "{\"ops\":[{\"put\":\"keep\",\"doc\":2},{\"put\":1}]}",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/docs/_bulk",
            &[],
            "[]",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/_writers",
            &[],
            "{\"key\":\"00\"}",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::DELETE,
            "/_writers/nothex",
            &[],
            "",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::DELETE,
            "/docs",
            &[],
            "",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::POST,
            "/docs/keep",
            &[],
            "1",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::GET,
            "/nowhere",
            &[],
            "",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (method, uri, headers, body, status, kind) in table {
        let answer = api.call(method.clone(), uri, headers, body).await;
        assert_eq!(
            (answer.status, answer.kind()),
            (*status, *kind),
            "{method} {uri}: {}",
            answer.body
        );
    }
    assert_eq!(
        api.mb.state_hash().unwrap(),
        hash,
        "a bad request changed the store"
    );
    assert_eq!(api.get("/docs/keep").await.body["doc"], json!({"a": 1}));
    assert_eq!(api.get("/docs/dir/x").await.body["doc"], json!([1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_what_peers_hold_and_metrics_count_bytes() {
    use crate::http::http_request;
    use multibee::{ChangesOptions, Config, serve};
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = MultiBee::open(dir_a.path()).await.unwrap();
    let served_a = serve(&a, Config::loopback()).await.unwrap();
    let http = serve_http("127.0.0.1:0".parse().unwrap(), HttpApi::served(&served_a))
        .await
        .unwrap();
    let addr = http.local_addr().to_string();
    let served_b = crate::common::join_through(&served_a, dir_b.path()).await;
    let b = served_b.multibee().clone();
    let mut changes = a
        .changes(ChangesOptions {
            live: true,
            since: a.version().unwrap(),
            ..Default::default()
        })
        .unwrap();
    b.put("from-b", json!({"n": 1})).await.unwrap();
    loop {
        let change = within(changes.next()).await.unwrap().unwrap();
        if change.key == b"from-b" {
            break;
        }
    }
    // A held and merged B's diffs; B told A how much it holds when A's stream started.
    let b_key = b.diff_key().to_string();
    let row = within(async {
        loop {
            let (status, body) = http_request(&addr, "GET", "/_status", "").await;
            assert_eq!(status, 200);
            let row = body["writers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["key"] == json!(b_key) && !w["best_peer"].is_null())
                .cloned();
            if let Some(row) = row {
                return (row, body);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let (row, body) = row;
    assert_eq!(
        row["best_peer"]["peer_id"],
        json!(served_b.peer_id().to_string())
    );
    assert_eq!(row["best_peer"]["ahead"], json!(0), "{row}");
    assert_eq!(row["behind"], json!(0));
    assert_eq!(body["peers"], json!(1));
    assert!(
        body["replication"]["bytes_received"].as_u64().unwrap() > 0,
        "{body}"
    );
    let (status, _) = http_request(&addr, "GET", "/_metrics", "").await;
    assert_eq!(status, 200);

    // Peers: B, its addresses, and the feeds it serves A (its own diff feed at least).
    let (status, peers) = http_request(&addr, "GET", "/_peers", "").await;
    assert_eq!(status, 200);
    let b_peer = served_b.peer_id().to_string();
    let listed = peers["peers"].as_array().unwrap();
    let row = listed
        .iter()
        .find(|p| p["peer_id"] == json!(b_peer))
        .unwrap();
    assert!(!row["addresses"].as_array().unwrap().is_empty(), "{row}");
    // Dials answer their outcome: B (connected already), a closed port, a bad address.
    let b_addr = served_b.listen_addrs().await.unwrap()[0].to_string();
    let body = json!({"addr": b_addr}).to_string();
    let (status, dialed) = http_request(&addr, "POST", "/_peers", &body).await;
    assert_eq!(
        (status, &dialed["peer_id"]),
        (200, &json!(b_peer)),
        "{dialed}"
    );
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let body = json!({"addr": format!("/ip4/127.0.0.1/tcp/{closed}")}).to_string();
    let (status, failed) = http_request(&addr, "POST", "/_peers", &body).await;
    assert_eq!(
        (status, &failed["error"]),
        (502, &json!("dial_failed")),
        "{failed}"
    );
    assert!(
        failed["reason"].as_str().unwrap().contains("refused"),
        "{failed}"
    );
    let (status, bad) = http_request(&addr, "POST", "/_peers", r#"{"addr":"nowhere"}"#).await;
    assert_eq!(
        (status, &bad["error"]),
        (400, &json!("bad_request")),
        "{bad}"
    );
    http.shutdown().await;
    served_b.shutdown().await;
    served_a.shutdown().await;
}
