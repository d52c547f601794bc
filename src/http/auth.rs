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
            "HTTP requests answered, by method and status.",
            self.0.clone(),
        );
    }
}

/// Whether `header` is `Bearer <token>` (compared in constant time).
fn authorized(header: Option<&str>, token: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    blake3::hash(given.trim().as_bytes()) == blake3::hash(token.as_bytes())
}

/// Refuses a request without the API's token (when it has one), and counts every answer.
pub(super) async fn check(State(api): State<HttpApi>, request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_string();
    let response = match &api.token {
        Some(token) => {
            let header = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if authorized(header, token) {
                next.run(request).await
            } else {
                let reason = match header {
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
