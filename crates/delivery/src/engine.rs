//! The engine loop: reads new events from the log in order, plans each against the user's
//! profile, and commits the plan (actions, timers, profile, cursor) in one transaction; then
//! fires due timers the same way. The only writer of profiles, so it can cache them.
//!
//! Per-user order starts here: events are planned strictly in log order, and the outbox keeps
//! the planning order for delivery.

use junction_flow::action::{Action, PlannedAction};
use junction_flow::{EventInput, Globals, Plan, Planner, Profile, TimerPlan};
use junction_store::{EngineCommit, NewAction, NewRun, NewTimer, Store, StoreError, StoredEvent};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Events planned per commit: big enough to amortise the commit, small enough to keep
/// planning latency low under a burst.
const BATCH: usize = 500;
/// Cached profiles before the cache is dropped (they are reloaded from the store on demand).
const PROFILE_CACHE: usize = 200_000;
/// How long a fresh Intercom notification waits for earlier ones that may arrive after it.
const INTERCOM_REORDER: Duration = Duration::from_millis(300);

/// Longest sleep between looks at the log and the timers when nothing wakes the loop.
const IDLE_POLL: Duration = Duration::from_millis(500);

pub struct Engine {
    store: Arc<dyn Store>,
    planner: Arc<Planner>,
    /// Rung by ingest after a commit.
    events_arrived: Arc<Notify>,
    /// Rung after plans are committed: delivery looks at the outbox.
    actions_planned: Arc<Notify>,
    profiles: HashMap<String, Profile>,
    globals: Globals,
    cursor: i64,
    profile_api: Option<Arc<crate::profiles::ProfileApiClient>>,
}

impl Engine {
    pub async fn new(
        store: Arc<dyn Store>,
        planner: Arc<Planner>,
        events_arrived: Arc<Notify>,
        actions_planned: Arc<Notify>,
    ) -> Result<Self, StoreError> {
        let (cursor, globals) = store.engine_state().await?;
        let globals = globals
            .and_then(|g| serde_json::from_str(&g).ok())
            .unwrap_or_default();
        Ok(Engine {
            store,
            planner,
            events_arrived,
            actions_planned,
            profiles: HashMap::new(),
            globals,
            cursor,
            profile_api: None,
        })
    }

