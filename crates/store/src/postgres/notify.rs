//! Waking the other nodes: commits that add events or actions send a NOTIFY in their own
//! transaction (delivered when, and only if, they commit), and every node LISTENs on a
//! connection of its own and rings its local bells. Without this a node would only notice
//! another node's work at its next poll (up to a second later).

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio_postgres::AsyncMessage;

/// Channel notified after a commit of new events.
pub(super) const EVENTS: &str = "junction_events";
/// Channel notified after a commit of new actions.
pub(super) const ACTIONS: &str = "junction_actions";

/// Listens until `closed` turns true, reconnecting (after a pause) when the connection drops.
pub(super) async fn listen(
    config: tokio_postgres::Config,
    events_arrived: Arc<Notify>,
    actions_planned: Arc<Notify>,
    mut closed: watch::Receiver<bool>,
) {
    while !*closed.borrow() {
        tokio::select! {
            result = listen_once(&config, &events_arrived, &actions_planned) => {
                if let Err(error) = result {
                    tracing::warn!(%error, "LISTEN connection lost; polling until it is back");
                }
                // Whatever was notified meanwhile is found by the next look.
                events_arrived.notify_one();
                actions_planned.notify_one();
            }
            _ = closed.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = closed.changed() => return,
        }
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    events_arrived: &Notify,
    actions_planned: &Notify,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
    // The connection's messages (notifications among them) arrive only while it is polled.
    let (messages, mut received) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(message)) => {
                    if messages.send(message).is_err() {
                        return Ok(());
                    }
                }
                Some(Err(error)) => return Err(error),
                None => return Ok(()),
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {EVENTS}; LISTEN {ACTIONS};"))
        .await?;
    while let Some(message) = received.recv().await {
        if let AsyncMessage::Notification(note) = message {
            match note.channel() {
                EVENTS => events_arrived.notify_one(),
                ACTIONS => actions_planned.notify_one(),
                _ => {}
            }
        }
    }
    drop(client);
    driver.await.unwrap_or(Ok(()))
}
