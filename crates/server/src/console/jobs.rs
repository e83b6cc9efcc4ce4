//! Replays of many dead letters run in the background so the page can show their progress:
//! each job counts what it has replayed, and the dead-letter page polls it (or a reload shows
//! it, without script). Jobs live in this node's memory; the last [`KEPT`] are kept.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Finished jobs kept for their pages.
const KEPT: usize = 50;

/// One replay job's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    pub id: u64,
    pub total: usize,
    pub replayed: usize,
    pub failed: Vec<String>,
    pub finished: bool,
}

#[derive(Debug, Default)]
pub struct Jobs {
    next: std::sync::atomic::AtomicU64,
    jobs: Mutex<BTreeMap<u64, Progress>>,
}

impl Jobs {
    /// A new job of `total` replays; its id.
    pub fn start(&self, total: usize) -> u64 {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let mut jobs = self.jobs.lock().expect("replay jobs");
        jobs.insert(
            id,
            Progress {
                id,
                total,
                ..Progress::default()
            },
        );
        while jobs.len() > KEPT {
            let oldest = *jobs.keys().next().expect("not empty");
            jobs.remove(&oldest);
        }
        id
    }

    pub fn update(&self, id: u64, change: impl FnOnce(&mut Progress)) {
        if let Some(job) = self.jobs.lock().expect("replay jobs").get_mut(&id) {
            change(job);
        }
    }

    pub fn get(&self, id: u64) -> Option<Progress> {
        self.jobs.lock().expect("replay jobs").get(&id).cloned()
    }
}