    /// Runs until `shutdown` turns true. Store errors are logged and retried after a pause.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(
            cursor = self.cursor,
            workflows = self.planner.workflows().len(),
            "engine started"
        );
        loop {
            if *shutdown.borrow() {
                break;
            }
            match self.step(now_ms()).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(%error, "engine: store error; retrying in a second");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            let wait = match self.store.next_timer_ms().await {
                Ok(Some(at)) => Duration::from_millis(
                    (at - now_ms()).clamp(0, IDLE_POLL.as_millis() as i64) as u64,
                ),
                _ => IDLE_POLL,
            };
            tokio::select! {
                _ = self.events_arrived.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
        tracing::info!(cursor = self.cursor, "engine stopped");
    }

    /// Plans one batch of events, or else one batch of due timers. True when it did work.
    pub async fn step(&mut self, now_ms: i64) -> Result<bool, StoreError> {
        let mut events = self.store.events_after(self.cursor, BATCH).await?;
        if !events.is_empty() {
            // Intercom does not deliver notifications in order: give a fresh one a moment for
            // any earlier one still on its way, then plan each contact's in `created_at` order.
            let youngest = events
                .iter()
                .filter(|e| e.kind == "intercom")
                .map(|e| e.received_at.timestamp_millis())
                .max();
            if let Some(received) = youngest {
                let wait = received + INTERCOM_REORDER.as_millis() as i64
                    - chrono::Utc::now().timestamp_millis();
                if wait > 0 {
                    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                    events = self.store.events_after(self.cursor, BATCH).await?;
                }
                order_notifications(&mut events);
            }
            self.plan_events(events).await?;
            return Ok(true);
        }
        let due = self.store.due_timers(now_ms, BATCH).await?;
        if !due.is_empty() {
            self.fire_timers(due).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Loads the profiles of these identities that are not cached. A user's first event under
    /// a userId inherits what was kept under the anonymousId it came with.
    async fn load_profiles(
        &mut self,
        wanted: &[(String, Option<String>)],
    ) -> Result<(), StoreError> {
        if self.profiles.len() > PROFILE_CACHE {
            self.profiles.clear();
        }
        let mut missing: HashSet<String> = HashSet::new();
        for (identity, anonymous) in wanted {
            if !self.profiles.contains_key(identity) {
                missing.insert(identity.clone());
                if let Some(anonymous) = anonymous {
                    missing.insert(anonymous.clone());
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let stored = self.store.profiles(missing.into_iter().collect()).await?;
        for (identity, anonymous) in wanted {
            if self.profiles.contains_key(identity) {
                continue;
            }
            let parse = |key: &str| {
                stored
                    .get(key)
                    .and_then(|body| serde_json::from_str::<Profile>(body).ok())
            };
            let profile = parse(identity)
                .or_else(|| {
                    anonymous
                        .as_deref()
                        .filter(|a| a != identity)
                        .and_then(parse)
                })
                .or_else(|| {
                    anonymous
                        .as_deref()
                        .and_then(|a| self.profiles.get(a).cloned())
                })
                .unwrap_or_default();
            self.profiles.insert(identity.clone(), profile);
        }
        Ok(())
    }

    /// The log positions of Intercom notifications announcing a contact or conversation that
    /// Junction itself created (later changes to them are real news and are not filtered).
    async fn echoes(&self, events: &[StoredEvent]) -> Result<HashSet<i64>, StoreError> {
        let mut echoes = HashSet::new();
        for (kind, prefix) in [("contact", "contact."), ("conversation", "conversation.")] {
            let created: Vec<(i64, String)> = events
                .iter()
                .filter(|e| {
                    e.kind == "intercom"
                        && e.event
                            .as_deref()
                            .is_some_and(|t| t.starts_with(prefix) && t.ends_with(".created"))
                })
                .filter_map(|e| {
                    e.body["data"]["item"]["id"]
                        .as_str()
                        .map(|id| (e.seq, id.to_owned()))
                })
                .collect();
            if created.is_empty() {
                continue;
            }
            let made = self
                .store
                .made_by_junction(kind, created.iter().map(|(_, id)| id.clone()).collect())
                .await?;
            echoes.extend(
                created
                    .into_iter()
                    .filter(|(_, id)| made.contains(id))
                    .map(|(seq, _)| seq),
            );
        }
        Ok(echoes)
    }

    /// Uses Segment's Profile API for `segment_profile` in expressions (instead of Junction's
    /// own history of the user).
    pub fn with_profile_api(mut self, client: Option<crate::profiles::ProfileApiClient>) -> Self {
        // Only worth a request per event when some workflow reads it.
        let read = self
            .planner
            .workflows()
            .iter()
            .any(|w| w.uses.contains("segment_profile"));
        self.profile_api = client.filter(|_| read).map(Arc::new);
        self
    }

    /// The Segment profiles of these events' users, when a workflow reads `segment_profile` and
    /// the Profile API is configured (fetched side by side; a failure falls back to Junction's
    /// own history).
    async fn fetch_segment_profiles(
        &self,
        events: &[StoredEvent],
    ) -> HashMap<i64, serde_json::Value> {
        let Some(client) = &self.profile_api else {
            return HashMap::new();
        };
        let mut fetches = tokio::task::JoinSet::new();
        for event in events.iter().filter(|e| e.kind != "intercom") {
            let (client, seq) = (Arc::clone(client), event.seq);
            let (user, anonymous) = (event.user_id.clone(), event.anonymous_id.clone());
            fetches.spawn(async move {
                (
                    seq,
                    client.fetch(user.as_deref(), anonymous.as_deref()).await,
                )
            });
        }
        let mut found = HashMap::new();
        while let Some(Ok((seq, result))) = fetches.join_next().await {
            match result {
                Ok(Some(profile)) => {
                    found.insert(seq, profile);
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "using Junction's own history instead"),
            }
        }
        found
    }

    async fn plan_events(&mut self, events: Vec<StoredEvent>) -> Result<(), StoreError> {
        let wanted: Vec<(String, Option<String>)> = events
            .iter()
            .map(|e| (e.identity.clone(), e.anonymous_id.clone()))
            .collect();
        self.load_profiles(&wanted).await?;
        let remote_profiles = self.fetch_segment_profiles(&events).await;
        let echoes = self.echoes(&events).await?;
        let mut commit = EngineCommit::default();
        let mut touched = HashSet::new();
        let globals_before = self.globals.clone();
        for event in &events {
            let mut body = with_timestamp(event);
            if echoes.contains(&event.seq) {
                // Intercom telling of a conversation Junction started: mark it as Junction's,
                // so it triggers nothing (the same rule as for Segment calls coming back).
                body.to_mut()["context"] =
                    serde_json::json!({"junction": {"echo": "conversation"}});
            }
            let profile = self.profiles.entry(event.identity.clone()).or_default();
            let plan = self.planner.plan_event(
                EventInput {
                    message_id: &event.message_id,
                    kind: &event.kind,
                    identity: &event.identity,
                    body: &body,
                    timestamp_ms: event.timestamp.timestamp_millis(),
                    segment_profile: remote_profiles.get(&event.seq),
                },
                profile,
                &mut self.globals,
            );
            touched.insert(event.identity.clone());
            add_plan(&mut commit, plan, event.seq, &event.identity);
        }
        // Notifications may have been reordered: the cursor moves past the highest position.
        commit.cursor = events.iter().map(|e| e.seq).max();
        self.finish(commit, touched, globals_before, events.len())
            .await
    }

    async fn fire_timers(&mut self, due: Vec<(String, String)>) -> Result<(), StoreError> {
        let timers: Vec<TimerPlan> = due
            .iter()
            .filter_map(|(id, body)| match serde_json::from_str(body) {
                Ok(timer) => Some(timer),
                Err(error) => {
                    tracing::error!(timer = id, %error, "unreadable timer; dropping it");
                    None
                }
            })
            .collect();
        let wanted: Vec<(String, Option<String>)> =
            timers.iter().map(|t| (t.identity.clone(), None)).collect();
        self.load_profiles(&wanted).await?;
        let mut commit = EngineCommit::default();
        let mut touched = HashSet::new();
        let globals_before = self.globals.clone();
        for timer in &timers {
            let profile = self.profiles.entry(timer.identity.clone()).or_default();
            let plan = self.planner.plan_timer(timer, profile, &mut self.globals);
            touched.insert(timer.identity.clone());
            let seq = self.event_seq(&timer.message_id).await;
            add_plan(&mut commit, plan, seq, &timer.identity);
        }
        commit.timers_done.extend(due.into_iter().map(|(id, _)| id));
        self.finish(commit, touched, globals_before, 0).await
    }

    /// The log position of the event a timer's run started from (0 if it is gone).
    async fn event_seq(&self, message_id: &str) -> i64 {
        let query = junction_store::EventQuery {
            message_id: Some(message_id.to_owned()),
            limit: Some(1),
            ..Default::default()
        };
        match self.store.events(query).await {
            Ok(page) => page.items.first().map_or(0, |e| e.seq),
            Err(_) => 0,
        }
    }

    async fn finish(
        &mut self,
        mut commit: EngineCommit,
        touched: HashSet<String>,
        globals_before: Globals,
        events: usize,
    ) -> Result<(), StoreError> {
        for identity in touched {
            if let Some(profile) = self.profiles.get(&identity) {
                let body = serde_json::to_string(profile).expect("a profile is JSON");
                commit.profiles.push((identity, body));
            }
        }
        if self.globals != globals_before {
            commit.globals = Some(serde_json::to_string(&self.globals).expect("globals are JSON"));
        }
        let actions = commit.actions.len();
        let cursor = commit.cursor;
        if let Err(error) = self.store.engine_commit(commit).await {
            // The cache ran ahead of the store: forget it, and plan the batch again.
            self.profiles.clear();
            self.globals = globals_before;
            return Err(error);
        }
        if let Some(cursor) = cursor {
            self.cursor = cursor;
        }
        metrics::counter!("junction_events_planned_total").increment(events as u64);
        metrics::counter!("junction_actions_planned_total").increment(actions as u64);
        if actions > 0 {
            self.actions_planned.notify_one();
        }
        Ok(())
    }
}

/// Puts each contact's Intercom notifications in `created_at` order, in the places they hold
/// in the batch (everything else keeps its log order).
fn order_notifications(events: &mut [StoredEvent]) {
    let mut by_contact: HashMap<String, Vec<usize>> = HashMap::new();
    for (index, event) in events.iter().enumerate() {
        if event.kind == "intercom" {
            by_contact
                .entry(event.identity.clone())
                .or_default()
                .push(index);
        }
    }
    for places in by_contact.into_values().filter(|p| p.len() > 1) {
        let mut notifications: Vec<StoredEvent> =
            places.iter().map(|&i| events[i].clone()).collect();
        notifications.sort_by_key(|e| (e.timestamp, e.seq));
        for (place, notification) in places.into_iter().zip(notifications) {
            events[place] = notification;
        }
    }
}

/// The message as workflows see it: as sent, with `timestamp` filled in when the sender left
/// it out (Segment's rule: the time it was received) and `messageId` always present.
fn with_timestamp(event: &StoredEvent) -> std::borrow::Cow<'_, serde_json::Value> {
    let has = |field: &str| event.body.get(field).is_some_and(|v| !v.is_null());
    if has("timestamp") && has("messageId") {
        return std::borrow::Cow::Borrowed(&event.body);
    }
    let mut body = event.body.clone();
    if let Some(object) = body.as_object_mut() {
        object.entry("timestamp").or_insert_with(|| {
            event
                .timestamp
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into()
        });
        object
            .entry("messageId")
            .or_insert_with(|| event.message_id.clone().into());
    }
    std::borrow::Cow::Owned(body)
}

/// 0 for what a person is waiting on (messages, conversations, notes, owners, alerts), 1 for
/// bulk syncs.
pub fn lane(action: &Action) -> i64 {
    match action {
        Action::Message { .. }
        | Action::Conversation { .. }
        | Action::Note { .. }
        | Action::Owner { .. }
        | Action::Http { .. }
        | Action::Segment { .. } => 0,
        _ => 1,
    }
}

/// The outbox row of a planned action.
pub fn new_action(action: &PlannedAction, seq: i64) -> NewAction {
    NewAction {
        id: action.id.clone(),
        identity: action.identity.clone(),
        run: action.run.clone(),
        seq,
        lane: lane(&action.action),
        standby_for: action.standby_for.clone(),
        body: serde_json::to_string(action).expect("an action is JSON"),
    }
}

fn add_plan(commit: &mut EngineCommit, plan: Plan, seq: i64, identity: &str) {
    for run in plan.runs {
        if let Some(error) = &run.error {
            tracing::warn!(run = %run.run, %error, "workflow run stopped while planning");
        }
        commit.runs.push(NewRun {
            run: run.run,
            seq,
            workflow: run.workflow,
            identity: identity.to_owned(),
            actions: run.actions as i64,
            paused: run.paused,
            error: run.error,
        });
    }
    for action in &plan.actions {
        commit.actions.push(new_action(action, seq));
    }
    for timer in plan.timers {
        commit.timers.push(NewTimer {
            id: timer.id.clone(),
            identity: timer.identity.clone(),
            fire_at_ms: timer.fire_at_ms,
            body: serde_json::to_string(&timer).expect("a timer is JSON"),
        });
    }
    commit.timers_done.extend(plan.cancelled_timers);
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
