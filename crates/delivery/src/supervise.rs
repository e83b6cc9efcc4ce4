//! Supervision of the pipeline's long-running tasks (the engine, delivery): a task that panics
//! or returns is noticed, reported and restarted with back-off, while ingest keeps committing.
//!
//! [`Health`] is what the rest of the process sees of them: `/readyz` answers 503 naming any
//! part that is not running, with the reason it stopped. Every stop also counts in
//! `junction_task_restarts_total{task}` and raises a `task_stopped` alert.

use crate::alerts::{AlertKind, Alerter};
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The first pause before a restart; it doubles on each stop up to [`MAX_BACKOFF`], and starts
/// over once a task has run for [`STABLE_AFTER`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// How one supervised part is doing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PartHealth {
    pub running: bool,
    /// How many times it stopped and was started again.
    pub restarts: u64,
    /// Why it last stopped.
    pub last_error: Option<String>,
}

/// The supervised parts of this process, by name.
#[derive(Debug, Default)]
pub struct Health {
    parts: Mutex<BTreeMap<&'static str, PartHealth>>,
}

impl Health {
    pub fn snapshot(&self) -> BTreeMap<&'static str, PartHealth> {
        self.parts.lock().expect("health lock").clone()
    }

    /// The parts that are not running, with the reason each stopped.
    pub fn stopped(&self) -> Vec<(&'static str, String)> {
        self.snapshot()
            .into_iter()
            .filter(|(_, part)| !part.running)
            .map(|(name, part)| (name, part.last_error.unwrap_or_default()))
            .collect()
    }

    fn update(&self, name: &'static str, change: impl FnOnce(&mut PartHealth)) {
        change(
            self.parts
                .lock()
                .expect("health lock")
                .entry(name)
                .or_default(),
        );
    }
}

/// Aborts the task when dropped, so that abandoning a supervisor (at the shutdown deadline)
/// also abandons what it supervises.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the task `start` makes until `stop` turns true, starting a new one whenever it panics,
/// fails or returns early. `start` may fail to make one (its error is reported the same way).
pub async fn supervise<Start, Made, Task>(
    name: &'static str,
    health: Arc<Health>,
    alerts: Alerter,
    mut stop: watch::Receiver<bool>,
    mut start: Start,
) where
    Start: FnMut() -> Made,
    Made: Future<Output = Result<Task, String>>,
    Task: Future<Output = Result<(), String>> + Send + 'static,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        let began = tokio::time::Instant::now();
        let outcome = match start().await {
            Ok(task) => {
                health.update(name, |part| part.running = true);
                let handle = tokio::spawn(task);
                let _guard = AbortOnDrop(handle.abort_handle());
                match handle.await {
                    Ok(result) => result,
                    Err(error) if error.is_panic() => {
                        Err(format!("panicked: {}", panic_message(error.into_panic())))
                    }
                    Err(_) => Err("was cancelled".to_owned()),
                }
            }
            Err(error) => Err(error),
        };
        if *stop.borrow() {
            return;
        }
        let reason = match outcome {
            Ok(()) => "returned while it should have kept running".to_owned(),
            Err(error) => error,
        };
        health.update(name, |part| {
            part.running = false;
            part.restarts += 1;
            part.last_error = Some(reason.clone());
        });
        if began.elapsed() >= STABLE_AFTER {
            backoff = FIRST_BACKOFF;
        }
        metrics::counter!("junction_task_restarts_total", "task" => name).increment(1);
        tracing::error!(task = name, %reason, ?backoff, "a pipeline task stopped; starting it again");
        alerts.raise(AlertKind::TaskStopped, format!("{name} {reason}"));
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        return (*text).to_owned();
    }
    if let Some(text) = payload.downcast_ref::<String>() {
        return text.clone();
    }
    "(no message)".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::AlertSettings;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A task that panics, then one that fails to start, then one that runs: each stop is
    /// visible in the health while it lasts, counted, alerted, and followed by a restart.
    #[tokio::test(start_paused = true)]
    async fn a_stopped_task_is_reported_and_restarted_with_backoff() {
        let health = Arc::new(Health::default());
        let (alerts, mut raised) = Alerter::queued(AlertSettings::default());
        let (stop_tx, stop) = watch::channel(false);
        let starts = Arc::new(AtomicUsize::new(0));
        let (running_tx, mut running) = watch::channel(0usize);
        let supervisor = tokio::spawn(supervise("engine", Arc::clone(&health), alerts, stop, {
            let starts = Arc::clone(&starts);
            move || {
                let n = starts.fetch_add(1, Ordering::SeqCst);
                let running_tx = running_tx.clone();
                async move {
                    if n == 1 {
                        return Err("shared state unreadable".to_owned());
                    }
                    Ok(async move {
                        if n == 0 {
                            panic!("bug in planning");
                        }
                        running_tx.send_replace(n);
                        std::future::pending::<()>().await;
                        Ok(())
                    })
                }
            }
        }));
        running.wait_for(|n| *n == 2).await.unwrap();
        let engine = health.snapshot()["engine"].clone();
        assert!(engine.running);
        assert_eq!(engine.restarts, 2);
        assert_eq!(
            engine.last_error.as_deref(),
            Some("shared state unreadable")
        );
        let mut alerts = Vec::new();
        while let Ok(alert) = raised.try_recv() {
            alerts.push(alert);
        }
        assert_eq!(alerts.len(), 2, "{alerts:?}");
        assert!(
            alerts[0].1.contains("engine panicked: bug in planning"),
            "{alerts:?}"
        );
        assert_eq!(alerts[0].0, AlertKind::TaskStopped);
        stop_tx.send_replace(true);
        // A normal stop ends the supervisor (the task itself is abandoned with it).
        supervisor.abort();
        let _ = supervisor.await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_that_is_down_is_named_with_its_reason() {
        let health = Arc::new(Health::default());
        let (alerts, _raised) = Alerter::queued(AlertSettings::default());
        let (_stop_tx, stop) = watch::channel(false);
        let supervisor = tokio::spawn(supervise(
            "delivery",
            Arc::clone(&health),
            alerts,
            stop,
            || async {
                Err::<std::future::Ready<Result<(), String>>, _>("store unreadable".to_owned())
            },
        ));
        while health.stopped().is_empty() {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            health.stopped(),
            [("delivery", "store unreadable".to_owned())]
        );
        supervisor.abort();
    }
}
