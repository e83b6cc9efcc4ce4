//! `junction tap`: a running server's live tail in the terminal — events as they arrive, the
//! actions planned for them, and with `--calls` the calls delivery makes — read from
//! `/api/tap` (server-sent events) until Ctrl-C. The server drops what a slow reader cannot
//! take and says how many; so does this.

use crate::Failure;
use crate::config::Config;
use crate::reload::{server_url, unreachable, with_admin_token};
use serde_json::Value;

pub struct TapArgs {
    pub user: Option<String>,
    pub workflow: Option<String>,
    pub kind: Option<String>,
    pub calls: bool,
    pub json: bool,
    pub url: Option<String>,
}

pub async fn run(config: &Config, args: TapArgs) -> Result<(), Failure> {
    let base = server_url(config, args.url.as_deref());
    let mut url = reqwest::Url::parse(&format!("{base}/api/tap"))
        .map_err(|e| Failure::Input(format!("--url {base}: {e}")))?;
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in [
            ("user", &args.user),
            ("workflow", &args.workflow),
            ("type", &args.kind),
        ] {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
        if args.calls {
            query.append_pair("calls", "true");
        }
    }
    let mut response = with_admin_token(config, reqwest::Client::new().get(url))
        .send()
        .await
        .map_err(|e| unreachable(&base, e))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(Failure::Runtime(anyhow::anyhow!(
            "the server at {base} answered {status}: {body}"
        )));
    }
    // One listener for the whole tail, registered before the user is told to press Ctrl-C: a
    // listener made afresh on each turn of the loop would miss a Ctrl-C arriving between turns.
    let mut interrupt = ctrl_c_listener()?;
    eprintln!("tapping {base} (Ctrl-C to stop)");
    let mut pending = String::new();
    let mut event = String::new();
    let mut shown = 0u64;
    loop {
        let chunk = tokio::select! {
            chunk = response.chunk() => chunk,
            _ = interrupt.recv() => break,
        };
        let Some(chunk) = chunk.map_err(|e| Failure::Runtime(e.without_url().into()))? else {
            eprintln!("the server ended the tail (it is stopping)");
            break;
        };
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find('\n') {
            let line = pending[..end].trim_end_matches('\r').to_owned();
            pending.drain(..=end);
            if let Some(name) = line.strip_prefix("event:") {
                event = name.trim().to_owned();
            } else if let Some(data) = line.strip_prefix("data:") {
                let data = data.trim();
                match event.as_str() {
                    "dropped" => eprintln!("… {data} entries dropped: this reader fell behind"),
                    _ if args.json => println!("{data}"),
                    _ => {
                        if let Ok(entry) = serde_json::from_str::<Value>(data) {
                            println!("{}", line_of(&entry));
                        }
                    }
                }
                shown += 1;
            }
        }
    }
    eprintln!("{shown} entries shown");
    Ok(())
}

/// SIGINT, listened for from now on.
fn ctrl_c_listener() -> Result<tokio::signal::unix::Signal, Failure> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("cannot listen for Ctrl-C: {e}")))
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
}

/// One entry as a line: time, what, and its particulars.
fn line_of(entry: &Value) -> String {
    let at = entry["at"]
        .as_str()
        .map_or("", |at| at.get(11..23).unwrap_or(at));
    match entry["what"].as_str() {
        Some("event") => {
            let name = entry["name"]
                .as_str()
                .map(|n| format!(" {n:?}"))
                .unwrap_or_default();
            format!(
                "{at}  event    {}{name}  user {}  ({})",
                text(&entry["type"]),
                text(&entry["user"]),
                text(&entry["messageId"])
            )
        }
        Some("planned") => format!(
            "{at}  planned  {} by {}  user {}  [{}]",
            text(&entry["kind"]),
            text(&entry["workflow"]),
            text(&entry["user"]),
            text(&entry["action"])
        ),
        Some("call") => format!(
            "{at}  call     {} {} {} {} ms  user {}  ({})",
            text(&entry["method"]),
            text(&entry["path"]),
            entry["status"]
                .as_u64()
                .map_or("no answer".to_owned(), |s| s.to_string()),
            entry["ms"],
            text(&entry["user"]),
            text(&entry["workflow"])
        ),
        _ => entry.to_string(),
    }
}
