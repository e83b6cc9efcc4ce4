//! Request paths built from segments, never by formatting strings.
//!
//! Ids that go into Intercom URLs come from outside: a Segment `userId` is whatever a browser
//! sent, and ids Intercom returns are opaque strings. Formatted into a path, `alice?x=1`,
//! `alice#f` or `../<someone's id>` would change which resource a request addresses. An
//! [`ApiPath`] keeps fixed segments (written in code) apart from ids; when the URL is built each
//! id is percent-encoded as exactly one segment (`/`, `?`, `#` and `%` included), and an id that
//! no URL can carry as one segment (empty, `.` or `..`, which URL parsers resolve away) is
//! refused before anything is sent.

use crate::IntercomError;
use reqwest::Url;
use std::fmt;

/// A path below the API's base URL, with an optional query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPath {
    segments: Vec<Segment>,
    query: Vec<(&'static str, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Fixed(&'static str),
    Id(String),
}

impl ApiPath {
    /// A path written in code, such as `"contacts/search"` (slashes separate fixed segments).
    pub fn fixed(path: &'static str) -> ApiPath {
        ApiPath {
            segments: path
                .split('/')
                .filter(|s| !s.is_empty())
                .map(Segment::Fixed)
                .collect(),
            query: Vec::new(),
        }
    }

    /// Appends a value from outside as exactly one segment. Refused (permanently: sending it
    /// again cannot help) when no URL can carry it as one segment.
    pub fn id(mut self, id: &str) -> Result<ApiPath, IntercomError> {
        if id.is_empty() || id == "." || id == ".." {
            return Err(IntercomError::Permanent {
                status: 0,
                code: "junction_unaddressable_id".into(),
                message: format!(
                    "the id {id:?} cannot be addressed as one URL path segment; nothing was sent"
                ),
            });
        }
        self.segments.push(Segment::Id(id.to_owned()));
        Ok(self)
    }

    /// Appends fixed segments written in code.
    pub fn then(mut self, path: &'static str) -> ApiPath {
        self.segments.extend(
            path.split('/')
                .filter(|s| !s.is_empty())
                .map(Segment::Fixed),
        );
        self
    }

    /// Adds a query parameter (the value is encoded as form data).
    pub fn query(mut self, key: &'static str, value: &str) -> ApiPath {
        self.query.push((key, value.to_owned()));
        self
    }

    /// The full URL below `base` (whose own path, if any, is kept as a prefix).
    pub fn url(&self, base: &Url) -> Url {
        let mut url = base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("the base URL is an http(s) URL, checked when the client is built");
            path.pop_if_empty();
            for segment in &self.segments {
                match segment {
                    Segment::Fixed(s) => path.push(s),
                    Segment::Id(s) => path.push(s),
                };
            }
        }
        if self.query.is_empty() {
            url.set_query(None);
        } else {
            let mut pairs = url.query_pairs_mut();
            pairs.clear();
            for (key, value) in &self.query {
                pairs.append_pair(key, value);
            }
        }
        url
    }

    /// The path's shape with ids as `{}` (`/contacts/{}/notes`): what a request does, whatever
    /// the ids are. Decisions about a request (may it be repeated?) look at this, never at ids.
    pub fn shape(&self) -> String {
        let mut shape = String::new();
        for segment in &self.segments {
            shape.push('/');
            match segment {
                Segment::Fixed(s) => shape.push_str(s),
                Segment::Id(_) => shape.push_str("{}"),
            }
        }
        shape
    }
}

/// The encoded path and query, as it goes on the wire (what the run log records).
impl fmt::Display for ApiPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = Url::parse("http://x/").expect("a valid URL");
        let url = self.url(&base);
        f.write_str(url.path())?;
        if let Some(query) = url.query() {
            write!(f, "?{query}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use percent_encoding::percent_decode_str;
    use proptest::prelude::*;

    fn base() -> Url {
        Url::parse("https://api.intercom.io").unwrap()
    }

    #[test]
    fn hostile_ids_stay_inside_their_segment() {
        for id in [
            "alice?x=1",
            "alice#f",
            "../6762f0dd1bb69f9f2193bb83",
            "alice/../bob",
            "%2e%2e",
            "%2E.",
            "a b",
            "é",
        ] {
            let path = ApiPath::fixed("contacts/find_by_external_id")
                .id(id)
                .unwrap();
            let url = path.url(&base());
            assert_eq!(url.query(), None, "{id} → {url}");
            assert_eq!(url.fragment(), None, "{id} → {url}");
            let segments: Vec<_> = url.path_segments().unwrap().collect();
            assert_eq!(segments.len(), 3, "{id} → {url}");
            assert_eq!(percent_decode_str(segments[2]).decode_utf8().unwrap(), id);
        }
    }

    #[test]
    fn ids_no_url_can_carry_are_refused() {
        for id in ["", ".", ".."] {
            let error = ApiPath::fixed("contacts").id(id).unwrap_err();
            assert!(!error.is_retryable());
            assert!(error.to_string().contains("junction_unaddressable_id"));
        }
    }

    #[test]
    fn shape_hides_ids_and_display_shows_the_wire_form() {
        let path = ApiPath::fixed("contacts").id("a/b").unwrap().then("notes");
        assert_eq!(path.shape(), "/contacts/{}/notes");
        assert_eq!(path.to_string(), "/contacts/a%2Fb/notes");
        let listed = ApiPath::fixed("data_attributes").query("model", "contact&x");
        assert_eq!(listed.to_string(), "/data_attributes?model=contact%26x");
    }

    #[test]
    fn a_base_url_with_a_path_keeps_it_as_a_prefix() {
        let base = Url::parse("http://127.0.0.1:9/intercom/").unwrap();
        let url = ApiPath::fixed("contacts").id("x").unwrap().url(&base);
        assert_eq!(url.as_str(), "http://127.0.0.1:9/intercom/contacts/x");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// For any id, the URL addresses exactly the intended resource: the same number of
        /// segments, the id decoded back from exactly its own segment, no query, no fragment.
        #[test]
        fn any_id_parses_back_from_exactly_its_segment(id in any::<String>(), second in "\\PC*") {
            prop_assume!(!["", ".", ".."].contains(&id.as_str()));
            prop_assume!(!["", ".", ".."].contains(&second.as_str()));
            let path = ApiPath::fixed("contacts").id(&id).unwrap().then("companies").id(&second).unwrap();
            // Through the URL's text, as the HTTP client and the server see it.
            let url = Url::parse(path.url(&base()).as_str()).unwrap();
            prop_assert_eq!(url.query(), None);
            prop_assert_eq!(url.fragment(), None);
            let segments: Vec<_> = url.path_segments().unwrap().collect();
            prop_assert_eq!(segments.len(), 4);
            prop_assert_eq!(segments[0], "contacts");
            prop_assert_eq!(segments[2], "companies");
            prop_assert_eq!(percent_decode_str(segments[1]).decode_utf8().unwrap(), id.as_str());
            prop_assert_eq!(percent_decode_str(segments[3]).decode_utf8().unwrap(), second.as_str());
        }
    }
}
