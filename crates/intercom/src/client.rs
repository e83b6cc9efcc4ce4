//! The HTTP client: configuration, TLS, headers, the rate gate and error classification.

use crate::error::IntercomError;
use crate::rate::RateGate;
use reqwest::Method;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Where and how to reach one Intercom workspace.
#[derive(Clone)]
pub struct IntercomConfig {
    /// `https://api.intercom.io`, `https://api.eu.intercom.io`, `https://api.au.intercom.io`, or
    /// an emulator.
    pub base_url: String,
    /// The workspace's access token. Never logged.
    pub token: String,
    /// Pinned `Intercom-Version`; 2.14 by default.
    pub version: String,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl IntercomConfig {
    pub fn new(base_url: impl Into<String>, token: impl Into<String>) -> Self {
        IntercomConfig {
            base_url: base_url.into(),
            token: token.into(),
            version: "2.14".into(),
            timeout: Duration::from_secs(15),
        }
    }
}

impl fmt::Debug for IntercomConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntercomConfig")
            .field("base_url", &self.base_url)
            .field("token", &"***")
            .field("version", &self.version)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Clone, Debug)]
pub struct IntercomClient {
    http: reqwest::Client,
    config: Arc<IntercomConfig>,
    gate: Arc<RateGate>,
}

impl IntercomClient {
    pub fn new(config: IntercomConfig) -> Result<Self, reqwest::Error> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(config.timeout)
            .user_agent(concat!("junction/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(IntercomClient {
            http,
            config: Arc::new(config),
            gate: Arc::new(RateGate::default()),
        })
    }

    pub fn rate_gate(&self) -> &RateGate {
        &self.gate
    }

    /// Sends one request through the rate gate and returns the JSON body (`Null` for an empty
    /// one, as `POST /events` answers), or the classified error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, IntercomError> {
        self.gate.acquire().await;
        let url = format!("{}{path}", self.config.base_url.trim_end_matches('/'));
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(&self.config.token)
            .header("Intercom-Version", &self.config.version)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                self.gate.observe_no_response();
                return Err(transport(error));
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        self.gate.observe(status, &headers);
        let bytes = response.bytes().await.map_err(transport)?;
        if !(200..300).contains(&status) {
            return Err(IntercomError::from_response(status, &headers, &bytes));
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| IntercomError::Retryable {
            status: Some(status),
            detail: format!("response was not JSON: {e}"),
        })
    }
}

/// Timeouts, refused and dropped connections: the request may not have been processed.
fn transport(error: reqwest::Error) -> IntercomError {
    IntercomError::Retryable {
        status: None,
        detail: format!("transport: {error}"),
    }
}
