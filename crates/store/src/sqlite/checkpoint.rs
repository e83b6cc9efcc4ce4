//! WAL checkpoints on a thread of their own.
//!
//! With SQLite's automatic checkpoints, the writer stops every few thousand pages to copy the
//! WAL back into the database file and fsync it, on the ingest path. Here the writer only
//! nudges this thread after each commit; the thread runs passive checkpoints (which never block
//! the writer or readers) at most every [`MIN_INTERVAL`], on the other core.

use rusqlite::Connection;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::Duration;

const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Held by the writer; dropping it stops the checkpoint thread.
pub(crate) struct Checkpointer {
    nudges: SyncSender<()>,
}

impl Checkpointer {
    pub(crate) fn start(path: &Path) -> std::io::Result<Checkpointer> {
        let conn = Connection::open(path).map_err(std::io::Error::other)?;
        conn.pragma_update(None, "busy_timeout", 5_000)
            .map_err(std::io::Error::other)?;
        let (nudges, received) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("junction-ckpt".into())
            .spawn(move || run(conn, received))?;
        Ok(Checkpointer { nudges })
    }

    /// Asks for a checkpoint soon; never blocks (nudges coalesce).
    pub(crate) fn nudge(&self) {
        match self.nudges.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => {
                tracing::warn!("the WAL checkpoint thread has stopped")
            }
        }
    }
}

fn run(conn: Connection, nudges: Receiver<()>) {
    while nudges.recv().is_ok() {
        if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(%error, "WAL checkpoint failed; will retry");
        }
        std::thread::sleep(MIN_INTERVAL);
    }
}
