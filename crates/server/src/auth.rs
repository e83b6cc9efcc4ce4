//! Who may send: Segment write keys (HTTP Basic user name, or `writeKey` in the body) for the
//! Tracking API, and the admin bearer token for `/api/*`. Secrets are compared in constant time
//! and never logged; events record the key's source name, not the key.

use crate::error::ApiError;
use axum::http::{HeaderMap, header};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// An accepted write key and the source name events sent with it are recorded under.
#[derive(Debug, Clone)]
pub struct WriteKey {
    pub key: String,
    pub source: String,
}

impl WriteKey {
    /// A key whose source name is derived from it: `wk_` and the first 12 hex digits of its
    /// SHA-256, stable across restarts and safe to show.
    pub fn unnamed(key: impl Into<String>) -> Self {
        let key = key.into();
        let source = fingerprint(&key);
        WriteKey { key, source }
    }
}

pub fn fingerprint(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    format!("wk_{}", &hex::encode(digest)[..12])
}

/// Source name used when no write keys are configured.
pub const OPEN_SOURCE: &str = "default";

#[derive(Debug)]
pub struct WriteKeys {
    keys: Vec<WriteKey>,
}

impl WriteKeys {
    pub fn new(keys: Vec<WriteKey>) -> Self {
        WriteKeys { keys }
    }

    /// Whether any write key is configured (without one, the Tracking API is open for trials).
    pub fn is_configured(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The source for a presented key. With no keys configured every sender is accepted.
    pub fn authorize(&self, presented: Option<&str>) -> Result<&str, ApiError> {
        if self.keys.is_empty() {
            return Ok(OPEN_SOURCE);
        }
        let Some(presented) = presented else {
            return Err(ApiError::unauthorized(
                "missing write key: send HTTP Basic auth with the write key as user name, or writeKey in the body",
            ));
        };
        // Compare against every key so timing does not tell which one was close.
        let mut found = None;
        for candidate in &self.keys {
            if bool::from(candidate.key.as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(candidate.source.as_str());
            }
        }
        found.ok_or_else(|| ApiError::unauthorized("unknown write key"))
    }
}

/// The write key in an `Authorization: Basic` header: the user name, with or without the
/// trailing colon. `Ok(None)` when there is no Authorization header.
pub fn basic_write_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || {
        ApiError::unauthorized("malformed Authorization header: expected Basic base64(writeKey:)")
    };
    let value = value.to_str().map_err(|_| malformed())?.trim();
    let (scheme, credentials) = value.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ApiError::unauthorized(
            "unsupported Authorization scheme: use Basic with the write key as user name",
        ));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim())
        .map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let user = decoded
        .split_once(':')
        .map_or(decoded.as_str(), |(user, _)| user);
    Ok(Some(user.to_owned()).filter(|k| !k.is_empty()))
}

/// Checks `Authorization: Bearer <admin token>` when a token is configured.
pub fn require_admin(expected: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match presented {
        Some(token) if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => Ok(()),
        Some(_) => Err(ApiError::unauthorized("wrong admin token")),
        None => Err(ApiError::unauthorized(
            "the admin API needs Authorization: Bearer <admin.token>",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    fn basic(credentials: &str) -> HeaderMap {
        with_auth(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        ))
    }

    #[test]
    fn basic_auth_takes_the_user_name_with_or_without_the_colon() {
        assert_eq!(
            basic_write_key(&basic("wk:")).unwrap().as_deref(),
            Some("wk")
        );
        assert_eq!(
            basic_write_key(&basic("wk")).unwrap().as_deref(),
            Some("wk")
        );
        assert_eq!(
            basic_write_key(&basic("wk:ignored")).unwrap().as_deref(),
            Some("wk")
        );
        assert_eq!(basic_write_key(&basic(":")).unwrap(), None);
        assert_eq!(basic_write_key(&HeaderMap::new()).unwrap(), None);
        assert!(basic_write_key(&with_auth("Basic !!!")).is_err());
        assert!(basic_write_key(&with_auth("Bearer x")).is_err());
    }

    #[test]
    fn keys_map_to_their_source_and_unknown_keys_are_refused() {
        let keys = WriteKeys::new(vec![
            WriteKey {
                key: "a".into(),
                source: "web".into(),
            },
            WriteKey::unnamed("b"),
        ]);
        assert_eq!(keys.authorize(Some("a")).unwrap(), "web");
        assert_eq!(keys.authorize(Some("b")).unwrap(), fingerprint("b"));
        assert!(keys.authorize(Some("c")).is_err());
        assert!(keys.authorize(None).is_err());
        assert_eq!(WriteKeys::new(vec![]).authorize(None).unwrap(), OPEN_SOURCE);
        assert!(!fingerprint("secret-key").contains("secret"));
    }

    #[test]
    fn the_admin_token_is_a_bearer_token() {
        assert!(require_admin(None, &HeaderMap::new()).is_ok());
        assert!(require_admin(Some("t"), &with_auth("Bearer t")).is_ok());
        assert!(require_admin(Some("t"), &with_auth("Bearer u")).is_err());
        assert!(require_admin(Some("t"), &HeaderMap::new()).is_err());
    }
}
