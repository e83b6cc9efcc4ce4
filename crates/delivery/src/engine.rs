//! One planning partition's engine: reads the partition's new events from the log in order,
//! plans each against the user's profile, and commits the plan (actions, timers, profile,
//! cursor) in one transaction; then fires the partition's due timers the same way. A user
//! belongs to one partition, and one engine plans a partition at a time (it holds the
//! partition's lease, see `planning.rs`), so it is the only writer of its users' profiles and
//! can cache them.
//!
//! Per-user order starts here: a partition's events are planned strictly in log order, and the
//! outbox keeps the planning order for delivery.
//!
//! State partitions share (round-robin turns, company traits) is read fresh for each step and
//! written back only if unchanged since (`shared.rs`); when another partition got there first,
//! the step is planned again. A user's first event under a userId inherits what was kept under
//! its anonymousId, which may live in another partition: that event waits until the other
//! partition has planned everything logged before it.
//!
//! Stored state is read strictly (`junction_flow::stored`): unreadable shared state stops the
//! engine (its supervisor reports it and retries), and a user whose profile cannot be read has
//! their events and timers held in quarantine — reported, never planned against an empty
//! profile — until `junction quarantine release` plans them again.

use crate::shared::SharedState;
use junction_flow::action::{HELD_SUFFIX, PlannedAction};
use junction_flow::{EventInput, Plan, Planner, Profile, TimerPlan, stored};
use junction_store::{
    Clock, EngineCommit, Lease, NewAction, NewQuarantine, NewRun, NewTimer, ReleasedEntry, Store,
    StoreError, StoredEvent, SystemClock, lane, partition_of,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Events planned per commit: big enough to amortise the commit, small enough to keep
/// planning latency low under a burst.
const BATCH: usize = 500;
/// Cached profiles (for all of a node's partitions together) before a partition's cache is
/// dropped (they are reloaded from the store on demand).
const PROFILE_CACHE: usize = 200_000;
/// How long a fresh Intercom notification waits for earlier ones that may arrive after it.
const INTERCOM_REORDER: Duration = Duration::from_millis(300);

/// Longest sleep between looks at the log and the timers when nothing wakes the loop.
const IDLE_POLL: Duration = Duration::from_millis(500);

pub struct Engine {
    store: Arc<dyn Store>,
    planner: Arc<Planner>,
    /// The planning partition this engine plans, of how many.
    partition: u32,
    partitions: u32,
    /// Changes when any node's ingest has committed events.
    events_arrived: watch::Receiver<u64>,
    /// Rung after plans are committed: delivery looks at the outbox.
    actions_planned: Arc<Notify>,
    profiles: HashMap<String, Profile>,
    /// Identities whose own stored profile was missing when loaded: their profile came from
    /// their anonymousId (or is new), which another partition may not have finished planning.
    inherited: HashSet<String>,
    cursor: i64,
    profile_api: Option<Arc<crate::profiles::ProfileApiClient>>,
    /// Users whose stored profile could not be read in this step, with the reason: their
    /// events are held in quarantine, never planned against an empty profile.
    unreadable: HashMap<String, String>,
    alerts: Option<crate::Alerter>,
    /// The planner's lease this engine plans under, and how long each renewal lasts: every
    /// commit carries it, and the store refuses commits once another node has taken it over.
    lease: Option<(Lease, Duration)>,
    /// The clock timers fall due by (the lease goes by the system's).
    clock: Arc<dyn Clock>,
    /// Where the workflows in force are taken from at the start of each batch (a reload
    /// replaces them); without it, `planner` stays.
    live: Option<Arc<crate::LivePlanner>>,
    /// The live tail, and what this step planned for it (shown once committed).
    tap: crate::Tap,
    tapped: Vec<crate::TapEntry>,
}

/// The name of the lease a partition's engine plans under.
pub fn partition_lease(partition: u32) -> String {
    format!("planner/{partition}")
}

impl Engine {
    pub async fn new(
        store: Arc<dyn Store>,
        planner: Arc<Planner>,
        partition: u32,
        events_arrived: watch::Receiver<u64>,
        actions_planned: Arc<Notify>,
    ) -> Result<Self, StoreError> {
        let cursor = store.cursor(partition).await?;
        let partitions = store.partitions().await?;
        // Round-robin turns serve every user: planning waits (and the engine reports itself
        // stopped) rather than start them over from nothing.
        SharedState::load(store.as_ref(), &[]).await?;
        Ok(Engine {
            store,
            planner,
            partition,
            partitions,
            events_arrived,
            actions_planned,
            profiles: HashMap::new(),
            inherited: HashSet::new(),
            cursor,
            profile_api: None,
            unreadable: HashMap::new(),
            alerts: None,
            lease: None,
            clock: Arc::new(SystemClock),
            live: None,
            tap: crate::Tap::default(),
            tapped: Vec::new(),
        })
    }

    /// Shows what this engine plans on `tap` (`junction tap`).
    pub fn with_tap(mut self, tap: crate::Tap) -> Self {
        self.tap = tap;
        self
    }

    /// Takes the workflows in force from `live` at the start of each batch.
    pub fn with_live_planner(mut self, live: Arc<crate::LivePlanner>) -> Self {
        self.live = Some(live);
        self
    }

    /// Timers fall due by this clock (a test's, to move time).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Plans under this lease (renewed every third of `duration` while the engine runs).
    pub fn with_lease(mut self, lease: Lease, duration: Duration) -> Self {
        self.lease = Some((lease, duration));
        self
    }

    /// Renews the lease when a third of it has passed. False when it was lost.
    async fn keep_lease(&mut self, renew_at: &mut tokio::time::Instant) -> bool {
        let Some((lease, duration)) = &self.lease else {
            return true;
        };
        if tokio::time::Instant::now() < *renew_at {
            return true;
        }
        match self
            .store
            .renew_lease(lease, now_ms(), duration.as_millis() as i64)
            .await
        {
            Ok(Some(renewed)) => {
                *renew_at = tokio::time::Instant::now() + *duration / 3;
                self.lease = Some((renewed, *duration));
                true
            }
            Ok(None) => false,
            // The lease may still be ours: try again on the next turn, and stop planning
            // once it has run out (commits would be refused anyway).
            Err(error) => {
                tracing::error!(%error, "engine: cannot renew the planner lease");
                lease.expires_ms > now_ms()
            }
        }
    }

    /// Where unreadable state is reported.
    pub fn with_alerts(mut self, alerts: crate::Alerter) -> Self {
        self.alerts = Some(alerts);
        self
    }

    /// Runs until `shutdown` turns true, or until the partition's lease (if any) is lost to
    /// another node. Store errors are logged and retried after a pause; stored state it cannot
    /// read stops it with the reason. Gives the lease up when it stops.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), String> {
        let partition = self.partition;
        tracing::info!(
            partition,
            cursor = self.cursor,
            workflows = self.planner.workflows().len(),
            "engine started"
        );
        let mut renew_at =
            tokio::time::Instant::now() + self.lease.as_ref().map_or(IDLE_POLL, |(_, d)| *d / 3);
        loop {
            if *shutdown.borrow() {
                break;
            }
            if !self.keep_lease(&mut renew_at).await {
                tracing::warn!(
                    partition,
                    "engine: another node took the partition's lease over; planning stops here"
                );
                return Ok(());
            }
            match self.step(self.clock.now_ms()).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(StoreError::Fenced { .. }) => {
                    tracing::warn!(
                        partition,
                        "engine: another node took the partition's lease over; planning stops here"
                    );
                    return Ok(());
                }
                Err(error @ StoreError::Unreadable(_)) => {
                    self.give_lease_up().await;
                    return Err(error.to_string());
                }
                Err(StoreError::Conflict(key)) => {
                    // Another partition changed shared state this step read: plan it again.
                    tracing::debug!(
                        partition,
                        key,
                        "engine: shared state changed; planning again"
                    );
                    metrics::counter!("junction_planning_conflicts_total").increment(1);
                    continue;
                }
                Err(error) => {
                    tracing::error!(partition, %error, "engine: store error; retrying in a second");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            let wait = match self.store.next_timer_ms(self.partition).await {
                Ok(Some(at)) => Duration::from_millis(
                    (at - self.clock.now_ms()).clamp(0, IDLE_POLL.as_millis() as i64) as u64,
                ),
                _ => IDLE_POLL,
            };
            tokio::select! {
                // An error means the bell is gone (the node is stopping): poll until then.
                Ok(()) = self.events_arrived.changed() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
        self.give_lease_up().await;
        tracing::info!(partition, cursor = self.cursor, "engine stopped");
        Ok(())
    }

    async fn give_lease_up(&self) {
        if let Some((lease, _)) = &self.lease
            && let Err(error) = self.store.release_lease(lease).await
        {
            tracing::warn!(partition = self.partition, %error, "engine: cannot give the partition's lease up; it lapses by itself");
        }
    }

    /// Plans one batch of events, or else one batch of due timers. True when it did work.
    pub async fn step(&mut self, now_ms: i64) -> Result<bool, StoreError> {
        // A batch boundary: the workflows in force now plan the whole batch.
        if let Some(live) = &self.live {
            self.planner = live.current();
        }
        let released = self
            .store
            .quarantine_released(self.partition, BATCH)
            .await?;
        if !released.is_empty() {
            self.plan_released(released, now_ms).await?;
            return Ok(true);
        }
        // Marks this point: events committed from here on change the bell, so none is missed
        // between this read and the wait that follows an empty one.
        self.events_arrived.borrow_and_update();
        let mut events = self
            .store
            .events_after(self.partition, self.cursor, BATCH)
            .await?;
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
                    events = self
                        .store
                        .events_after(self.partition, self.cursor, BATCH)
                        .await?;
                }
                order_notifications(&mut events);
            }
            if self.plan_events(events).await? {
                return Ok(true);
            }
        }
        let due = self.store.due_timers(self.partition, now_ms, BATCH).await?;
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
        if self.profiles.len() > PROFILE_CACHE / self.partitions.max(1) as usize {
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
            // A stored profile that cannot be read is never replaced by an empty one.
            let parse = |key: &str| -> Result<Option<Profile>, String> {
                match stored.get(key) {
                    None => Ok(None),
                    Some(body) => stored::decode::<Profile>(body)
                        .map(Some)
                        .map_err(|e| format!("the stored profile of {key:?} is {e}")),
                }
            };
            let inherited = || -> Result<Option<Profile>, String> {
                let Some(anonymous) = anonymous.as_deref().filter(|a| a != identity) else {
                    return Ok(None);
                };
                if let Some(cached) = self.profiles.get(anonymous) {
                    return Ok(Some(cached.clone()));
                }
                parse(anonymous)
            };
            let own = parse(identity);
            if matches!(own, Ok(None)) {
                self.inherited.insert(identity.clone());
            }
            match own.and_then(|own| match own {
                Some(profile) => Ok(Some(profile)),
                None => inherited(),
            }) {
                Ok(profile) => {
                    self.unreadable.remove(identity);
                    self.profiles
                        .insert(identity.clone(), profile.unwrap_or_default());
                }
                Err(reason) => {
                    self.unreadable.insert(identity.clone(), reason);
                }
            }
        }
        Ok(())
    }

    /// Holds an event (or timer) of a user whose state is unreadable, with a run saying so,
    /// and reports it.
    fn hold(&self, commit: &mut EngineCommit, identity: &str, seq: i64, timer: Option<String>) {
        let reason = self.unreadable.get(identity).cloned().unwrap_or_default();
        let what = if timer.is_some() { "timer" } else { "event" };
        tracing::error!(identity, seq, %reason, "{what} held in quarantine: the user's state is unreadable");
        metrics::counter!("junction_quarantined_total", "kind" => what).increment(1);
        if let Some(alerts) = &self.alerts {
            alerts.raise(
                crate::alerts::AlertKind::UnreadableState,
                format!("{identity}: {reason}"),
            );
        }
        commit.runs.push(NewRun {
            run: format!("quarantine/{seq}/{identity}"),
            seq,
            workflow: "(quarantine)".into(),
            identity: identity.to_owned(),
            actions: 0,
            paused: false,
            error: Some(format!(
                "{what} held, not planned: {reason}; release with `junction quarantine release`"
            )),
        });
        commit.quarantine.push(NewQuarantine {
            identity: identity.to_owned(),
            seq,
            timer,
            reason,
        });
    }

    /// Plans entries an operator released from quarantine: held events (in log order, the
    /// cursor staying where it is) and held timers (armed again, due now).
    async fn plan_released(
        &mut self,
        released: Vec<ReleasedEntry>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut events = Vec::new();
        let mut commit = self.new_commit();
        for entry in &released {
            // Their profiles were unreadable: read them again (released means repaired or reset).
            self.profiles.remove(&entry.identity);
            match &entry.timer {
                Some(body) => {
                    if let Ok(held) = serde_json::from_str::<TimerPlan>(body) {
                        let timer = TimerPlan {
                            id: format!("{}/released/{}", held.id, entry.id),
                            ..held
                        };
                        commit.timers.push(NewTimer {
                            id: timer.id.clone(),
                            identity: timer.identity.clone(),
                            fire_at_ms: now_ms,
                            body: serde_json::to_string(&timer).expect("a timer is JSON"),
                        });
                    }
                }
                None => {
                    if let Some(event) = self.store.event(entry.seq).await? {
                        events.push(event);
                    }
                }
            }
        }
        commit.released_done = released.iter().map(|e| e.id).collect();
        self.load_profiles_of(&events).await?;
        self.plan_into(events, commit).await
    }

    /// Loads the profiles of these events' users for one step (what was unreadable or
    /// inherited in the step before is looked at afresh).
    async fn load_profiles_of(&mut self, events: &[StoredEvent]) -> Result<(), StoreError> {
        self.unreadable.clear();
        self.inherited.clear();
        let wanted: Vec<(String, Option<String>)> = events
            .iter()
            .map(|e| (e.identity.clone(), e.anonymous_id.clone()))
            .collect();
        self.load_profiles(&wanted).await
    }

    /// The position in `events` of the first event that must wait: a user's first event under
    /// a userId, whose anonymousId lives in another partition that has not yet planned every
    /// event logged before this one (the profile it inherits would miss them).
    async fn first_to_wait(&self, events: &[StoredEvent]) -> Result<Option<usize>, StoreError> {
        let mut checked = HashSet::new();
        for (index, event) in events.iter().enumerate() {
            let Some(anonymous) = &event.anonymous_id else {
                continue;
            };
            let elsewhere = partition_of(anonymous, self.partitions);
            if anonymous == &event.identity
                || elsewhere == self.partition
                || !self.inherited.contains(&event.identity)
                || !checked.insert(event.identity.clone())
            {
                continue;
            }
            let cursor = self.store.cursor(elsewhere).await?;
            let next = self.store.events_after(elsewhere, cursor, 1).await?;
            if next.first().is_some_and(|e| e.seq < event.seq) {
                return Ok(Some(index));
            }
        }
        Ok(None)
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
    pub fn with_profile_api(
        mut self,
        client: Option<Arc<crate::profiles::ProfileApiClient>>,
    ) -> Self {
        // Only worth a request per event when some workflow reads it.
        let read = self
            .planner
            .workflows()
            .iter()
            .any(|w| w.uses.contains("segment_profile"));
        self.profile_api = client.filter(|_| read);
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

    /// Plans new events; false when the first of them must wait for another partition.
    async fn plan_events(&mut self, mut events: Vec<StoredEvent>) -> Result<bool, StoreError> {
        self.load_profiles_of(&events).await?;
        if let Some(wait) = self.first_to_wait(&events).await? {
            // What was inherited for the events left for later is read again then.
            for event in &events[wait..] {
                if self.inherited.contains(&event.identity) {
                    self.profiles.remove(&event.identity);
                }
            }
            events.truncate(wait);
            if events.is_empty() {
                return Ok(false);
            }
        }
        // Notifications may have been reordered: the cursor moves past the highest position.
        let commit = EngineCommit {
            cursor: events.iter().map(|e| e.seq).max(),
            ..self.new_commit()
        };
        self.plan_into(events, commit).await?;
        Ok(true)
    }

    fn new_commit(&self) -> EngineCommit {
        EngineCommit {
            partition: self.partition,
            ..EngineCommit::default()
        }
    }

    /// Plans events into `commit` (which may already carry a cursor or released entries); their
    /// users' profiles are loaded already ([`Self::load_profiles_of`]).
    async fn plan_into(
        &mut self,
        events: Vec<StoredEvent>,
        mut commit: EngineCommit,
    ) -> Result<(), StoreError> {
        let remote_profiles = self.fetch_segment_profiles(&events).await;
        let echoes = self.echoes(&events).await?;
        let mut touched = HashSet::new();
        let mut shared = SharedState::load(self.store.as_ref(), &events).await?;
        for event in &events {
            if self.unreadable.contains_key(&event.identity) {
                self.hold(&mut commit, &event.identity, event.seq, None);
                continue;
            }
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
                &mut shared.globals,
            );
            touched.insert(event.identity.clone());
            if self.tap.listening() {
                self.tapped
                    .extend(plan.actions.iter().map(|action| crate::TapEntry::Planned {
                        at: crate::tap::now(),
                        action: action.id.clone(),
                        workflow: action.workflow.clone(),
                        kind: action.action.kind().to_owned(),
                        user: action.identity.clone(),
                        event_type: event.kind.clone(),
                    }));
            }
            add_plan(&mut commit, plan, event.seq, &event.identity);
        }
        self.finish(commit, touched, shared, events.len()).await
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
        self.unreadable.clear();
        let wanted: Vec<(String, Option<String>)> =
            timers.iter().map(|t| (t.identity.clone(), None)).collect();
        self.load_profiles(&wanted).await?;
        let mut commit = self.new_commit();
        let mut touched = HashSet::new();
        let mut shared = SharedState::load(self.store.as_ref(), &[]).await?;
        for timer in &timers {
            let seq = self.event_seq(&timer.message_id).await;
            if self.unreadable.contains_key(&timer.identity) {
                let body = serde_json::to_string(timer).expect("a timer is JSON");
                self.hold(&mut commit, &timer.identity, seq, Some(body));
                continue;
            }
            let profile = self.profiles.entry(timer.identity.clone()).or_default();
            let plan = self.planner.plan_timer(timer, profile, &mut shared.globals);
            touched.insert(timer.identity.clone());
            add_plan(&mut commit, plan, seq, &timer.identity);
        }
        commit.timers_done.extend(due.into_iter().map(|(id, _)| id));
        self.finish(commit, touched, shared, 0).await
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
        shared: SharedState,
        events: usize,
    ) -> Result<(), StoreError> {
        for identity in touched {
            if let Some(profile) = self.profiles.get(&identity) {
                commit.profiles.push((identity, stored::encode(profile)));
            }
        }
        commit.shared = shared.writes();
        let actions = commit.actions.len();
        let capped = commit.actions.iter().filter(|a| a.capped.is_some()).count();
        let held = commit
            .timers
            .iter()
            .filter(|t| t.id.ends_with(HELD_SUFFIX))
            .count();
        let cursor = commit.cursor;
        commit.lease = self.lease.as_ref().map(|(lease, _)| lease.clone());
        let tapped = std::mem::take(&mut self.tapped);
        if let Err(error) = self.store.engine_commit(commit).await {
            // The cache ran ahead of the store: forget it, and plan the batch again.
            self.profiles.clear();
            return Err(error);
        }
        for entry in tapped {
            self.tap.publish(entry);
        }
        if let Some(cursor) = cursor {
            self.cursor = cursor;
        }
        metrics::counter!("junction_events_planned_total").increment(events as u64);
        metrics::counter!("junction_actions_planned_total").increment(actions as u64);
        // Journeys' guards at work: messages over a frequency cap, and held through quiet hours.
        metrics::counter!("junction_messages_capped_total").increment(capped as u64);
        metrics::counter!("junction_messages_held_total").increment(held as u64);
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

/// The action's delivery [`lane`]: everything planned for a backfilled event goes in the
/// backfill lane, behind live traffic; otherwise what a person is waiting on (messages,
/// conversations, notes, owners, alerts) is urgent and syncs are bulk.
pub fn lane(action: &PlannedAction) -> i64 {
    if action.bulk {
        lane::BACKFILL
    } else if action.action.urgent() {
        lane::URGENT
    } else {
        lane::BULK
    }
}

/// The outbox row of a planned action.
pub fn new_action(action: &PlannedAction, seq: i64) -> NewAction {
    NewAction {
        id: action.id.clone(),
        identity: action.identity.clone(),
        run: action.run.clone(),
        seq,
        lane: lane(action),
        standby_for: action.standby_for.clone(),
        capped: action.capped.clone(),
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
    commit.timers_rescheduled.extend(plan.rescheduled_timers);
    if let Some(ids) = plan.erase {
        commit.erasures.push(junction_store::Erasure {
            ids,
            before_seq: seq,
        });
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
