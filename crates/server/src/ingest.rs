//! The Segment HTTP Tracking API: `/v1/{identify,track,page,screen,group,alias}`, the
//! analytics.js short paths `/v1/{i,t,p,s,g,a}`, and `/v1/{batch,import,b}`.
//!
//! Every request is authenticated, validated and committed before it is answered; 200 means
//! the events are on disk. Replies follow Segment's: 200 for anything that parses (with the
//! count of accepted, duplicate and rejected messages for a batch), 400 for oversize or
//! malformed bodies and for an invalid single message, 401 for an unknown write key.

use crate::body::{self, Limit};
use crate::error::ApiError;
use crate::{AppState, auth};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use junction_model::{Envelope, MessageType, parse_batch, parse_single};
use junction_store::{AppendBatch, AppendReceipt, Appended};
use serde_json::{Value, json};

pub async fn single(
    State(state): State<AppState>,
    Path(call): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let Some(kind) = MessageType::from_path(&call) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no endpoint /v1/{call}: use identify, track, page, screen, group, alias, delete, batch or import"
            ),
        ));
    };
    let received_at = Utc::now();
    let header_source = authenticate_header(&state, &headers)?;
    let bytes = body::read(&headers, body, Limit::MESSAGE).await?;
    let envelope = parse_single(&bytes, kind, received_at)?;
    let source = source_for(&state, header_source, &envelope)?;
    store_single(&state, source, received_at, envelope).await
}

pub async fn batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let received_at = Utc::now();
    let header_source = authenticate_header(&state, &headers)?;
    let bytes = body::read(&headers, body, Limit::BATCH).await?;
    let envelope = parse_batch(&bytes, received_at)?;
    let source = source_for(&state, header_source, &envelope)?;
    store_batch(&state, source, received_at, envelope).await
}

/// The source of a Basic-auth key, checked before the body is read so a wrong key costs no
/// parsing; `None` when the request has no Authorization header.
fn authenticate_header(state: &AppState, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    auth::basic_write_key(headers)?
        .map(|key| {
            state
                .inner
                .write_keys
                .authorize(Some(&key))
                .map(str::to_owned)
        })
        .transpose()
}

/// The source the events are recorded under: the header's, else the body `writeKey`'s.
fn source_for(
    state: &AppState,
    header_source: Option<String>,
    envelope: &Envelope,
) -> Result<String, ApiError> {
    match header_source {
        Some(source) => Ok(source),
        None => state
            .inner
            .write_keys
            .authorize(envelope.write_key.as_deref())
            .map(str::to_owned),
    }
}

/// Commits a one-message request and answers for it: 200, or 400 naming the field and rule
/// when the message was refused (the refusal itself is kept in the rejected log).
pub(crate) async fn store_single(
    state: &AppState,
    source: String,
    received_at: DateTime<Utc>,
    envelope: Envelope,
) -> Result<Json<Value>, ApiError> {
    let refusal = envelope.rejected.first().map(|r| r.error.clone());
    commit(state, source, received_at, envelope).await?;
    match refusal {
        Some(error) => Err(ApiError::bad_request(
            error.code,
            &error.field,
            error.to_string(),
        )),
        None => Ok(Json(json!({ "success": true }))),
    }
}

/// Commits a batch and answers with what happened to its messages, refusals by position.
pub(crate) async fn store_batch(
    state: &AppState,
    source: String,
    received_at: DateTime<Utc>,
    envelope: Envelope,
) -> Result<Json<Value>, ApiError> {
    let errors: Vec<Value> = envelope
        .rejected
        .iter()
        .map(|r| {
            json!({
                "index": r.index,
                "code": r.error.code,
                "field": r.error.field,
                "message": r.error.to_string(),
            })
        })
        .collect();
    let receipt = commit(state, source, received_at, envelope).await?;
    Ok(Json(json!({
        "success": true,
        "accepted": receipt.stored(),
        "duplicates": receipt.duplicates(),
        "rejected": errors.len(),
        "errors": errors,
    })))
}

/// Commits the envelope (valid messages to the log, refused ones to the rejected log) and
/// counts what happened.
pub(crate) async fn commit(
    state: &AppState,
    source: String,
    received_at: DateTime<Utc>,
    envelope: Envelope,
) -> Result<AppendReceipt, ApiError> {
    metrics::histogram!("junction_ingest_request_messages")
        .record((envelope.messages.len() + envelope.rejected.len()) as f64);
    let kinds: Vec<MessageType> = envelope.messages.iter().map(|m| m.kind).collect();
    // The live tail's view of what is about to be stored, built only while someone taps.
    let tapped: Vec<junction_delivery::TapEntry> = match &state.inner.tap {
        Some(tap) if tap.listening() => envelope
            .messages
            .iter()
            .map(|m| junction_delivery::TapEntry::Event {
                at: junction_delivery::tap::now(),
                message_id: m.message_id.clone(),
                kind: m.kind.as_str().to_owned(),
                user: m.identity().to_owned(),
                name: m.event.clone(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let rejected_kinds: Vec<Option<String>> =
        envelope.rejected.iter().map(|r| r.kind.clone()).collect();
    let receipt = state
        .store()
        .append(AppendBatch::new(
            source,
            received_at,
            envelope.messages,
            envelope.rejected,
        ))
        .await?;
    if receipt.stored() > 0 {
        state.events_committed();
        state
            .inner
            .activity
            .record_events(received_at.timestamp_millis(), receipt.stored());
    }
    count_outcomes(&kinds, &receipt, &rejected_kinds);
    if let Some(tap) = &state.inner.tap {
        for (entry, outcome) in tapped.into_iter().zip(&receipt.events) {
            if *outcome != Appended::Duplicate {
                tap.publish(entry);
            }
        }
    }
    Ok(receipt)
}

/// One counter increment per (type, outcome) and request, not per event.
fn count_outcomes(kinds: &[MessageType], receipt: &AppendReceipt, rejected: &[Option<String>]) {
    let mut counts = [[0u64; 2]; MessageType::ALL.len()];
    for (kind, outcome) in kinds.iter().zip(&receipt.events) {
        let slot = MessageType::ALL.iter().position(|k| k == kind).unwrap_or(0);
        counts[slot][usize::from(*outcome == Appended::Duplicate)] += 1;
    }
    for (kind, [accepted, duplicate]) in MessageType::ALL.iter().zip(counts) {
        if accepted > 0 {
            metrics::counter!("junction_events_total", "type" => kind.as_str(), "outcome" => "accepted")
                .increment(accepted);
        }
        if duplicate > 0 {
            metrics::counter!("junction_events_total", "type" => kind.as_str(), "outcome" => "duplicate")
                .increment(duplicate);
        }
    }
    for kind in rejected {
        let kind = kind
            .as_deref()
            .and_then(|k| k.parse::<MessageType>().ok())
            .map_or("unknown", MessageType::as_str);
        metrics::counter!("junction_events_total", "type" => kind, "outcome" => "rejected")
            .increment(1);
    }
}
