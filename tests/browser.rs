//! The `/_ui` page in a real headless Chromium, driven over the DevTools protocol: it loads,
//! shows a document written through the API, and shows a change that arrives from another
//! peer without a reload.
//!
//! Chromium comes from the distribution (`.ci/run` installs it when missing). Without it the
//! test says so and passes, unless `MULTIBEE_REQUIRE_BROWSER` is set (as `.ci/run` does).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use multibee::http::{HttpApi, serve_http};
use multibee::{Config, MultiBee, serve};
use serde_json::{Value as Json, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::within;
use crate::http::http_request;

/// How long the page may take to show something.
const PATIENCE: Duration = Duration::from_secs(60);

/// Chromium and every process it started, killed on every exit path.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Its own process group: the renderers go with it.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// Starts headless Chromium on `url`; the browser and its DevTools WebSocket URL.
fn open(binary: &str, url: &str) -> (Browser, String) {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let browser = Browser {
        child,
        _profile: profile,
    };
    // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"; a reader thread so
    // that the wait can time out.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("ws://").nth(1) {
                let _ = tx.send(format!("ws://{}", rest.trim()));
            }
        }
    });
    let devtools = rx
        .recv_timeout(PATIENCE)
        .expect("Chromium did not print its DevTools address");
    (browser, devtools)
}

/// A DevTools session with the page (over the browser's connection, flattened).
struct Page {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    session: Option<String>,
    next_id: u64,
}

impl Page {
    async fn attach(devtools: &str) -> Page {
        let (ws, _) = tokio_tungstenite::connect_async(devtools).await.unwrap();
        let mut page = Page {
            ws,
            session: None,
            next_id: 1,
        };
        // The page target appears once Chromium opened the URL: wait for it to be created.
        page.call("Target.setDiscoverTargets", json!({"discover": true}))
            .await
            .unwrap();
        let target = loop {
            let targets = page.call("Target.getTargets", json!({})).await.unwrap();
            let found = targets["targetInfos"]
                .as_array()
                .and_then(|t| t.iter().find(|t| t["type"] == json!("page")))
                .map(|t| t["targetId"].clone());
            if let Some(id) = found {
                break id;
            }
            page.next_event("Target.targetCreated").await;
        };
        let attached = page
            .call(
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
            )
            .await
            .unwrap();
        page.session = Some(attached["sessionId"].as_str().unwrap().to_string());
        page
    }

    /// Sends a command (to the page once attached); its result or the error answered.
    async fn call(&mut self, method: &str, params: Json) -> Result<Json, Json> {
        let id = self.next_id;
        self.next_id += 1;
        let mut call = json!({"id": id, "method": method, "params": params});
        if let Some(session) = &self.session {
            call["sessionId"] = json!(session);
        }
        self.ws
            .send(Message::Text(call.to_string().into()))
            .await
            .unwrap();
        loop {
            let answer = self.receive().await;
            if answer["id"] == json!(id) {
                return match answer["error"].is_null() {
                    true => Ok(answer["result"].clone()),
                    false => Err(answer),
                };
            }
        }
    }

    async fn receive(&mut self) -> Json {
        loop {
            let message = self.ws.next().await.expect("DevTools closed").unwrap();
            if let Message::Text(text) = message {
                return serde_json::from_str(&text).unwrap();
            }
        }
    }

    async fn next_event(&mut self, method: &str) {
        while self.receive().await["method"] != json!(method) {}
    }

    /// Evaluates `expression` in the page (awaiting it if it is a promise); its value, or the
    /// exception it threw (as when the page navigated away meanwhile).
    async fn eval(&mut self, expression: &str) -> Result<Json, Json> {
        let params = json!({"expression": expression, "awaitPromise": true, "returnByValue": true});
        let result = self.call("Runtime.evaluate", params).await?;
        match result["exceptionDetails"].is_null() {
            true => Ok(result["result"]["value"].clone()),
            false => Err(result),
        }
    }

    /// Waits until the page at `url` has loaded (it may still be at about:blank).
    async fn loaded(&mut self, url: &str) {
        let wait = format!(
            r#"new Promise(done => {{
                if (location.href !== {url}) return;
                if (document.readyState === "complete") return done(true);
                addEventListener("load", () => done(true));
            }})"#,
            url = json!(url)
        );
        // An evaluation in about:blank ends when the page replaces it: evaluate again then.
        while self.eval(&wait).await != Ok(json!(true)) {}
    }

    /// Waits (on the page's own DOM mutations, not by polling) until the element `selector`
    /// of the page shows `text`.
    async fn shows(&mut self, selector: &str, text: &str) {
        let wait = format!(
            r#"new Promise(done => {{
                const seen = () => (document.querySelector({selector})?.innerText ?? "").includes({text});
                if (seen()) return done(true);
                new MutationObserver(() => seen() && done(true))
                    .observe(document.body, {{subtree: true, childList: true, characterData: true}});
            }})"#,
            text = json!(text),
            selector = json!(selector),
        );
        let shown = tokio::time::timeout(PATIENCE, self.eval(&wait)).await;
        assert_eq!(
            shown.unwrap_or_else(|_| panic!("the page never showed {text:?}")),
            Ok(json!(true))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_page_shows_documents_and_live_changes_from_another_peer() {
    let Some(binary) = chromium() else {
        assert!(
            std::env::var_os("MULTIBEE_REQUIRE_BROWSER").is_none(),
            "MULTIBEE_REQUIRE_BROWSER is set and no Chromium is installed"
        );
        eprintln!("SKIPPED: no chromium installed (apt-get install chromium)");
        return;
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = MultiBee::open(dir_a.path()).await.unwrap();
    let served_a = serve(&a, Config::loopback()).await.unwrap();
    let served_b = crate::common::join_through(&served_a, dir_b.path()).await;
    let http = serve_http("127.0.0.1:0".parse().unwrap(), HttpApi::served(&served_b))
        .await
        .unwrap();
    let addr = http.local_addr().to_string();
    let (status, _) = http_request(
        &addr,
        "PUT",
        "/docs/greeting",
        r#"{"text":"written over HTTP"}"#,
    )
    .await;
    assert_eq!(status, 200);

    let url = format!("http://{addr}/_ui");
    let (browser, devtools) = open(binary, &url);
    let mut page = within(Page::attach(&devtools)).await;
    within(page.loaded(&url)).await;
    page.shows("#docs", "written over HTTP").await;
    // The change stream is open...
    page.shows("#live", "live").await;

    // Written on A, replicated to B, shown by B's page as it arrives.
    a.put("from-a", json!({"text": "arrived from peer A"}))
        .await
        .unwrap();
    page.shows("#changes", "arrived from peer A").await;

    drop(page);
    drop(browser);
    http.shutdown().await;
    served_b.shutdown().await;
    served_a.shutdown().await;
}
