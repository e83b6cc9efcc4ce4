//! `junction emulate intercom`: the Intercom emulator as a standalone server, for trying
//! Junction end to end on a laptop with no Intercom workspace.

use crate::cli::EmulateIntercomArgs;
use anyhow::Context;
use junction_emulator::{Emulator, EmulatorConfig};
use std::time::Duration;

pub async fn intercom(args: EmulateIntercomArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let emulator = Emulator::new(EmulatorConfig {
        token: args.token,
        rate_limit: args.rate_limit,
        search_lag: Duration::from_millis(args.search_lag_ms),
    });
    emulator.set_faults(junction_emulator::faults::Faults {
        error_rates: [(500, args.fault_rate)].into(),
        ..Default::default()
    });
    match (args.webhook_url, args.webhook_secret) {
        (Some(url), Some(secret)) => {
            emulator.set_webhook(Some(junction_emulator::webhooks::Webhook { url, secret }))
        }
        (None, None) => {}
        _ => anyhow::bail!("--webhook-url and --webhook-secret go together"),
    }
    let addr = emulator.spawn(listener).await?;
    tracing::info!(%addr, "Intercom emulator listening");
    crate::serve::shutdown_signal().await;
    Ok(())
}
