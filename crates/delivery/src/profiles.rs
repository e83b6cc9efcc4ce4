//! The Segment Profile API client (optional): a user's traits and recent events from Segment
//! Unify, for expressions (`segment_profile.traits`, `segment_profile.events`). Without it,
//! expressions see Junction's own history of the user under the same name.
//!
//! `GET {host}/v1/spaces/{space}/collections/users/profiles/user_id:{id}/traits?limit=200` and
//! `…/events?limit=20`, HTTP Basic with the access token as user; a missing profile is a 404.

use junction_intercom::ApiPath;
use reqwest::Url;
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ProfileApiSettings {
    /// `https://profiles.segment.com` (US) or `https://profiles.euw1.segment.com` (EU).
    pub host: String,
    pub space_id: String,
    /// The space's access token (a secret).
    pub token: String,
}

pub struct ProfileApiClient {
    settings: ProfileApiSettings,
    host: Url,
    http: reqwest::Client,
}

#[derive(Debug, thiserror::Error)]
#[error("Segment Profile API: {0}")]
pub struct ProfileApiError(String);

impl ProfileApiClient {
    pub fn new(settings: ProfileApiSettings) -> Result<Self, ProfileApiError> {
        junction_intercom::install_tls_provider();
        let host = Url::parse(&settings.host)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| {
                ProfileApiError(format!("host {:?} is not an http(s) URL", settings.host))
            })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client");
        Ok(ProfileApiClient {
            settings,
            host,
            http,
        })
    }

    /// The profile of a user (by userId, else anonymousId) as expressions see it:
    /// `{traits, events: [{type, name, at}]}` (events newest first); `None` when Segment has
    /// no such profile.
    pub async fn fetch(
        &self,
        user_id: Option<&str>,
        anonymous_id: Option<&str>,
    ) -> Result<Option<Value>, ProfileApiError> {
        let id = match (user_id, anonymous_id) {
            (Some(id), _) => format!("user_id:{id}"),
            (None, Some(id)) => format!("anonymous_id:{id}"),
            (None, None) => return Ok(None),
        };
        // Built from segments (each id encoded as exactly one), never by formatting a URL.
        let profile = ApiPath::fixed("v1/spaces")
            .id(&self.settings.space_id)
            .and_then(|p| p.then("collections/users/profiles").id(&id))
            .map_err(|e| ProfileApiError(e.to_string()))?;
        let Some(traits) = self
            .get(profile.clone().then("traits").query("limit", "200"))
            .await?
        else {
            return Ok(None);
        };
        let events = self
            .get(profile.then("events").query("limit", "20"))
            .await?
            .unwrap_or_default();
        let events: Vec<Value> = events["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| json!({"type": e["type"], "name": e["event"].as_str().or(e["name"].as_str()), "at": e["timestamp"]}))
            .collect();
        Ok(Some(json!({"traits": traits["traits"], "events": events})))
    }

    async fn get(&self, path: ApiPath) -> Result<Option<Value>, ProfileApiError> {
        let response = self
            .http
            .get(path.url(&self.host))
            .basic_auth(&self.settings.token, Some(""))
            .send()
            .await
            .map_err(|_| ProfileApiError("unreachable".into()))?;
        match response.status().as_u16() {
            404 => Ok(None),
            200..=299 => response
                .json()
                .await
                .map(Some)
                .map_err(|e| ProfileApiError(format!("unreadable answer: {e}"))),
            status => Err(ProfileApiError(format!("answered {status}"))),
        }
    }
}
