//! A scenario for end-to-end tests: the real `junction` binary delivering to an in-process
//! Intercom emulator, with helpers to send Segment calls and to read what Intercom received.

use super::{Backend, Server, WRITE_KEY, http};
use junction_emulator::journal::JournalEntry;
use junction_emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "emulator-token";

pub struct Scenario {
    pub server: Server,
    pub emulator: Emulator,
    pub intercom: String,
    pub dir: tempfile::TempDir,
    client: reqwest::Client,
}

impl Scenario {
    /// Junction with these workflows (YAML list items), delivering to a fresh emulator.
    pub async fn start(workflows: &str) -> Scenario {
        Scenario::start_on(Backend::Sqlite, workflows).await
    }

    /// Like [`Scenario::start`], on a fresh store of this kind.
    pub async fn start_on(backend: Backend, workflows: &str) -> Scenario {
        Scenario::start_config_on(backend, &format!("workflows:\n{workflows}"), Some(TOKEN)).await
    }

    /// Junction with this configuration (beyond the store, write key and admin token), and an
    /// `intercom` section pointing at a fresh emulator when `token` is given.
    pub async fn start_config(extra: &str, token: Option<&str>) -> Scenario {
        Scenario::start_config_on(Backend::Sqlite, extra, token).await
    }

    /// Like [`Scenario::start_config`], on a fresh store of this kind.
    pub async fn start_config_on(backend: Backend, extra: &str, token: Option<&str>) -> Scenario {
        let emulator = Emulator::new(EmulatorConfig {
            token: Some(TOKEN.into()),
            rate_limit: 10_000,
            search_lag: Duration::from_millis(300),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = emulator.clone().spawn(listener).await.unwrap();
        let intercom = format!("http://{addr}");
        let dir = tempfile::tempdir().unwrap();
        let store = backend.fresh_store(dir.path()).await;
        let server = Server::start_on(
            dir.path(),
            store,
            &Scenario::config(&intercom, extra, token),
        )
        .await;
        Scenario {
            server,
            emulator,
            intercom,
            dir,
            client: http(),
        }
    }

    /// `extra` with the emulator's base URL and token in its `intercom` section (added when
    /// `extra` has none).
    fn config(intercom: &str, extra: &str, token: Option<&str>) -> String {
        let Some(token) = token else {
            return extra.to_owned();
        };
        let lines = format!("  base_url: {intercom}\n  token: {token}\n");
        match extra
            .find("intercom:\n")
            .filter(|i| *i == 0 || extra[..*i].ends_with('\n'))
        {
            Some(at) => {
                let split = at + "intercom:\n".len();
                format!("{}{lines}{}", &extra[..split], &extra[split..])
            }
            None => format!("intercom:\n{lines}{extra}"),
        }
    }

    /// Stops Junction (SIGKILL), writes a new configuration, and starts it again.
    pub async fn restart_with(&mut self, extra: &str, token: Option<&str>) {
        self.server.kill();
        let config = super::config_for(
            &self.server.store,
            &Scenario::config(&self.intercom, extra, token),
        );
        std::fs::write(&self.server.config, config).unwrap();
        self.server.spawn().await;
    }

    /// GET on Junction's admin API.
    pub async fn admin(&self, path: &str) -> Value {
        self.client
            .get(self.server.url(path))
            .bearer_auth(super::ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// POST on Junction's admin API.
    pub async fn admin_post(&self, path: &str, body: Value) -> Value {
        self.client
            .post(self.server.url(path))
            .bearer_auth(super::ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Runs the `junction` binary against this scenario's configuration.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_junction"));
        command.args(args).arg("--config").arg(&self.server.config);
        command.env_remove("RUST_LOG").output().unwrap()
    }

    pub async fn send(&self, call: &str, body: Value) {
        let response = self
            .client
            .post(self.server.url(&format!("/v1/{call}")))
            .basic_auth(WRITE_KEY, Some(""))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }

    pub async fn identify(&self, user: &str, traits: Value) {
        self.send("identify", json!({"userId": user, "traits": traits}))
            .await;
    }

    pub async fn track(&self, user: &str, event: &str, properties: Value) {
        self.send(
            "track",
            json!({"userId": user, "event": event, "properties": properties}),
        )
        .await;
    }

    /// The Intercom id of the contact Junction created for this userId, once it has.
    pub async fn created_contact(&self, user: &str) -> String {
        let created = |s: &Scenario| {
            s.calls_at("POST", "/contacts")
                .into_iter()
                .find(|c| c.body["external_id"] == user)
                .and_then(|c| c.response["id"].as_str().map(str::to_owned))
        };
        self.until(&format!("{user}'s contact"), |s| created(s).is_some())
            .await;
        created(self).expect("just seen")
    }

    /// Successful requests to Intercom so far.
    pub fn calls(&self) -> Vec<JournalEntry> {
        self.emulator
            .journal_entries()
            .into_iter()
            .filter(|e| (200..300).contains(&e.status))
            .collect()
    }

    /// Successful calls whose path ends with `path_ends`.
    pub fn calls_to(&self, method: &str, path_ends: &str) -> Vec<JournalEntry> {
        self.calls()
            .into_iter()
            .filter(|e| e.method == method && e.path.ends_with(path_ends))
            .collect()
    }

    /// Successful calls to exactly this path.
    pub fn calls_at(&self, method: &str, path: &str) -> Vec<JournalEntry> {
        self.calls()
            .into_iter()
            .filter(|e| e.method == method && e.path == path)
            .collect()
    }

    /// Waits until `done` holds for the journal (failing with the journal after 20 s).
    pub async fn until(&self, what: &str, done: impl Fn(&Scenario) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(self) {
            if Instant::now() > deadline {
                let journal: Vec<String> = self
                    .emulator
                    .journal_entries()
                    .iter()
                    .map(|e| format!("{} {} {} {}", e.status, e.method, e.path, e.body))
                    .collect();
                panic!(
                    "timed out waiting for {what}; journal:\n{}\nlog:\n{}",
                    journal.join("\n"),
                    self.server.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.intercom))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn contacts(&self) -> Vec<Value> {
        self.get("/contacts?per_page=150").await["data"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Waits until Junction has nothing left to do for what it was sent — every event planned
    /// (`/api/cluster` lag 0) and no action pending (`/api/delivery`) — so that a check that
    /// something did *not* happen is made on a settled state, not after a guessed pause.
    pub async fn quiet(&self) {
        super::eventually(
            || format!("log:\n{}", self.server.log()),
            async || {
                let lag = self.admin("/api/cluster").await["lagEvents"].as_i64();
                let pending = self.admin("/api/delivery").await["actions"]["pending"].as_i64();
                if lag == Some(0) && pending == Some(0) {
                    Ok(())
                } else {
                    Err(format!(
                        "Junction did not settle (lag {lag:?}, pending {pending:?})"
                    ))
                }
            },
        )
        .await
    }

    /// Waits until Junction has stored every notification the emulator sent it (the emulator
    /// records each as it is sent), then until it has settled ([`Scenario::quiet`]).
    pub async fn notifications_settled(&self) {
        super::eventually(
            || format!("log:\n{}", self.server.log()),
            async || {
                let sent = self.emulator.webhooks_sent().len();
                let stored = self.admin("/api/events?type=intercom&limit=1000").await["items"]
                    .as_array()
                    .map_or(0, Vec::len);
                if stored >= sent {
                    Ok(())
                } else {
                    Err(format!("{stored} of {sent} notifications stored"))
                }
            },
        )
        .await;
        self.quiet().await;
    }

    /// Waits until `/api/delivery` says `timersPending` is `n`.
    pub async fn timers_pending(&self, n: i64) {
        super::eventually(
            || format!("log:\n{}", self.server.log()),
            async || match self.admin("/api/delivery").await["timersPending"].as_i64() {
                Some(pending) if pending == n => Ok(()),
                other => Err(format!("timersPending never became {n} (last {other:?})")),
            },
        )
        .await
    }
}

/// A webhook receiver standing in for Slack: records every JSON body posted to it.
pub async fn alert_sink() -> (String, Arc<Mutex<Vec<Value>>>) {
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let store = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let store = Arc::clone(&store);
            async move {
                store.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), received)
}
