//! The command line: `junction serve`, `junction events list|show`, `junction rejected list`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "junction",
    version,
    about = "Segment <-> Intercom in real time, through declarative workflows"
)]
pub struct Cli {
    /// Log format on standard error (the level comes from RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "JUNCTION_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Configuration file (YAML). Without one, Junction runs on the defaults: 127.0.0.1:8080,
    /// SQLite under ./junction-data, any write key accepted.
    #[arg(long, short, env = "JUNCTION_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: Segment ingest, webhooks, admin API.
    Serve(ServeArgs),
    /// Read the event log.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Read the log of refused messages.
    #[command(subcommand)]
    Rejected(RejectedCommand),
    /// Run an emulator of a service Junction talks to, for tests and demos.
    #[command(subcommand)]
    Emulate(EmulateCommand),
}

#[derive(Debug, Subcommand)]
pub enum EmulateCommand {
    /// An in-memory Intercom workspace with Intercom's 409s, search lag and rate limits.
    Intercom(EmulateIntercomArgs),
}

#[derive(Debug, Args)]
pub struct EmulateIntercomArgs {
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// The bearer token accepted; any token when absent.
    #[arg(long, env = "JUNCTION_EMULATOR_TOKEN")]
    pub token: Option<String>,
    /// Requests allowed per 10-second window.
    #[arg(long, default_value_t = 1_666)]
    pub rate_limit: u32,
    /// How long a new contact stays invisible to search, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    pub search_lag_ms: u64,
    /// Share of requests answered with a 500 (0 to 1); more faults through /_emulator/config.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    pub fault_rate: f64,
}

/// A share between 0 and 1.
fn fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err(format!("expected a number from 0 to 1, found {text:?}")),
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Listen on this address instead of the configured one.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Use this store instead of the configured one (sqlite://PATH).
    #[arg(long)]
    pub store: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// List events, newest first.
    List(EventsListArgs),
    /// Show one event, whole.
    Show(EventsShowArgs),
}

#[derive(Debug, Args)]
pub struct EventsListArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only this type (identify, track, page, screen, group, alias).
    #[arg(long = "type")]
    pub kind: Option<String>,
    #[arg(long)]
    pub user_id: Option<String>,
    #[arg(long)]
    pub anonymous_id: Option<String>,
    #[arg(long)]
    pub message_id: Option<String>,
    /// Events per page (1 to 1000).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Continue from the cursor a previous page printed.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Print the page as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EventsShowArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The event's number (SEQ in `events list`).
    pub seq: i64,
}

#[derive(Debug, Subcommand)]
pub enum RejectedCommand {
    /// List refused messages with their reasons, newest first.
    List(RejectedListArgs),
}

#[derive(Debug, Args)]
pub struct RejectedListArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[arg(long)]
    pub cursor: Option<String>,
    #[arg(long)]
    pub json: bool,
}
