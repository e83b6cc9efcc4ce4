//! Reads a request body within a size limit, inflating `Content-Encoding: gzip` (Python with
//! `gzip=True` and Android send it). The limit applies to the inflated size too, so a small
//! compressed body cannot expand without bound.

use crate::error::ApiError;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use flate2::read::GzDecoder;
use junction_model::RequestError;
use std::io::Read;

/// What the limit protects, for the refusal's wording.
pub struct Limit {
    pub bytes: usize,
    pub field: &'static str,
    pub what: &'static str,
}

impl Limit {
    /// One Tracking API message.
    pub const MESSAGE: Limit = Limit {
        bytes: junction_model::limits::MAX_MESSAGE_BYTES,
        field: "message",
        what: "message",
    };
    /// A Tracking API batch request.
    pub const BATCH: Limit = Limit {
        bytes: junction_model::limits::MAX_BATCH_BYTES,
        field: "batch",
        what: "batch request body",
    };
    /// A Segment webhook delivery (one event or an array of them).
    pub const WEBHOOK: Limit = Limit {
        bytes: junction_model::parse::MAX_WEBHOOK_BYTES,
        field: "body",
        what: "webhook body",
    };

    fn exceeded(&self) -> ApiError {
        RequestError::TooLarge {
            field: self.field,
            limit: self.bytes,
            what: self.what,
        }
        .into()
    }
}

pub async fn read(headers: &HeaderMap, body: Body, limit: Limit) -> Result<Bytes, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let raw = axum::body::to_bytes(body, limit.bytes)
        .await
        .map_err(|_| limit.exceeded())?;
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(raw),
        Some("gzip") | Some("x-gzip") => {
            let mut inflated = Vec::with_capacity(raw.len() * 4);
            GzDecoder::new(&raw[..])
                .take(limit.bytes as u64 + 1)
                .read_to_end(&mut inflated)
                .map_err(|e| {
                    ApiError::bad_request(
                        "malformed_body",
                        "body",
                        format!("Content-Encoding is gzip but the body does not inflate: {e}"),
                    )
                })?;
            if inflated.len() > limit.bytes {
                return Err(limit.exceeded());
            }
            Ok(Bytes::from(inflated))
        }
        Some(other) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding {other:?} is not supported; send identity or gzip"),
        )
        .field("Content-Encoding")),
    }
}
