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
    /// A `Link` header to send with the error (merged contacts).
    pub link: Option<String>,
}

impl IntercomError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        IntercomError {
            status,
            code,
            message: message.into(),
            link: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        IntercomError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A merged contact: 410 `contact_merged` with a `Link` to the surviving contact (what
    /// Intercom 2.16 answers; earlier versions answer 404).
    pub fn merged(into: &str) -> Self {
        let mut error = IntercomError::new(
            StatusCode::GONE,
            "contact_merged",
            "Contact has been merged",
        );
        error.link = Some(format!("</contacts/{into}>; rel=\"canonical\""));
        error
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
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(link) = self
            .link
            .and_then(|l| axum::http::HeaderValue::from_str(&l).ok())
        {
            response.headers_mut().insert(header::LINK, link);
        }
        response
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

/// Intercom answers a merged contact with 410 from version 2.16 on, with 404 before; the
/// handlers speak 2.16 and this turns their 410s into 404s for older versions (2.14 when the
/// header is absent, like a workspace left on its default).
pub async fn version_compat(request: Request, next: Next) -> Response {
    let version = request
        .headers()
        .get("intercom-version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (major, minor) = v.trim().split_once('.')?;
            Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?))
        })
        .unwrap_or((2, 14));
    let response = next.run(request).await;
    if response.status() == StatusCode::GONE && version < (2, 16) {
        return IntercomError::not_found("User Not Found").into_response();
    }
    response
}
