//! Runs the real `junction` binary for end-to-end tests: its own data directory, a free
//! loopback port, and helpers to read back what it stored through the admin API.

#![allow(dead_code)] // each test file uses a different part of this module

pub mod scenario;

use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const WRITE_KEY: &str = "WRITE_KEY_TEST";
pub const ADMIN_TOKEN: &str = "test-admin-token";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Which store a test's Junction runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// A fresh store of this kind for a Junction working in `dir`: a SQLite file there, or a
    /// new database on the test PostgreSQL server (`JUNCTION_TEST_POSTGRES`, which
    /// `scripts/test.sh` sets; by default the local server on 127.0.0.1:5432).
    pub async fn fresh_store(self, dir: &Path) -> String {
        match self {
            Backend::Sqlite => format!("sqlite://{}", dir.join("data/junction.db").display()),
            Backend::Postgres => {
                let admin = std::env::var("JUNCTION_TEST_POSTGRES")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
                junction_store::postgres::create_scratch_database(&admin, "junction_test")
                    .await
                    .unwrap_or_else(|e| {
                        panic!("no PostgreSQL for the tests at {admin} ({e}): run scripts/test.sh")
                    })
            }
        }
    }
}

/// A configuration: the store, [`ADMIN_TOKEN`], a `segment` section accepting [`WRITE_KEY`]
/// (unless `extra` has its own `segment` section, which must then list the write keys), and
/// `extra`.
pub fn config_text(database: &Path, extra: &str) -> String {
    config_for(&format!("sqlite://{}", database.display()), extra)
}

/// [`config_text`] for any store URL.
pub fn config_for(store: &str, extra: &str) -> String {
    let own_segment = extra.starts_with("segment:\n") || extra.contains("\nsegment:\n");
    let segment = if own_segment {
        String::new()
    } else {
        format!("segment:\n  write_keys: [{WRITE_KEY}]\n")
    };
    format!("store: {store}\n{segment}admin:\n  token: {ADMIN_TOKEN}\n{extra}")
}

pub struct Server {
    child: Option<Child>,
    /// The store URL in its configuration.
    pub store: String,
    pub port: u16,
    pub dir: PathBuf,
    pub config: PathBuf,
    client: reqwest::Client,
}

impl Server {
    /// Starts `junction serve` in `dir` with a configuration accepting [`WRITE_KEY`].
    pub async fn start(dir: &Path) -> Server {
        Server::start_with(dir, "").await
    }

    /// Like [`Server::start`], with more configuration appended (an `intercom` section,
    /// `workflows`, …).
    pub async fn start_with(dir: &Path, extra: &str) -> Server {
        let store = Backend::Sqlite.fresh_store(dir).await;
        Server::start_on(dir, store, extra).await
    }

    /// Like [`Server::start_with`], on the store at this URL.
    pub async fn start_on(dir: &Path, store: String, extra: &str) -> Server {
        let config = dir.join("junction.yaml");
        std::fs::write(&config, config_for(&store, extra)).unwrap();
        let port = free_port();
        let mut server = Server {
            child: None,
            store,
            port,
            dir: dir.to_path_buf(),
            config,
            client: http(),
        };
        server.spawn().await;
        server
    }

    /// (Re)starts the process on the same port and data, and waits until it is ready.
    pub async fn spawn(&mut self) {
        self.spawn_until("/readyz").await
    }

    /// (Re)starts the process and waits until `path` answers 2xx (`/healthz` for a process
    /// that is expected to report itself not ready).
    pub async fn spawn_until(&mut self, path: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("junction.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_junction"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the junction binary starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = self.client.get(self.url(path)).send().await
                && response.status().is_success()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("junction exited early with {status}; log: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "junction did not become ready; log: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        http()
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("junction.log")).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then waits for the process to exit.
    /// SIGHUP: reload the configuration.
    pub fn hangup(&self) {
        let child = self.child.as_ref().expect("running");
        // SAFETY: kill(2) with a pid we own; no memory is touched.
        let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGHUP) };
        assert_eq!(sent, 0);
    }

    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) with a pid we own; no memory is touched.
        let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(sent, 0);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "junction did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every stored event, oldest first, read through the admin API page by page.
    pub async fn all_events(&self) -> Vec<Value> {
        let mut events = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = self.url("/api/events?limit=1000");
            if let Some(cursor) = &cursor {
                url.push_str(&format!("&cursor={cursor}"));
            }
            let page: Value = self
                .client
                .get(url)
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .error_for_status()
                .unwrap()
                .json()
                .await
                .unwrap();
            events.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        events.reverse();
        events
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `junction serve` with JSON logs piped back, on a free port, and waits until it is
/// ready; the logs are read from the child's stderr once it has exited.
pub async fn spawn_json_logged(config: &Path, rust_log: &str) -> (Child, u16) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_junction"))
        .args(["--log-format", "json", "serve", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", rust_log)
        .stderr(Stdio::piped())
        .spawn()
        .expect("the junction binary starts");
    let http = http();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "junction did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, port)
}

/// Sends SIGTERM and returns everything the process logged.
pub fn stop_and_collect_logs(child: Child) -> String {
    // SAFETY: kill(2) with a pid we own; no memory is touched.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    String::from_utf8(child.wait_with_output().unwrap().stderr).unwrap()
}

/// An HTTP client for tests (after installing the TLS provider reqwest is built to expect).
/// A request that gets no answer within a minute fails, naming its URL: a server that stops
/// answering fails the test that way instead of leaving it to the runner's timeout, silent.
pub fn http() -> reqwest::Client {
    junction_intercom::install_tls_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("an HTTP client")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every 20 ms until it returns `Ok` — tests wait for states, not for time — and
/// fails after 20 s with the last `Err` (what was seen) and `context()` (a log, say).
pub async fn eventually<T>(
    context: impl Fn() -> String,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) => assert!(Instant::now() < deadline, "{seen}; {}", context()),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
