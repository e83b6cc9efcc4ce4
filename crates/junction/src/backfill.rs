//! `junction backfill PATH…`: loads historical Segment data into a running server — files of
//! JSON lines, gzipped or not, and directories of them, such as the layout Segment's S3
//! destination writes (`segment-logs/{source-id}/{received-day}/{file}.gz`, gzipped
//! newline-separated JSON). Lines go in batches to `/api/backfill`, which validates them as
//! `/v1/batch` does, stores them under the source `backfill` (a run started again after an
//! interruption re-sends them and they are recognised by messageId: each effect happens once),
//! and marks them so they are planned only by `--workflows` (all when not given) and delivered
//! in the backfill lane. The server takes batches no faster than delivery goes (it answers 429
//! `backfill_ahead` and the batch goes again a moment later), and the progress bar shows events
//! delivered, read and planned (`GET /api/backfill`) until the last one is delivered.

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
    /// Events read from the files (refused ones included).
    read: u64,
    accepted: u64,
    duplicates: u64,
    refused: u64,
}

/// What the server says is still to do (`GET /api/backfill`).
#[derive(Default, Clone, Copy)]
struct Behind {
    unplanned: u64,
    undelivered: u64,
}

/// The server's answer to a batch.
enum Sent {
    Taken,
    /// Planning or delivery is behind: the same batch goes again in a moment.
    Ahead,
}

/// How often the CLI asks how far planning and delivery are, and how long it waits before
/// sending a batch the server found too early again.
const POLL: Duration = Duration::from_millis(250);
/// How long the CLI waits for delivery after the last batch without seeing it move.
const STALLED: Duration = Duration::from_secs(60);

pub async fn run(config: &Config, args: BackfillArgs) -> Result<(), Failure> {
    let base = server_url(config, args.url.as_deref());
    let files = files(&args.paths)?;
    let total = count(&files)?;
    let share = junction_intercom::BACKFILL_SHARE;
    let minutes = total as f64
        / (INTERCOM_REQUESTS_PER_SECOND * f64::from(share.0) / f64::from(share.1))
        / 60.0;
    eprintln!(
        "{total} event(s) in {} file(s); a backfill takes four fifths of Intercom's default limit (10,000 requests a minute), so at about one request per event delivering them takes at least {minutes:.1} minute(s)",
        files.len()
    );
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} delivered ({per_sec}, {eta} left) {msg}",
        )
        .expect("a valid template"),
    );
    let http = reqwest::Client::new();
    let progress = Progress {
        http: &http,
        config,
        base: &base,
        bar: &bar,
    };
    let mut tally = Tally::default();
    let mut batch: Vec<Value> = Vec::new();
    let mut bytes = 0;
    for path in &files {
        for (number, line) in lines(path)?.lines().enumerate() {
            let line = line.map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?;
            if line.trim().is_empty() {
                continue;
            }
            tally.read += 1;
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
                }
            }
            if bytes >= BATCH_BYTES || batch.len() >= args.batch_events.max(1) {
                progress
                    .send(&args, std::mem::take(&mut batch), &mut tally)
                    .await?;
                bytes = 0;
            }
        }
    }
    if !batch.is_empty() {
        progress.send(&args, batch, &mut tally).await?;
    }
    // The last batches are planned and delivered in the server: follow them while they move.
    let mut last = progress.show(&tally).await?;
    let mut moved = Instant::now();
    while last.unplanned + last.undelivered > 0 && moved.elapsed() < STALLED {
        tokio::time::sleep(POLL).await;
        let now = progress.show(&tally).await?;
        if now.unplanned + now.undelivered < last.unplanned + last.undelivered {
            moved = Instant::now();
        }
        last = now;
    }
    bar.finish();
    if last.unplanned + last.undelivered > 0 {
        eprintln!(
            "backfill sent: {}; delivery has not moved for {} s ({} event(s) to plan, {} to deliver) and goes on in the server (junction runs list, /api/delivery)",
            summary(&tally),
            STALLED.as_secs(),
            last.unplanned,
            last.undelivered
        );
    } else {
        eprintln!("backfill delivered: {}", summary(&tally));
    }
    Ok(())
}

fn summary(tally: &Tally) -> String {
    format!(
        "{} new, {} already loaded, {} refused",
        tally.accepted, tally.duplicates, tally.refused
    )
}

/// Talks to the server and keeps the bar up to date.
struct Progress<'a> {
    http: &'a reqwest::Client,
    config: &'a Config,
    base: &'a str,
    bar: &'a indicatif::ProgressBar,
}

impl Progress<'_> {
    /// Sends a batch, again and again while the server says the backfill is ahead of
    /// delivery, updating the bar meanwhile.
    async fn send(
        &self,
        args: &BackfillArgs,
        batch: Vec<Value>,
        tally: &mut Tally,
    ) -> Result<(), Failure> {
        let body = json!({"batch": batch, "workflows": args.workflows});
        loop {
            match self.send_once(&body, tally).await? {
                Sent::Taken => {
                    self.show(tally).await?;
                    return Ok(());
                }
                Sent::Ahead => {
                    self.show(tally).await?;
                    tokio::time::sleep(POLL).await;
                }
            }
        }
    }

    async fn send_once(&self, body: &Value, tally: &mut Tally) -> Result<Sent, Failure> {
        let request = self
            .http
            .post(format!("{}/api/backfill", self.base))
            .json(body);
        let response = with_admin_token(self.config, request)
            .send()
            .await
            .map_err(|e| unreachable(self.base, e))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or_default();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS && answer["code"] == "backfill_ahead" {
            return Ok(Sent::Ahead);
        }
        if !status.is_success() {
            return Err(Failure::Runtime(anyhow::anyhow!(
                "the server refused a batch ({status}): {answer}"
            )));
        }
        tally.accepted += answer["accepted"].as_u64().unwrap_or(0);
        tally.duplicates += answer["duplicates"].as_u64().unwrap_or(0);
        tally.refused += answer["rejected"].as_u64().unwrap_or(0);
        Ok(Sent::Taken)
    }

    /// Asks the server how far planning and delivery are, and shows it: delivered is what was
    /// read less what is not yet planned or delivered (refused events count as done).
    async fn show(&self, tally: &Tally) -> Result<Behind, Failure> {
        let answer: Value = with_admin_token(
            self.config,
            self.http.get(format!("{}/api/backfill", self.base)),
        )
        .send()
        .await
        .map_err(|e| unreachable(self.base, e))?
        .error_for_status()
        .map_err(|e| Failure::Runtime(e.without_url().into()))?
        .json()
        .await
        .map_err(|e| Failure::Runtime(e.into()))?;
        let behind = Behind {
            unplanned: answer["unplannedEvents"].as_u64().unwrap_or(0),
            undelivered: answer["undeliveredEvents"].as_u64().unwrap_or(0),
        };
        let sent = tally.accepted + tally.duplicates + tally.refused;
        let planned = sent.saturating_sub(behind.unplanned);
        self.bar
            .set_position(planned.saturating_sub(behind.undelivered));
        self.bar.set_message(format!(
            "· {} read, {planned} planned · {}",
            tally.read,
            summary(tally)
        ));
        Ok(behind)
    }
}
