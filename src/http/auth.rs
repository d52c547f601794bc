//! What every request goes through: the bearer token check, and the request counters of
//! `GET /_metrics`.

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::HttpApi;
use super::error::ApiError;

/// Requests answered, by method and status.
#[derive(Clone, Debug, Default)]
pub(super) struct Requests(Family<Vec<(String, String)>, Counter>);

impl Requests {
    fn count(&self, method: &str, status: StatusCode) {
        let labels = vec![
            ("method".to_string(), method.to_string()),
            ("status".to_string(), status.as_u16().to_string()),
        ];
        self.0.get_or_create(&labels).inc();
    }

    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_requests",
            "HTTP requests answered, by method and status",
            self.0.clone(),
        );
    }
}

/// The token a request carries: `Authorization: Bearer <token>`, or else an `access_token`
/// query parameter (RFC 6750; for browsers' `EventSource`, which cannot set headers).
fn given_token(request: &Request) -> Option<String> {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Some(header) = header {
        return header.strip_prefix("Bearer ").map(|t| t.trim().to_string());
    }
    let query = request.uri().query()?;
    url_query(query).find_map(|(k, v)| (k == "access_token").then_some(v))
}

fn url_query(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .ok()
                .map(|c| c.into_owned())
        };
        Some((decode(k)?, decode(v)?))
    })
}

/// The request without an `access_token` query parameter (the routes do not take it).
fn without_token_param(mut request: Request) -> Request {
    let uri = request.uri();
    let Some(query) = uri.query().filter(|q| q.contains("access_token")) else {
        return request;
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.starts_with("access_token="))
        .collect();
    let path_and_query = match kept.is_empty() {
        true => uri.path().to_string(),
        false => format!("{}?{}", uri.path(), kept.join("&")),
    };
    if let Ok(pq) = path_and_query.parse() {
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(pq);
        if let Ok(new) = axum::http::Uri::from_parts(parts) {
            *request.uri_mut() = new;
        }
    }
    request
}

/// Whether `given` is `token` (compared in constant time).
fn authorized(given: Option<&str>, token: &str) -> bool {
    given.is_some_and(|g| blake3::hash(g.as_bytes()) == blake3::hash(token.as_bytes()))
}

/// Refuses a request without the API's token (when it has one), and counts every answer.
pub(super) async fn check(State(api): State<HttpApi>, request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_string();
    let response = match &api.token {
        Some(token) => {
            let given = given_token(&request);
            if authorized(given.as_deref(), token) {
                next.run(without_token_param(request)).await
            } else {
                let reason = match given {
                    None => "this node requires Authorization: Bearer <token>",
                    Some(_) => "wrong token",
                };
                let mut response =
                    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", reason).into_response();
                response
                    .headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
        }
        None => next.run(request).await,
    };
    api.requests.count(&method, response.status());
    response
}
