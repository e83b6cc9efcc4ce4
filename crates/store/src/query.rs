//! Filters and cursor pages shared by every store implementation and the admin API.

use serde::{Deserialize, Serialize};

/// The most rows one page may hold.
pub const MAX_PAGE_SIZE: usize = 1_000;
/// Rows per page when the caller does not say.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// Which events to list. Every filter is optional; they combine with AND.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventQuery {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub message_id: Option<String>,
    /// Only events older than this log position (the `nextCursor` of the previous page).
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

/// Which refused messages to list.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RejectedQuery {
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

/// Reads a cursor; `None` for no cursor, `Err` with the rule for a bad one.
pub fn parse_cursor(cursor: Option<&str>) -> Result<Option<i64>, String> {
    match cursor {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| format!("cursor {text:?} is not a cursor this API returned")),
    }
}

/// The page size asked for, bounded.
pub fn page_size(limit: Option<usize>) -> Result<usize, String> {
    match limit {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
        Some(n) => Err(format!("limit {n} is outside 1..={MAX_PAGE_SIZE}")),
    }
}

/// One page of results, newest first, and the cursor of the next page when there is one.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched newest first: the extra row only tells
    /// that another page exists.
    pub fn from_rows(mut rows: Vec<T>, limit: usize, position: impl Fn(&T) -> i64) -> Self {
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if more {
            rows.last().map(|row| position(row).to_string())
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}
