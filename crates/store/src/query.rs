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

/// A page filtered by type alone (no index serves it) searches at most this many events of the
/// log, newest first: a page may then hold fewer rows than asked and still have a next cursor,
/// where the search goes on. Every page costs the same however large the log.
pub const TYPE_SEARCH_SPAN: i64 = 100_000;

impl EventQuery {
    /// Whether only a type filters it: no index serves that, so the search is bounded (see
    /// [`TYPE_SEARCH_SPAN`]).
    pub fn by_type_alone(&self) -> bool {
        self.kind.is_some()
            && self.user_id.is_none()
            && self.anonymous_id.is_none()
            && self.message_id.is_none()
    }
}

/// Where a bounded type search that starts below position `top` stops (at least 1).
pub fn type_search_floor(top: i64) -> i64 {
    (top - TYPE_SEARCH_SPAN).max(1)
}

impl<T> Page<T> {
    /// Like [`Page::from_rows`] for a search that stopped at position `searched_to` (the
    /// oldest position it looked at): when the page is not full and older positions remain,
    /// the next cursor continues from there.
    pub fn from_search(
        rows: Vec<T>,
        limit: usize,
        position: impl Fn(&T) -> i64,
        searched_to: Option<i64>,
    ) -> Self {
        let mut page = Page::from_rows(rows, limit, position);
        if page.next_cursor.is_none()
            && let Some(searched_to) = searched_to.filter(|&seq| seq > 1)
        {
            page.next_cursor = Some(searched_to.to_string());
        }
        page
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    /// A search that stopped short of the log's start says where to go on, even with a page
    /// that is not full (or empty); one that reached the start says nothing more is there.
    #[test]
    fn a_bounded_search_continues_where_it_stopped() {
        let full = Page::from_search(vec![9, 8, 7], 2, |n| *n, Some(5));
        assert_eq!(
            (full.items, full.next_cursor),
            (vec![9, 8], Some("8".into()))
        );
        let short = Page::from_search(vec![9], 2, |n| *n, Some(5));
        assert_eq!(
            (short.items, short.next_cursor),
            (vec![9], Some("5".into()))
        );
        let empty = Page::<i64>::from_search(vec![], 2, |n| *n, Some(5));
        assert_eq!(empty.next_cursor, Some("5".into()));
        let at_start = Page::from_search(vec![3], 2, |n| *n, Some(1));
        assert_eq!(at_start.next_cursor, None);
        let unbounded = Page::from_search(vec![3], 2, |n| *n, None);
        assert_eq!(unbounded.next_cursor, None);
    }
}
