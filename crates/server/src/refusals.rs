//! Every refusal is JSON, whoever produced it, and request lines are logged without secrets.
//!
//! Handlers refuse with [`ApiError`]; but axum itself answers some requests (405 for a wrong
//! method, 413 from a body limit, 415 and 422 from extractors) with plain text or nothing.
//! [`json_refusals`] rewrites any error response that is not JSON into Junction's
//! `{success, code, message}` shape, and refuses request lines and headers beyond Junction's own
//! limits (414 and 431, as JSON) before hyper's larger hard limits are reached.
//!
//! [`redacted_uri`] is what logs show of a request target: query values whose names look like
//! credentials (`token`, `key`, `secret`, `password`, `*_token`, …) become `[redacted]`.

use crate::error::ApiError;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

/// Longest request target (path and query) Junction reads. Segment's SDKs send short paths;
/// hyper's own hard limit (64 KiB) answers without a body, so Junction's is well below it.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header bytes (names and values) Junction reads.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most header fields Junction reads (hyper's hard limit is 100).
pub const MAX_HEADER_COUNT: usize = 64;

/// The longest plain-text message kept from a response being rewritten.
const MAX_KEPT_MESSAGE: usize = 200;

pub async fn json_refusals(request: Request, next: Next) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target is {target} bytes, over the limit of {MAX_URI_BYTES}"),
        )
        .limit(MAX_URI_BYTES)
        .into_response();
    }
    let headers = request.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADER_COUNT || header_bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "{} header fields, {header_bytes} bytes; the limits are {MAX_HEADER_COUNT} fields and {MAX_HEADER_BYTES} bytes",
                headers.len()
            ),
        )
        .into_response();
    }
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    // Only axum's own short refusals arrive here; their bodies are a line of text at most.
    let text = match body.collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    let mut rewritten = refusal(status, text.trim()).into_response();
    for (name, value) in &parts.headers {
        // Keep what the refusal tells the client to do (Allow on a 405, Retry-After).
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name, value.clone());
        }
    }
    rewritten
}

fn is_json(response: &Response<Body>) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Junction's refusal for a status axum produced, keeping axum's explanation when it gave one.
fn refusal(status: StatusCode, text: &str) -> ApiError {
    let (code, default) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such endpoint"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this endpoint does not take this method (see the Allow header)",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "send JSON (Content-Type: application/json or text/plain)",
        ),
        StatusCode::UNPROCESSABLE_ENTITY => ("invalid_request", "the request could not be read"),
        StatusCode::BAD_REQUEST => ("bad_request", "the request could not be read"),
        s if s.is_server_error() => ("internal_error", "internal error; retry"),
        _ => ("refused", "the request was refused"),
    };
    let message = if text.is_empty() {
        default.to_owned()
    } else {
        let mut end = text.len().min(MAX_KEPT_MESSAGE);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{default}: {}", &text[..end])
    };
    ApiError::new(status, code, message)
}

/// Whether a query parameter's name says its value is a credential.
fn is_credential(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "token",
        "key",
        "secret",
        "password",
        "passwd",
        "signature",
        "auth",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// The request target as logs may show it: credential-like query values redacted.
pub fn redacted_uri(uri: &Uri) -> String {
    let path = uri.path();
    let Some(query) = uri.query() else {
        return path.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_credential(&decoded(name)) => format!("{name}=[redacted]"),
            None if is_credential(&decoded(pair)) => format!("{pair}=[redacted]"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

/// A query name as the application would read it (`%74oken` is `token`).
fn decoded(name: &str) -> String {
    form_urlencoded::parse(name.as_bytes())
        .next()
        .map(|(name, _)| name.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_query_strings_are_redacted() {
        for (uri, expected) in [
            ("/v1/batch", "/v1/batch"),
            (
                "/api/events?type=track&limit=5",
                "/api/events?type=track&limit=5",
            ),
            ("/x?token=abc", "/x?token=[redacted]"),
            (
                "/x?access_token=abc&type=t",
                "/x?access_token=[redacted]&type=t",
            ),
            (
                "/x?writeKey=wk&key=k2",
                "/x?writeKey=[redacted]&key=[redacted]",
            ),
            (
                "/x?Secret=s&password=p",
                "/x?Secret=[redacted]&password=[redacted]",
            ),
            ("/x?%74oken=abc", "/x?%74oken=[redacted]"),
            ("/x?api_key", "/x?api_key=[redacted]"),
        ] {
            let uri: Uri = uri.parse().unwrap();
            assert_eq!(redacted_uri(&uri), expected);
        }
    }
}
