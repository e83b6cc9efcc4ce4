//! Console sessions: the admin token is exchanged once, at sign-in, for a random session id
//! held in an HttpOnly, SameSite=Strict cookie. Sessions live in this node's memory and expire
//! after [`SESSION_LIFETIME`]; signing out removes the session at once. Each session has its
//! own CSRF token, which every form that changes something carries back.

use axum::http::{HeaderMap, header};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const COOKIE: &str = "junction_console";
/// How long a session lasts after sign-in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// At most this many sessions at once (the oldest go first): sign-ins cannot grow memory.
const MAX_SESSIONS: usize = 1_000;

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub csrf: String,
    expires: Instant,
}

#[derive(Debug, Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

/// 244 random bits as text (two v4 UUIDs, from the operating system's generator).
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Sessions {
    /// Starts a session; its id (for the cookie).
    pub fn start(&self) -> String {
        let id = random_token();
        let mut sessions = self.by_id.lock().expect("console sessions");
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                csrf: random_token(),
                expires: now + SESSION_LIFETIME,
            },
        );
        id
    }

    /// The live session the request's cookie names.
    pub fn of(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie(headers, COOKIE)?;
        let sessions = self.by_id.lock().expect("console sessions");
        let session = sessions.get(id)?;
        (session.expires > Instant::now()).then(|| (id.to_owned(), session.clone()))
    }

    pub fn end(&self, id: &str) {
        self.by_id.lock().expect("console sessions").remove(id);
    }
}

impl Session {
    /// Whether a form's CSRF token is this session's (compared in constant time).
    pub fn accepts(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|token| bool::from(token.as_bytes().ct_eq(self.csrf.as_bytes())))
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// `Set-Cookie` for a new session. `Secure` when the request came over HTTPS (as a proxy in
/// front says): a plain-HTTP console on a private address must still work.
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_session_is_found_by_its_cookie_until_it_ends() {
        let sessions = Sessions::default();
        let id = sessions.start();
        let headers = with_cookie(&format!("other=1; {COOKIE}={id}"));
        let (found, session) = sessions.of(&headers).unwrap();
        assert_eq!(found, id);
        assert!(session.accepts(Some(&session.csrf)));
        assert!(!session.accepts(Some("guess")) && !session.accepts(None));
        assert!(
            sessions
                .of(&with_cookie(&format!("{COOKIE}=forged")))
                .is_none()
        );
        sessions.end(&id);
        assert!(sessions.of(&headers).is_none());
    }
}
