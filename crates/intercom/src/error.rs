//! Intercom failures, classified by what the caller should do next. The classes follow
//! Intercom's documented statuses (shared/reference/intercom.md §3), with two refinements that
//! matter for "no duplicate contacts": a 409 carries the existing contact's id (and whether it is
//! archived), and a 410 carries the contact it was merged into.

use reqwest::header::HeaderMap;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntercomError {
    /// 408, 5xx, timeouts, dropped connections: retry with back-off.
    #[error("Intercom did not complete the request ({detail}); retry later")]
    Retryable { status: Option<u16>, detail: String },
    /// 429: wait for the window to reset (Unix seconds), then retry.
    #[error("Intercom's rate limit is exhausted until {reset:?}")]
    RateLimited { reset: Option<u64> },
    /// 401 or 403: the token is wrong, revoked or lacks the plan; stop this workspace and alert.
    #[error("Intercom refused the credentials ({status} {code}): {message}")]
    Credentials {
        status: u16,
        code: String,
        message: String,
    },
    /// 409 on creating a contact: it exists already (possibly archived) with this id.
    #[error("a contact with these details exists already: {existing_id} (archived: {archived})")]
    Conflict { existing_id: String, archived: bool },
    /// 409 without a contact id in the message.
    #[error("Intercom reported a conflict: {message}")]
    OtherConflict { message: String },
    /// 410: the contact was merged; `canonical` is the surviving contact when Intercom says.
    #[error("the contact was merged into {canonical:?}")]
    Gone { canonical: Option<String> },
    /// 400, 404, 422 and other 4xx: the request itself is wrong; do not retry.
    #[error("Intercom refused the request ({status} {code}): {message}")]
    Permanent {
        status: u16,
        code: String,
        message: String,
    },
}

impl IntercomError {
    /// A 2xx answer Junction cannot interpret (not JSON, or without the fields it needs).
    /// Permanent: the same request will get the same answer, and retrying for hours would only
    /// hold the user's queue; the dead letter names what was wrong.
    pub fn unexpected(status: Option<u16>, detail: impl Into<String>) -> IntercomError {
        IntercomError::Permanent {
            status: status.unwrap_or(0),
            code: "junction_unexpected_response".into(),
            message: detail.into(),
        }
    }

    /// Whether sending the same request again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            IntercomError::Retryable { .. } | IntercomError::RateLimited { .. }
        )
    }

    /// Sorts an error response into its class.
    pub fn from_response(status: u16, headers: &HeaderMap, body: &[u8]) -> IntercomError {
        let (code, message) = first_error(body);
        match status {
            401 | 403 => IntercomError::Credentials {
                status,
                code,
                message,
            },
            409 => match existing_contact_id(&message) {
                Some(existing_id) => IntercomError::Conflict {
                    existing_id,
                    archived: message.to_ascii_lowercase().contains("archived"),
                },
                None => IntercomError::OtherConflict { message },
            },
            410 => IntercomError::Gone {
                canonical: headers
                    .get(reqwest::header::LINK)
                    .and_then(|v| v.to_str().ok())
                    .and_then(canonical_contact),
            },
            429 => IntercomError::RateLimited {
                reset: headers
                    .get("x-ratelimit-reset")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok()),
            },
            408 | 500..=599 => IntercomError::Retryable {
                status: Some(status),
                detail: format!("{status} {code}: {message}"),
            },
            _ => IntercomError::Permanent {
                status,
                code,
                message,
            },
        }
    }
}

/// The first `{code, message}` of Intercom's `error.list`; bodies that are not JSON (a 504 can
/// be an HTML page) yield `unknown` and a short excerpt.
fn first_error(body: &[u8]) -> (String, String) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let first = parsed.as_ref().and_then(|v| v["errors"].get(0));
    let code = first
        .and_then(|e| e["code"].as_str())
        .unwrap_or("unknown")
        .to_owned();
    let message = match first.and_then(|e| e["message"].as_str()) {
        Some(message) => message.to_owned(),
        None => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    };
    (code, message)
}

/// `…already exists with id=6762f0dd1bb69f9f2193bb83` → the id.
fn existing_contact_id(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("id=")?;
    let id: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    (!id.is_empty()).then_some(id)
}

/// `</contacts/abc>; rel="canonical"` → `abc`.
fn canonical_contact(link: &str) -> Option<String> {
    link.split(',')
        .find(|part| part.contains("canonical"))
        .and_then(|part| {
            let target = part
                .split(';')
                .next()?
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>');
            target
                .rsplit('/')
                .next()
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn classify(status: u16, body: &str) -> IntercomError {
        IntercomError::from_response(status, &HeaderMap::new(), body.as_bytes())
    }

    fn envelope(code: &str, message: &str) -> String {
        serde_json::json!({"type": "error.list", "request_id": null, "errors": [{"code": code, "message": message}]}).to_string()
    }

    #[test]
    fn conflicts_carry_the_existing_contact() {
        let live = classify(
            409,
            &envelope(
                "conflict",
                "A contact matching those details already exists with id=6762f0dd1bb69f9f2193bb83",
            ),
        );
        assert_eq!(
            live,
            IntercomError::Conflict {
                existing_id: "6762f0dd1bb69f9f2193bb83".into(),
                archived: false
            }
        );
        let archived = classify(
            409,
            &envelope(
                "conflict",
                "An archived contact matching those details already exists with id=abc123",
            ),
        );
        assert_eq!(
            archived,
            IntercomError::Conflict {
                existing_id: "abc123".into(),
                archived: true
            }
        );
        assert!(matches!(
            classify(409, &envelope("conflict", "Multiple existing users match")),
            IntercomError::OtherConflict { .. }
        ));
    }

    #[test]
    fn statuses_map_to_what_delivery_must_do() {
        assert!(matches!(
            classify(401, &envelope("unauthorized", "Access Token Invalid")),
            IntercomError::Credentials { status: 401, .. }
        ));
        assert!(matches!(
            classify(
                403,
                &envelope("api_plan_restricted", "Active subscription needed.")
            ),
            IntercomError::Credentials { .. }
        ));
        let permanent = classify(
            400,
            &envelope("parameter_invalid", "Custom attribute 'x' does not exist"),
        );
        assert_eq!(
            permanent.to_string(),
            "Intercom refused the request (400 parameter_invalid): Custom attribute 'x' does not exist"
        );
        assert!(!permanent.is_retryable());
        assert!(matches!(
            classify(404, &envelope("not_found", "User Not Found")),
            IntercomError::Permanent { status: 404, .. }
        ));
        for status in [408, 500, 502, 503] {
            assert!(classify(status, "").is_retryable(), "{status}");
        }
        let html = classify(504, "<html>Gateway Timeout</html>");
        assert!(html.is_retryable() && html.to_string().contains("Gateway Timeout"));
    }

    #[test]
    fn rate_limits_and_merges_read_their_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-reset", HeaderValue::from_static("1800000010"));
        headers.insert(
            reqwest::header::LINK,
            HeaderValue::from_static("</contacts/surviving1>; rel=\"canonical\""),
        );
        assert_eq!(
            IntercomError::from_response(429, &headers, b""),
            IntercomError::RateLimited {
                reset: Some(1_800_000_010)
            }
        );
        assert_eq!(
            IntercomError::from_response(410, &headers, b""),
            IntercomError::Gone {
                canonical: Some("surviving1".into())
            }
        );
    }
}
