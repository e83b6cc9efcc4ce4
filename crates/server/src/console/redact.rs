//! Webhook URLs are credentials (a Slack incoming webhook's path is its secret): whatever the
//! console shows of one is its scheme and host only.

/// `https://hooks.slack.com/services/T0/B0/XYZ` → `https://hooks.slack.com/…`; text that is
/// not a URL is shown as `…`.
pub fn url_host_only(url: &str) -> String {
    match reqwest_free_parse(url) {
        Some((scheme, host)) => format!("{scheme}://{host}/…"),
        None => "…".to_owned(),
    }
}

/// Every URL in `text` (a workflow's YAML) with its path, query and credentials hidden.
pub fn urls_in_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = ["https://", "http://"]
        .iter()
        .filter_map(|scheme| rest.find(scheme))
        .min()
    {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ')' | '>' | '<'))
            .unwrap_or(tail.len());
        let url = &tail[..end];
        // Template expressions inside a URL are not secrets, but cannot be parsed: hide it all.
        out.push_str(&url_host_only(url));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The scheme and host of an absolute http(s) URL, without credentials.
fn reqwest_free_parse(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    (!host.is_empty() && !host.contains("{{")).then_some((scheme, host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_secrets_never_survive() {
        assert_eq!(
            url_host_only("https://hooks.slack.com/services/T0/B0/XYZ"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            url_host_only("https://user:pw@example.com/x?token=1"),
            "https://example.com/…"
        );
        assert_eq!(url_host_only("{{ vars.alert_url }}"), "…");
        let yaml = "url: \"https://hooks.slack.com/services/T0/B0/XYZ\"\nother: http://10.0.0.1:9/a?k=s 'x'";
        let shown = urls_in_text(yaml);
        assert!(!shown.contains("XYZ") && !shown.contains("k=s"), "{shown}");
        assert!(
            shown.contains("https://hooks.slack.com/…") && shown.contains("http://10.0.0.1:9/…")
        );
    }
}
