//! Error answers: `{"error":kind,"reason":text}` with a fitting status.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};

/// An error answer: `{"error":kind,"reason":text}`.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    reason: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, kind: &'static str, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            reason: reason.into(),
        }
    }

    pub(super) fn bad_request(reason: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", reason)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.kind, "reason": self.reason});
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<crate::db::Error> for ApiError {
    fn from(e: crate::db::Error) -> Self {
        use crate::db::Error as E;
        let (status, kind) = match &e {
            E::InvalidArgument(_) | E::TooDeep { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
            E::Removed { .. } | E::NotAMember(_) => (StatusCode::FORBIDDEN, "forbidden"),
            E::OutsideView(_) => (StatusCode::FORBIDDEN, "outside_view"),
            E::ClockExhausted { .. } => (StatusCode::CONFLICT, "conflict"),
            E::PreconditionFailed { .. } => {
                (StatusCode::PRECONDITION_FAILED, "precondition_failed")
            }
            E::NoIndex(_) => (StatusCode::BAD_REQUEST, "no_index"),
            E::UnknownIndex(_) => (StatusCode::NOT_FOUND, "not_found"),
            E::IndexBuilding { .. } => (StatusCode::SERVICE_UNAVAILABLE, "index_building"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "storage"),
        };
        ApiError::new(status, kind, e.to_string())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request(format!("bad key: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(format!("bad parameters: {}", r.body_text()))
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(status, "too_large", r.body_text())
        } else {
            ApiError::bad_request(r.body_text())
        }
    }
}

pub(super) type ApiResult = Result<Response, ApiError>;

pub(super) fn ok(body: Json) -> ApiResult {
    Ok(axum::Json(body).into_response())
}

pub(super) fn parse_json(body: &[u8]) -> Result<Json, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}
