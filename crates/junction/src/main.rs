//! `junction`: the binary. Parses the command line, loads the configuration, and runs the
//! chosen command. Exit codes: 0 success, 1 runtime failure, 2 bad input (command line or
//! configuration file, reported with the file, line and what was expected).

mod audit;
mod backfill;
mod cli;
mod config;
mod delivery_cli;
mod demo;
mod dry_run;
mod emulate;
mod logs;
mod read;
mod reload;
mod serve;
mod shadow;
mod tap;
mod tools;
mod workflows;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command};
use config::Config;
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only the server's own story is worth info lines; the one-shot commands print results.
    let default_level = match cli.command {
        Command::Serve(_) | Command::Emulate(_) => "info",
        _ => "warn",
    };
    logs::init(cli.log_format, default_level);
    junction_intercom::install_tls_provider();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => {
                let (path, listen, store) = (args.config.config.clone(), args.listen, args.store);
                // The file, then the command line's overrides: at start-up and on each reload.
                let read = move || -> Result<config::Config, Failure> {
                    let mut config = load(path.as_deref())?;
                    if let Some(listen) = listen {
                        config.listen = listen;
                    }
                    if let Some(store) = &store {
                        config.store = config::StoreUrl::parse(store).map_err(Failure::Input)?;
                    }
                    Ok(config)
                };
                let config = read()?;
                let reload = reload::ReloadSource {
                    load: Box::new(move || read().map_err(|failure| failure.to_string())),
                    watch: args.watch,
                };
                serve::run(config, Some(reload))
                    .await
                    .map_err(Failure::Runtime)
            }
            Command::Demo(args) => demo::run(args.data, args.keep_running).await,
            Command::Validate(args) => tools::validate(&args.files, args.config.as_deref()),
            Command::Test(args) => dry_run::run(&args.workflow, &args.events, &args.vars).await,
            Command::Schema => tools::schema(),
            Command::Templates(cli::TemplatesCommand::List) => tools::list_templates(),
            Command::Templates(cli::TemplatesCommand::Show { name }) => tools::show_template(&name),
            Command::Init(args) => tools::init(&args.output, &args.templates, args.force),
            Command::Events(command) => read::events(command, load).await,
            Command::Rejected(command) => read::rejected(command, load).await,
            Command::Dlq(command) => delivery_cli::dlq(command, load).await,
            Command::Runs(command) => delivery_cli::runs(command, load).await,
            Command::Quarantine(command) => delivery_cli::quarantine(command, load).await,
            Command::Cluster { config, json } => delivery_cli::cluster(config, json, load).await,
            Command::Audit {
                config,
                who,
                runs,
                events,
                json,
            } => audit::run(config, &who, runs, events, json, load).await,
            Command::Tap {
                config,
                user,
                workflow,
                kind,
                calls,
                url,
                json,
            } => {
                let settings = load(config.config.as_deref())?;
                let args = tap::TapArgs {
                    user,
                    workflow,
                    kind,
                    calls,
                    json,
                    url,
                };
                tap::run(&settings, args).await
            }
            Command::Backfill {
                config,
                paths,
                workflows,
                batch_events,
                url,
            } => {
                let settings = load(config.config.as_deref())?;
                let args = backfill::BackfillArgs {
                    paths,
                    workflows,
                    url,
                    batch_events,
                };
                backfill::run(&settings, args).await
            }
            Command::Shadow(cli::ShadowCommand::Report {
                config,
                limit,
                json,
            }) => shadow::report(config, limit, json, load).await,
            Command::Status { config, url, json } => {
                let settings = load(config.config.as_deref())?;
                reload::status(&settings, url.as_deref(), json).await
            }
            Command::Migrate {
                from: Some(from),
                to: Some(to),
                ..
            } => {
                let (from_url, to_url) = (
                    junction_store::redact_url(&from),
                    junction_store::redact_url(&to),
                );
                let copied = junction_store::copy(&from, &to)
                    .await
                    .map_err(|e| match e {
                        junction_store::StoreError::Unsupported { url, reason } => {
                            Failure::Input(format!("{url}: {reason}"))
                        }
                        other => Failure::Runtime(
                            anyhow::Error::from(other)
                                .context(format!("moving {from_url} to {to_url}")),
                        ),
                    })?;
                for (table, rows) in &copied {
                    println!("{table:>18}: {rows} rows");
                }
                println!("moved {from_url} to {to_url}; point `store:` at the new one");
                Ok(())
            }
            Command::Migrate {
                config,
                store,
                partitions,
                ..
            } => {
                let mut config = load(config.config.as_deref())?;
                if let Some(store) = store {
                    config.store = config::StoreUrl::parse(&store).map_err(Failure::Input)?;
                }
                let url = junction_store::redact_url(&config.store.0);
                let (found, now) = junction_store::migrate(&config.store.0)
                    .await
                    .with_context(|| format!("migrating the store {url}"))
                    .map_err(Failure::Runtime)?;
                if found == now {
                    println!("{url}: schema version {now}, up to date");
                } else {
                    println!("{url}: schema version {found} → {now}");
                }
                if let Some(wanted) = partitions {
                    repartition(&config.store.0, wanted).await?;
                }
                Ok(())
            }
            Command::Emulate(cli::EmulateCommand::Intercom(args)) => {
                emulate::intercom(args).await.map_err(Failure::Runtime)
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// `junction migrate --partitions N`: splits planning anew (refused, exit 2, while a node runs
/// or planning trails the log).
async fn repartition(store_url: &str, wanted: u32) -> Result<(), Failure> {
    let url = junction_store::redact_url(store_url);
    let store = junction_store::open(store_url, junction_store::StoreOptions::default())
        .await
        .with_context(|| format!("opening the store {url}"))
        .map_err(Failure::Runtime)?;
    let have = store
        .partitions()
        .await
        .with_context(|| format!("reading the store {url}"))
        .map_err(Failure::Runtime)?;
    let now = chrono::Utc::now().timestamp_millis();
    let result = match store.repartition(wanted, "junction migrate", now).await {
        Ok(()) => {
            println!("{url}: planning partitions {have} → {wanted}");
            Ok(())
        }
        Err(junction_store::StoreError::Refused(reason)) => Err(Failure::Input(format!(
            "{url}: cannot change the planning partitions from {have} to {wanted}: {reason}"
        ))),
        Err(error) => Err(Failure::Runtime(anyhow::Error::from(error))),
    };
    let _ = store.close().await;
    result
}

/// Why a command failed, which decides the exit code.
pub enum Failure {
    /// The user's input is wrong (exit 2).
    Input(String),
    /// Something failed while running (exit 1).
    Runtime(anyhow::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Input(message) => f.write_str(message),
            Failure::Runtime(error) => write!(f, "{error:#}"),
        }
    }
}

/// The configuration from `--config` (or `JUNCTION_CONFIG`), else the defaults.
fn load(path: Option<&Path>) -> Result<Config, Failure> {
    match path {
        Some(path) => Config::load(path).map_err(|e| Failure::Input(e.to_string())),
        None => Ok(Config::default()),
    }
}
