//! `junction backfill PATH…`: loads historical Segment data into a running server — files of
//! JSON lines, gzipped or not, and directories of them, such as the layout Segment's S3
//! destination writes (`segment-logs/{source-id}/{received-day}/{file}.gz`, gzipped
//! newline-separated JSON). Lines go in batches to `/api/backfill`, which validates them as
//! `/v1/batch` does, stores them under the source `backfill` (a run started again after an
//! interruption re-sends them and they are recognised by messageId: each effect happens once),
//! and marks them so they are planned only by `--workflows` (all when not given) and delivered
//! in the bulk lane. A progress bar follows the sending, then the planning.

use crate::Failure;
use crate::config::Config;
use crate::reload::{server_url, unreachable, with_admin_token};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A batch stays below the server's 500 KB batch limit.
const BATCH_BYTES: usize = 400 * 1024;

/// Intercom's default app limit (10,000 requests a minute), for the estimate.
const INTERCOM_REQUESTS_PER_SECOND: f64 = 10_000.0 / 60.0;

pub struct BackfillArgs {
    pub paths: Vec<PathBuf>,
    pub workflows: Option<Vec<String>>,
    pub url: Option<String>,
    /// At most this many events per request (and never more than 400 KB).
    pub batch_events: usize,
}

/// Every file under `paths` (directories walked), in name order.
fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Failure> {
    let mut found = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path)
            .map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            found.extend(files(&entries)?);
        } else {
            found.push(path.clone());
        }
    }
    Ok(found)
}

/// The lines of a file, gunzipped when it is gzip (by its magic bytes, not its name).
fn lines(path: &Path) -> Result<Box<dyn BufRead>, Failure> {
    let open = || {
        std::fs::File::open(path).map_err(|e| Failure::Input(format!("{}: {e}", path.display())))
    };
    let mut magic = [0u8; 2];
    let gzip = open()?.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let file = open()?;
    Ok(if gzip {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    })
}

fn count(paths: &[PathBuf]) -> Result<u64, Failure> {
    let mut events = 0;
    for path in paths {
        for line in lines(path)?.lines() {
            let line = line.map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?;
            if !line.trim().is_empty() {
                events += 1;
            }
        }
    }
    Ok(events)
}

#[derive(Default)]
struct Tally {
    accepted: u64,
    duplicates: u64,
    refused: u64,
}

pub async fn run(config: &Config, args: BackfillArgs) -> Result<(), Failure> {
    let base = server_url(config, args.url.as_deref());
    let files = files(&args.paths)?;
    let total = count(&files)?;
    let minutes = total as f64 / INTERCOM_REQUESTS_PER_SECOND / 60.0;
    eprintln!(
        "{total} event(s) in {} file(s); at Intercom's default limit (10,000 requests a minute) and about one request per event, delivering them takes at least {minutes:.1} minute(s)",
        files.len()
    );
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} sent ({per_sec}, {eta} left) {msg}",
        )
        .expect("a valid template"),
    );
    let http = reqwest::Client::new();
    let mut tally = Tally::default();
    let mut batch: Vec<Value> = Vec::new();
    let mut bytes = 0;
    for path in &files {
        for (number, line) in lines(path)?.lines().enumerate() {
            let line = line.map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(&line) {
                Ok(message) => {
                    bytes += line.len() + 1;
                    batch.push(message);
                }
                Err(error) => {
                    bar.suspend(|| {
                        eprintln!(
                            "{}:{}: not JSON ({error}); skipped",
                            path.display(),
                            number + 1
                        )
                    });
                    tally.refused += 1;
                    bar.inc(1);
                }
            }
            if bytes >= BATCH_BYTES || batch.len() >= args.batch_events.max(1) {
                send(
                    &http,
                    config,
                    &base,
                    &args,
                    std::mem::take(&mut batch),
                    &mut tally,
                )
                .await?;
                bytes = 0;
                bar.set_position(tally.accepted + tally.duplicates + tally.refused);
                bar.set_message(summary(&tally));
            }
        }
    }
    if !batch.is_empty() {
        send(&http, config, &base, &args, batch, &mut tally).await?;
    }
    bar.set_position(tally.accepted + tally.duplicates + tally.refused);
    bar.finish_with_message(summary(&tally));
    // Planning follows ingest closely; delivery goes on in the server at Intercom's pace.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let cluster: Value = with_admin_token(config, http.get(format!("{base}/api/cluster")))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| Failure::Runtime(e.without_url().into()))?
            .json()
            .await
            .map_err(|e| Failure::Runtime(e.into()))?;
        if cluster["lagEvents"].as_i64() == Some(0) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "backfill planned: {}; delivery goes on in the server (junction runs list, /api/delivery)",
        summary(&tally)
    );
    Ok(())
}

fn summary(tally: &Tally) -> String {
    format!(
        "{} new, {} already loaded, {} refused",
        tally.accepted, tally.duplicates, tally.refused
    )
}

async fn send(
    http: &reqwest::Client,
    config: &Config,
    base: &str,
    args: &BackfillArgs,
    batch: Vec<Value>,
    tally: &mut Tally,
) -> Result<(), Failure> {
    let request = http
        .post(format!("{base}/api/backfill"))
        .json(&json!({"batch": batch, "workflows": args.workflows}));
    let response = with_admin_token(config, request)
        .send()
        .await
        .map_err(|e| unreachable(base, e))?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "the server refused a batch ({status}): {answer}"
        )));
    }
    tally.accepted += answer["accepted"].as_u64().unwrap_or(0);
    tally.duplicates += answer["duplicates"].as_u64().unwrap_or(0);
    tally.refused += answer["rejected"].as_u64().unwrap_or(0);
    Ok(())
}
