//! Junction's Intercom REST API client.
//!
//! - [`IntercomClient`]: base URL (US, EU, AU or the emulator), bearer token, pinned
//!   `Intercom-Version`; TLS through rustls with the Mozilla roots compiled in.
//! - [`IntercomError`]: every failure sorted into the class that decides what delivery does
//!   (retry, wait for the window, stop the workspace, adopt the existing contact, follow a merge,
//!   or dead-letter).
//! - [`RateGate`]: one budget per workspace token, fed by `X-RateLimit-*` headers, so requests
//!   never go into an exhausted window.
//!
//! - [`ContactResolver`]: the one contact for a Segment identity (identity map, external_id,
//!   email, create, adopt on 409), serialised per identity.
//!
//! - [`attributes`]: Segment traits made safe for Intercom (types, unknown attributes, nesting,
//!   nulls, the 250-attribute limit).
//!
//! - [`concurrency`]: how many requests may be in flight, adapted to latency (AIMD).

pub mod attributes;
mod client;
pub mod concurrency;
pub mod contacts;
mod error;
pub mod operations;
pub mod path;
mod rate;
pub mod recorder;
pub mod resolve;
pub mod timestamps;

pub use client::{
    BuildError, IntercomClient, IntercomConfig, RetryPolicy, rate_limited_responses, repeatable,
};
pub use error::IntercomError;
pub use path::ApiPath;
pub use rate::{BACKFILL_SHARE, RateGate, as_backfill};
pub use resolve::{ContactResolver, Identity, Resolution, ResolveError, ResolvedBy};

/// Makes rustls with *ring* the process-wide TLS provider, which any other `reqwest::Client` in
/// the process then uses. reqwest is built with `rustls-no-provider` (so the binary carries one
/// TLS stack, not two); a client built without a provider in place would panic. Safe to call
/// more than once.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
