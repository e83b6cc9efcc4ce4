//! The planner state partitions share — round-robin turns and company traits — read for one
//! planning step and written back only where it changed, each entry on the condition that
//! nobody changed it since it was read.
//!
//! Each entry is its own row in the store (`round_robin/WORKFLOW/STEP`,
//! `company/GROUP_ID`), so partitions planned on different nodes meet only when they touch
//! the same entry; then the store refuses the later commit (`StoreError::Conflict`) and its
//! engine plans the step again on fresh state. No turn is handed out twice and no company
//! trait is lost.

use junction_flow::{Globals, stored};
use junction_store::{EngineState, SharedWrite, StoreError, StoredEvent};
use std::collections::HashMap;

const ROUND_ROBIN: &str = "round_robin/";
const COMPANY: &str = "company/";

/// How an entry is stored: `{"v": FORMAT, "value": …}` (see `junction_flow::stored`), so that
/// an entry written by a newer Junction is refused, never misread.
#[derive(serde::Serialize, serde::Deserialize)]
struct Entry<T> {
    value: T,
}

/// The shared state one planning step works on.
pub struct SharedState {
    /// What the planner reads and changes.
    pub globals: Globals,
    /// As read: key → (version, value).
    read: HashMap<String, (i64, serde_json::Value)>,
}

impl SharedState {
    /// Reads every round-robin turn, and the traits of each company a group call in `events`
    /// names. Unreadable entries stop planning (reported by the engine's supervisor) rather
    /// than start turns or traits over from nothing.
    pub async fn load(
        store: &dyn EngineState,
        events: &[StoredEvent],
    ) -> Result<SharedState, StoreError> {
        let companies: Vec<String> = events
            .iter()
            .filter(|e| e.kind == "group")
            .filter_map(|e| e.body["groupId"].as_str())
            .map(|id| format!("{COMPANY}{id}"))
            .collect();
        let entries = store
            .shared_state(companies, vec![ROUND_ROBIN.to_owned()])
            .await?;
        let mut state = SharedState {
            globals: Globals::default(),
            read: HashMap::new(),
        };
        for (key, entry) in entries {
            let unreadable = |e: String| {
                StoreError::Unreadable(format!("the shared planner state {key:?} is {e}"))
            };
            let value = stored::decode::<Entry<serde_json::Value>>(&entry.value)
                .map_err(|e| unreadable(e.to_string()))?
                .value;
            let wrong = |e: serde_json::Error| unreadable(format!("damaged: {e}"));
            if let Some(name) = key.strip_prefix(ROUND_ROBIN) {
                let turn = serde_json::from_value(value.clone()).map_err(wrong)?;
                state.globals.round_robin.insert(name.to_owned(), turn);
            } else if let Some(id) = key.strip_prefix(COMPANY) {
                let traits = serde_json::from_value(value.clone()).map_err(wrong)?;
                state.globals.companies.insert(id.to_owned(), traits);
            }
            state.read.insert(key, (entry.version, value));
        }
        Ok(state)
    }

    /// The entries the step changed or created, each expecting the version it read.
    pub fn writes(&self) -> Vec<SharedWrite> {
        let turns = (self.globals.round_robin.iter())
            .map(|(name, turn)| (format!("{ROUND_ROBIN}{name}"), serde_json::json!(turn)));
        let companies = (self.globals.companies.iter())
            .map(|(id, traits)| (format!("{COMPANY}{id}"), serde_json::json!(traits)));
        turns
            .chain(companies)
            .filter_map(|(key, value)| {
                let expected = match self.read.get(&key) {
                    Some((_, before)) if *before == value => return None,
                    Some((version, _)) => *version,
                    None => 0,
                };
                Some(SharedWrite {
                    key,
                    value: stored::encode(&Entry { value }),
                    expected,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(entries: &[(&str, i64, serde_json::Value)]) -> SharedState {
        let mut state = SharedState {
            globals: Globals::default(),
            read: HashMap::new(),
        };
        for (key, version, value) in entries {
            state
                .read
                .insert((*key).to_owned(), (*version, value.clone()));
        }
        state
    }

    #[test]
    fn only_changed_entries_are_written_each_expecting_what_was_read() {
        let mut state = read(&[
            ("round_robin/assign/1", 4, serde_json::json!(7)),
            ("company/acme", 2, serde_json::json!({"plan": "pro"})),
        ]);
        state.globals.round_robin.insert("assign/1".into(), 8);
        state.globals.companies.insert(
            "acme".into(),
            serde_json::json!({"plan": "pro"})
                .as_object()
                .unwrap()
                .clone(),
        );
        state
            .globals
            .companies
            .insert("new".into(), Default::default());
        assert_eq!(
            state.writes(),
            vec![
                SharedWrite {
                    key: "round_robin/assign/1".into(),
                    value: r#"{"v":1,"value":8}"#.into(),
                    expected: 4,
                },
                SharedWrite {
                    key: "company/new".into(),
                    value: r#"{"v":1,"value":{}}"#.into(),
                    expected: 0,
                },
            ]
        );
    }
}
