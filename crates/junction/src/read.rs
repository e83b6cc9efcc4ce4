//! `junction events …` and `junction rejected …`: the operator's view of the logs, read straight
//! from the store (safe while the server runs: SQLite readers never block the writer).

use crate::Failure;
use crate::cli::{ConfigArg, EventsCommand, RejectedCommand};
use crate::config::Config;
use anyhow::Context;
use junction_store::{
    EventQuery, Page, RejectedQuery, RejectedRecord, Store, StoreError, StoredEvent,
};
use std::path::Path;
use std::sync::Arc;

type Loader = fn(Option<&Path>) -> Result<Config, Failure>;

pub async fn events(command: EventsCommand, load: Loader) -> Result<(), Failure> {
    match command {
        EventsCommand::List(args) => {
            let store = open(&args.config, load).await?;
            let page = store
                .events(EventQuery {
                    kind: args.kind,
                    user_id: args.user_id,
                    anonymous_id: args.anonymous_id,
                    message_id: args.message_id,
                    cursor: args.cursor,
                    limit: Some(args.limit),
                })
                .await
                .map_err(query_failure)?;
            if args.json {
                print_json(&page)?;
            } else {
                print!("{}", events_table(&page));
            }
            Ok(())
        }
        EventsCommand::Show(args) => {
            let store = open(&args.config, load).await?;
            match store.event(args.seq).await.map_err(query_failure)? {
                Some(event) => print_json(&event),
                None => Err(Failure::Input(format!(
                    "no event {} in the store",
                    args.seq
                ))),
            }
        }
    }
}

pub async fn rejected(command: RejectedCommand, load: Loader) -> Result<(), Failure> {
    let RejectedCommand::List(args) = command;
    let store = open(&args.config, load).await?;
    let page = store
        .rejected(RejectedQuery {
            cursor: args.cursor,
            limit: Some(args.limit),
        })
        .await
        .map_err(query_failure)?;
    if args.json {
        print_json(&page)
    } else {
        print!("{}", rejected_table(&page));
        Ok(())
    }
}

pub(crate) async fn open(config: &ConfigArg, load: Loader) -> Result<Arc<dyn Store>, Failure> {
    let config = load(config.config.as_deref())?;
    junction_store::open(&config.store.0, config.store_options())
        .await
        .with_context(|| {
            format!(
                "opening the store {}",
                junction_store::redact_url(&config.store.0)
            )
        })
        .map_err(Failure::Runtime)
}

pub(crate) fn query_failure(error: StoreError) -> Failure {
    match error {
        StoreError::InvalidQuery(rule) => Failure::Input(rule),
        other => Failure::Runtime(other.into()),
    }
}

pub(crate) fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure::Runtime(e.into()))?;
    println!("{text}");
    Ok(())
}

/// A page of events as an aligned table, with the command for the next page.
pub fn events_table(page: &Page<StoredEvent>) -> String {
    let rows = page
        .items
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                junction_model::timestamp::format(e.received_at),
                e.kind.clone(),
                e.identity.clone(),
                e.event.clone().unwrap_or_else(|| "-".into()),
                e.message_id.clone(),
                e.source.clone(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "SEQ",
            "RECEIVED",
            "TYPE",
            "IDENTITY",
            "EVENT",
            "MESSAGE_ID",
            "SOURCE",
        ],
        rows,
    );
    if let Some(cursor) = &page.next_cursor {
        out.push_str(&format!("more: --cursor {cursor}\n"));
    }
    out
}

pub fn rejected_table(page: &Page<RejectedRecord>) -> String {
    let rows = page
        .items
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                junction_model::timestamp::format(r.received_at),
                r.source.clone(),
                r.kind.clone().unwrap_or_else(|| "-".into()),
                r.message_id.clone().unwrap_or_else(|| "-".into()),
                format!("{}: {}", r.field, r.reason),
            ]
        })
        .collect();
    let mut out = table(
        &["ID", "RECEIVED", "SOURCE", "TYPE", "MESSAGE_ID", "REASON"],
        rows,
    );
    if let Some(cursor) = &page.next_cursor {
        out.push_str(&format!("more: --cursor {cursor}\n"));
    }
    out
}

pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ");
        text.truncate(text.trim_end().len());
        text + "\n"
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    if rows.is_empty() {
        out.push_str("(none)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    #[test]
    fn tables_align_and_point_to_the_next_page() {
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let event = |seq: i64, kind: &str, event: Option<&str>| StoredEvent {
            seq,
            source: "web".into(),
            message_id: format!("m-{seq}"),
            kind: kind.into(),
            identity: "user-1".into(),
            user_id: Some("user-1".into()),
            anonymous_id: None,
            event: event.map(str::to_owned),
            timestamp: at,
            received_at: at,
            body: serde_json::json!({}),
        };
        let page = Page {
            items: vec![
                event(12, "track", Some("Signed In")),
                event(11, "identify", None),
            ],
            next_cursor: Some("11".into()),
        };
        insta::assert_snapshot!(events_table(&page), @r"
        SEQ  RECEIVED                  TYPE      IDENTITY  EVENT      MESSAGE_ID  SOURCE
        12   2027-01-15T08:00:00.000Z  track     user-1    Signed In  m-12        web
        11   2027-01-15T08:00:00.000Z  identify  user-1    -          m-11        web
        more: --cursor 11
        ");
        let empty: Page<RejectedRecord> = Page {
            items: vec![],
            next_cursor: None,
        };
        insta::assert_snapshot!(rejected_table(&empty), @r"
        ID  RECEIVED  SOURCE  TYPE  MESSAGE_ID  REASON
        (none)
        ");
    }
}
