//! Replaying dead letters: the failed action's event is planned again with the workflows loaded
//! now (so a fixed mapping repairs old failures), against the user's current profile (a copy:
//! replaying never moves scores or counters twice), and the run's actions that were not
//! delivered yet take the dead letter's place in the outbox, under new ids.

use crate::engine::new_action;
use junction_flow::action::PlannedAction;
use junction_flow::{EventInput, Planner, Profile, stored};
use junction_store::{ActionStatus, Store, StoreError};
use std::collections::HashSet;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no dead letter with id {0}")]
    NotFound(String),
    #[error("the event of {0} is no longer in the log")]
    EventGone(String),
    #[error("workflow `{0}` is not loaded any more; nothing to replay it with")]
    WorkflowGone(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Replays one dead letter; returns how many actions now wait for delivery in its place.
pub async fn replay(store: &dyn Store, planner: &Planner, id: &str) -> Result<usize, ReplayError> {
    let record = match store.action(id).await? {
        Some(record) if record.status == ActionStatus::Failed => record,
        _ => return Err(ReplayError::NotFound(id.to_owned())),
    };
    let failed: PlannedAction = serde_json::from_value(record.body.clone())
        .map_err(|_| ReplayError::NotFound(id.to_owned()))?;
    let event = store
        .event(record.seq)
        .await?
        .ok_or_else(|| ReplayError::EventGone(id.to_owned()))?;
    let profiles = store.profiles(vec![event.identity.clone()]).await?;
    // Unreadable state is refused, never replaced by an empty default.
    let mut profile: Profile = match profiles.get(&event.identity) {
        Some(body) => stored::decode(body).map_err(|e| {
            StoreError::Unreadable(format!("the profile of {:?}: {e}", event.identity))
        })?,
        None => Profile::default(),
    };
    let mut shared = crate::shared::SharedState::load(store, std::slice::from_ref(&event)).await?;
    let mut body = event.body.clone();
    if let Some(object) = body.as_object_mut() {
        object
            .entry("timestamp")
            .or_insert_with(|| event.timestamp.to_rfc3339().into());
        object
            .entry("messageId")
            .or_insert_with(|| event.message_id.clone().into());
    }
    let plan = planner
        .plan_run(
            EventInput {
                message_id: &event.message_id,
                kind: &event.kind,
                identity: &event.identity,
                body: &body,
                timestamp_ms: event.timestamp.timestamp_millis(),
                segment_profile: None,
            },
            &failed.workflow,
            &mut profile,
            &mut shared.globals,
        )
        .ok_or_else(|| ReplayError::WorkflowGone(failed.workflow.clone()))?;
    // What the run already delivered is not sent again.
    let run = store.run(&record.run).await?;
    let delivered: HashSet<String> = run
        .map(|(_, actions)| {
            actions
                .into_iter()
                .filter(|a| a.status == ActionStatus::Done)
                .map(|a| a.id)
                .collect()
        })
        .unwrap_or_default();
    let suffix = format!("~replay{}", chrono::Utc::now().timestamp_millis());
    let fresh: Vec<_> = plan
        .actions
        .into_iter()
        .filter(|action| !delivered.contains(&action.id))
        .map(|mut action| {
            action.standby_for = action.standby_for.map(|s| format!("{s}{suffix}"));
            action.id = format!("{}{suffix}", action.id);
            new_action(&action, record.seq)
        })
        .collect();
    let count = fresh.len();
    if store.replay(id, fresh).await? {
        Ok(count)
    } else {
        Err(ReplayError::NotFound(id.to_owned()))
    }
}
