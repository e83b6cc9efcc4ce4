//! The command line: `serve`, `demo`, `events`, `rejected`, `emulate`, and the workflow tools
//! `validate`, `test`, `schema`, `templates`, `init`.

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
    /// Run the server: Segment ingest, webhooks, admin API, workflows and delivery.
    Serve(ServeArgs),
    /// Junction end to end in seconds: the Intercom emulator, every template, a realistic
    /// stream of Segment events, and what happened in Intercom.
    Demo(DemoArgs),
    /// Check workflow files; each problem is reported as FILE:LINE:COL.
    Validate(ValidateArgs),
    /// Print the Intercom requests a workflow makes for sample events, without calling Intercom.
    Test(TestArgs),
    /// Print the JSON Schema of workflow files.
    Schema,
    /// The ready-made workflows embedded in Junction.
    #[command(subcommand)]
    Templates(TemplatesCommand),
    /// Write a starter configuration with chosen templates.
    Init(InitArgs),
    /// Read the event log.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Read the log of refused messages.
    #[command(subcommand)]
    Rejected(RejectedCommand),
    /// The dead-letter queue: actions that failed for good.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// The execution log: every run (event × workflow), its steps and their calls.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Events and timers held because their user's stored state could not be read.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// Create the store's schema, or bring it up to this version's, and say which versions
    /// (nodes do this themselves when they start; this lets a deployment do it first). With
    /// --from and --to, move a stopped SQLite store into an empty PostgreSQL database.
    Migrate {
        #[command(flatten)]
        config: ConfigArg,
        /// Use this store instead of the configured one (sqlite://PATH or postgres://…).
        #[arg(long, conflicts_with_all = ["from", "to"])]
        store: Option<String>,
        /// The SQLite store to move (sqlite://PATH; Junction must not be running on it).
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// The PostgreSQL database to move it into (postgres://…; no events or actions yet).
        #[arg(long, requires = "from")]
        to: Option<String>,
        /// Split planning into this many partitions (1 to 256). Every node must be stopped
        /// and planning caught up (`junction cluster` shows each partition's lag).
        #[arg(long, conflicts_with_all = ["from", "to"], value_parser = clap::value_parser!(u32).range(1..=256))]
        partitions: Option<u32>,
    },
    /// The nodes sharing the store: which are alive, which planning partitions each plans,
    /// how many users each is delivering to, and how far each partition trails the log.
    Cluster {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
    },
    /// One person's timeline: their Intercom contact and ids, their profile, and, oldest
    /// first, each event with the workflow runs it caused, each action's outcome and its
    /// Intercom calls (the console's People page as text).
    Audit {
        #[command(flatten)]
        config: ConfigArg,
        /// A userId, anonymousId, email or Intercom contact id.
        who: String,
        /// How many of their newest runs to show.
        #[arg(long, default_value_t = 50)]
        runs: usize,
        /// How many of their newest events to show (per id).
        #[arg(long, default_value_t = 100)]
        events: usize,
        #[arg(long)]
        json: bool,
    },
    /// A running server's live tail: events as they arrive, the actions planned for them,
    /// and with --calls the calls delivery makes, until Ctrl-C.
    Tap {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this user (userId, else anonymousId).
        #[arg(long)]
        user: Option<String>,
        /// Only this workflow's planned actions and calls.
        #[arg(long)]
        workflow: Option<String>,
        /// Only events of this type (and what is planned for them).
        #[arg(long = "type")]
        kind: Option<String>,
        /// Also the calls delivery makes (method, path, status, time).
        #[arg(long)]
        calls: bool,
        /// The server's base URL (default: the configuration's admin.listen, else listen).
        #[arg(long)]
        url: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Load historical Segment data into the running server: JSON-lines files, gzipped or
    /// not, and directories of them (Segment's S3 archive layout). Started again after an
    /// interruption, it changes nothing twice.
    Backfill {
        #[command(flatten)]
        config: ConfigArg,
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Only these workflows run on the backfilled events (comma-separated; all when not
        /// given): profile and company syncs, say, never messages on old events.
        #[arg(long, value_delimiter = ',')]
        workflows: Option<Vec<String>>,
        /// At most this many events per request (requests also stay under 400 KB): small
        /// batches keep each planning step short for the live events logged behind them.
        #[arg(long, default_value_t = 50)]
        batch_events: usize,
        /// The server's base URL (default: the configuration's admin.listen, else listen).
        #[arg(long)]
        url: Option<String>,
    },
    /// What shadow delivery recorded instead of sending.
    #[command(subcommand)]
    Shadow(ShadowCommand),
    /// Ask the running server (at the configuration's address, with its admin token) which
    /// configuration is in force: its version, when it was loaded, its workflows, and the last
    /// reload that was refused.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// The server's base URL (default: the configuration's admin.listen, else listen).
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Run an emulator of a service Junction talks to, for tests and demos.
    #[command(subcommand)]
    Emulate(EmulateCommand),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's SQLite store in this folder (default: a temporary one).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Keep Junction and the emulator running after the demo (until Ctrl-C).
    #[arg(long)]
    pub keep_running: bool,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Workflow files (YAML).
    #[arg(required_unless_present = "config")]
    pub files: Vec<PathBuf>,
    /// Also check a configuration file and every workflow it loads.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// A workflow file, or a template's name.
    pub workflow: String,
    /// A Segment event (JSON file); repeat for a sequence (they share the user's profile).
    #[arg(long = "event", required = true)]
    pub events: Vec<PathBuf>,
    /// Override a workflow variable: NAME=VALUE (VALUE is JSON, or text).
    #[arg(long = "var", value_parser = crate::dry_run::parse_var)]
    pub vars: Vec<(String, serde_json::Value)>,
}

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Name and purpose of each template.
    List,
    /// A template's YAML.
    Show { name: String },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the configuration.
    #[arg(long, short, default_value = "junction.yaml")]
    pub output: PathBuf,
    /// Templates to include, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub templates: Vec<String>,
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct DlqFilter {
    /// Only actions of this workflow.
    #[arg(long)]
    pub workflow: Option<String>,
    /// Only this error code (Intercom's, such as not_found, or server_error, transport, …).
    #[arg(long)]
    pub code: Option<String>,
    /// Only this user (userId, else anonymousId).
    #[arg(long)]
    pub user: Option<String>,
    /// Failed since: a date-time or a span back from now (2h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Failed before: a date-time or a span back from now.
    #[arg(long)]
    pub until: Option<String>,
    /// The messages a frequency cap kept back, instead of the failed actions.
    #[arg(long)]
    pub capped: bool,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Dead letters, oldest first.
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        filter: DlqFilter,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One dead letter: its event, workflow, step, every attempt with its calls, the reason.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        id: String,
    },
    /// Plan the dead letters' events again with the current workflows and deliver them.
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        /// Dead letters by id; without ids, every one the filters match.
        ids: Vec<String>,
        #[command(flatten)]
        filter: DlqFilter,
    },
    /// Send capped messages after all (`--capped` is implied): by id, or every one the filters
    /// match with --all-matching.
    Release {
        #[command(flatten)]
        config: ConfigArg,
        ids: Vec<String>,
        #[command(flatten)]
        filter: DlqFilter,
        /// Needed to release by filter alone (without ids).
        #[arg(long)]
        all_matching: bool,
    },
    /// Take dead letters out of the queue without delivering them.
    Discard {
        #[command(flatten)]
        config: ConfigArg,
        ids: Vec<String>,
        #[command(flatten)]
        filter: DlqFilter,
        /// Needed to discard by filter alone (without ids).
        #[arg(long)]
        all_matching: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// What is held, oldest first, with the reason.
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Plans a user's held events again (after repairing the stored profile, or with
    /// --reset-profile to start the user afresh).
    Release {
        #[command(flatten)]
        config: ConfigArg,
        /// The user (userId, else anonymousId).
        user: String,
        /// Delete the unreadable profile first (scores, counters and milestones start over).
        #[arg(long)]
        reset_profile: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Runs, newest first.
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        workflow: Option<String>,
        #[arg(long)]
        user: Option<String>,
        /// planned, delivering, done, failed, partial, paused or empty.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One run: each step's action, its attempts and the calls they made.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        run: String,
        #[arg(long)]
        json: bool,
    },
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
    /// Send signed webhook notifications here when contacts and conversations are created
    /// (Junction's `/hooks/intercom`).
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// The client secret that signs them (Junction's `intercom.client_secret`).
    #[arg(long, env = "JUNCTION_EMULATOR_WEBHOOK_SECRET")]
    pub webhook_secret: Option<String>,
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
    /// Reload the configuration when it or a workflow file it names changes (SIGHUP always
    /// reloads).
    #[arg(long)]
    pub watch: bool,
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

#[derive(Debug, Subcommand)]
pub enum ShadowCommand {
    /// The requests shadow delivery recorded: counts by route and by workflow, with a sample
    /// request per route.
    Report {
        #[command(flatten)]
        config: ConfigArg,
        /// How many of the newest shadow actions to read.
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}
