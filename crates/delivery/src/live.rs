//! The workflows in force. A reload (`junction serve` on SIGHUP or `--watch`) replaces them
//! whole; each engine takes the current set at the start of every batch, so a change takes
//! effect from a batch boundary: no event is planned by half of one set and half of another,
//! and none twice (the engine's cursor does not move back).

use junction_flow::Planner;
use std::sync::{Arc, RwLock};

#[derive(Debug)]
pub struct LivePlanner {
    current: RwLock<Arc<Planner>>,
}

impl LivePlanner {
    pub fn new(planner: Arc<Planner>) -> LivePlanner {
        LivePlanner {
            current: RwLock::new(planner),
        }
    }

    /// The workflows in force now.
    pub fn current(&self) -> Arc<Planner> {
        Arc::clone(&self.current.read().expect("planner lock"))
    }

    /// Puts `planner` in force for every batch that starts from now on.
    pub fn replace(&self, planner: Arc<Planner>) {
        *self.current.write().expect("planner lock") = planner;
    }
}
