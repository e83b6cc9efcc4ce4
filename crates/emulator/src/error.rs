//! Intercom's error envelope, `{"type":"error.list","request_id":…,"errors":[{code,message}]}`,
//! and the bearer-token check that answers 401 the way Intercom does.

use crate::Emulator;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An Intercom API error.
#[derive(Debug)]
pub struct IntercomError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl IntercomError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        IntercomError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        IntercomError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        IntercomError::new(StatusCode::BAD_REQUEST, "parameter_invalid", message)
    }
}

impl IntoResponse for IntercomError {
    fn into_response(self) -> Response {
        let body = json!({
            "type": "error.list",
            "request_id": uuid::Uuid::new_v4().to_string(),
            "errors": [{ "code": self.code, "message": self.message }],
        });
        (self.status, axum::Json(body)).into_response()
    }
}

/// Unknown paths and methods: Intercom answers 404 for both.
pub async fn not_found() -> IntercomError {
    IntercomError::not_found("Resource Not Found")
}

/// Checks `Authorization: Bearer <token>` against the configured token (any token when none
/// is configured; a missing header is always refused).
pub async fn authenticate(
    State(emulator): State<Emulator>,
    request: Request,
    next: Next,
) -> Response {
    let expected = emulator.config.lock().expect("config lock").token.clone();
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match (presented, expected) {
        (None, _) => IntercomError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Access Token Invalid",
        )
        .into_response(),
        (Some(token), Some(expected)) if token != expected => IntercomError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Access Token Invalid",
        )
        .into_response(),
        _ => next.run(request).await,
    }
}
