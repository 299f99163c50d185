//! The one owner of phone state: an actor task that receives typed commands.
//!
//! Every phone has an explicit lifecycle ([`Lifecycle`]): Creating, Booting,
//! Running, Stopping, Stopped, or Failed with a reason. Long operations (an
//! emulator boot takes minutes) run in tasks that report back to the actor,
//! so it always answers at once. What the operator wants (running or
//! stopped) is recorded in the registry first, so after a restart, even
//! after `kill -9`, every phone comes back in its recorded desired state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc, oneshot, watch};

use crate::HostError;
use crate::backend::{
    AttachPointsFor, BackendContext, BackendKind, Backends, PhoneBackend, PhoneEndpoint,
    Unavailable,
};
use crate::emu_client::EmulatorClient;
use crate::lease::{FleetConfig, RoundInput, RoundResult};
use crate::registry::{Backend, DesiredState, Lease, PhoneRecord, Registry, validate_name};
use crate::status::{Board, StatusBoard, StatusHandle};

/// The screen a phone gets when none is asked for: width, height (pixels)
/// and density (dpi).
pub const DEFAULT_DISPLAY: (u32, u32, u32) = (720, 1280, 320);

/// Where a phone is in its life.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Lifecycle {
    /// Being set up.
    Creating,
    /// Starting; not yet usable.
    Booting,
    /// Up and serving its API.
    Running,
    /// Shutting down.
    Stopping,
    /// Not running.
    Stopped,
    /// Crashed or could not start; the reason says why.
    Failed(String),
}

impl Lifecycle {
    /// Every state's [`name`](Self::name), in lifecycle order: the one list
    /// that `/metrics` and the CLI iterate, so a new state cannot drop out.
    pub const NAMES: [&'static str; 6] = [
        "creating", "booting", "running", "stopping", "stopped", "failed",
    ];

    /// A short lowercase name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Booting => "booting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Failed(_) => "failed",
        }
    }
}

#[cfg(test)]
mod lifecycle_tests {
    use super::Lifecycle;

    #[test]
    fn names_lists_every_state_once_in_order() {
        let all = [
            Lifecycle::Creating,
            Lifecycle::Booting,
            Lifecycle::Running,
            Lifecycle::Stopping,
            Lifecycle::Stopped,
            Lifecycle::Failed(String::new()),
        ];
        // A new variant breaks this match until NAMES and `all` learn it.
        for l in &all {
            match l {
                Lifecycle::Creating
                | Lifecycle::Booting
                | Lifecycle::Running
                | Lifecycle::Stopping
                | Lifecycle::Stopped
                | Lifecycle::Failed(_) => {}
            }
        }
        let names: Vec<_> = all.iter().map(Lifecycle::name).collect();
        assert_eq!(names, Lifecycle::NAMES);
    }
}

/// What to do when a running phone dies on its own.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum RestartPolicy {
    /// Mark it Failed.
    Never,
    /// Restart it, at most this many times in a row.
    OnFailure(u32),
}

/// A phone as the actor sees it.
#[derive(Clone, Debug)]
pub struct PhoneView {
    /// The recorded phone.
    pub record: PhoneRecord,
    /// Its current lifecycle state.
    pub state: Lifecycle,
    /// The latest progress message of a boot.
    pub progress: Option<String>,
    /// Where its API answers, while running.
    pub endpoint: Option<PhoneEndpoint>,
}

/// A request to create a phone.
#[derive(Clone, Debug)]
pub struct PhoneSpec {
    /// Unique name.
    pub name: String,
    /// Backend.
    pub backend: Backend,
    /// Screen width, height (pixels) and density (dpi).
    pub display: (u32, u32, u32),
    /// AVD name (emulator only).
    pub avd: Option<String>,
    /// Start it right away.
    pub start: bool,
}

impl PhoneSpec {
    /// The registry record of a phone made from this spec, checked: its
    /// name, what its backend `kind` can run, its density. Pure: nothing is
    /// created.
    ///
    /// # Errors
    /// [`HostError::Invalid`] or [`HostError::InvalidSize`] saying what is
    /// wrong.
    pub fn record(&self, kind: &dyn BackendKind, now_ms: i64) -> Result<PhoneRecord, HostError> {
        validate_name("phone name", &self.name)?;
        let record = self.unchecked_record(now_ms);
        let dpi = record.dpi;
        kind.check(&record)?;
        if !(120..=640).contains(&dpi) {
            return Err(HostError::Invalid {
                what: "display",
                why: format!("density {dpi} dpi is outside 120..640"),
            });
        }
        Ok(record)
    }

    /// The registry record of this spec as it stands, unchecked (the host's
    /// own first phone, from its configuration).
    fn unchecked_record(&self, now_ms: i64) -> PhoneRecord {
        let (width, height, dpi) = self.display;
        PhoneRecord {
            name: self.name.clone(),
            backend: self.backend,
            desired: if self.start {
                DesiredState::Running
            } else {
                DesiredState::Stopped
            },
            width,
            height,
            dpi,
            avd: self.avd.clone(),
            created_at_ms: now_ms,
        }
    }
}

/// Settings of the phone manager.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// The host's data dir (emulator logs go under `logs/`).
    pub data_dir: PathBuf,
    /// Each phone's Bluetooth attach point, opened when it starts and
    /// closed when it is deleted.
    pub attach: Arc<dyn AttachPointsFor>,
    /// How long an emulator boot may take.
    pub boot_timeout: Duration,
    /// What to do when a phone dies.
    pub restart: RestartPolicy,
    /// Extra emulator arguments.
    pub emulator_args: Vec<String>,
    /// The backends phones run with.
    pub backends: Backends,
    /// The phone created (and started) when the registry has none.
    pub first_phone: Option<PhoneSpec>,
    /// The leases this host runs phones under.
    pub fleet: FleetConfig,
}

type Reply<T> = oneshot::Sender<Result<T, HostError>>;
type BootResult = Result<(PhoneEndpoint, EmulatorClient), HostError>;

enum Cmd {
    Create(PhoneSpec, Reply<PhoneView>),
    List(Reply<Vec<PhoneView>>),
    Get(String, Reply<PhoneView>),
    Start(String, Reply<PhoneView>),
    Stop(String, Reply<PhoneView>),
    Delete(String, bool, Reply<()>),
    Connect(String, Reply<EmulatorClient>),
    Booted(String, u64, Box<BootResult>),
    StopDone(String, u64),
    Exited(String, u64, String),
    Progress(String, u64, String),
    Tick,
    Round(Box<RoundResult>, Instant),
    Quiesce(oneshot::Sender<()>),
}

/// A handle to the phone actor. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PhoneManager {
    tx: mpsc::Sender<Cmd>,
    status: StatusBoard,
    states: States,
}

/// What a watcher of a phone sees ([`PhoneManager::watch`]).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct PhoneWatch {
    /// Its lifecycle state now.
    pub state: Lifecycle,
    /// How many times it has failed (a watcher that compares this misses
    /// no failure, even when a restart followed before it looked).
    pub failures: u64,
    /// Why it last failed.
    pub last_failure: Option<String>,
    /// It stopped (or is stopping) here because another host of the fleet
    /// takes it over: its lease was lost, given up (drain, move), or could
    /// not be renewed.
    pub handed_over: bool,
}

impl Default for PhoneWatch {
    fn default() -> Self {
        Self {
            state: Lifecycle::Creating,
            failures: 0,
            last_failure: None,
            handed_over: false,
        }
    }
}

/// Every phone's lifecycle state as a watch, so a session can follow its
/// phone (and end when the phone stops or fails).
#[derive(Clone, Debug, Default)]
struct States(Board<PhoneWatch>);

impl States {
    fn sender(&self, phone: &str) -> watch::Sender<PhoneWatch> {
        self.0.sender(phone)
    }

    fn publish(&self, phone: &str, state: &Lifecycle) {
        self.sender(phone).send_if_modified(|w| {
            if &w.state == state {
                return false;
            }
            if let Lifecycle::Failed(why) = state {
                w.failures += 1;
                w.last_failure = Some(why.clone());
            }
            w.state = state.clone();
            true
        });
    }

    fn handed_over(&self, phone: &str, yes: bool) {
        self.sender(phone).send_if_modified(|w| {
            let changed = w.handed_over != yes;
            w.handed_over = yes;
            changed
        });
    }

    fn remove(&self, phone: &str) {
        if let Some(tx) = self.0.remove(phone) {
            tx.send_modify(|w| w.state = Lifecycle::Stopped);
        }
    }
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
}

impl PhoneManager {
    /// Starts the actor: loads every recorded phone and starts those whose
    /// desired state is running. When the registry has no phone at all, it
    /// first creates [`ManagerConfig::first_phone`].
    ///
    /// # Errors
    /// [`HostError::Registry`] when the registry cannot be read.
    pub fn spawn(registry: Arc<Registry>, cfg: ManagerConfig) -> Result<Self, HostError> {
        let (tx, rx) = mpsc::channel(64);
        let status = StatusBoard::default();
        let states = States::default();
        let mut actor = Actor {
            registry,
            cfg,
            phones: HashMap::new(),
            tx: tx.clone(),
            status: status.clone(),
            states: states.clone(),
            leases: BTreeMap::new(),
            fresh: BTreeSet::new(),
            renewed_at: None,
            round_in_flight: false,
            last_round: Instant::now(),
            draining: false,
            pending_release: Vec::new(),
            shutting_down: false,
            quiesced: None,
        };
        // An operator's drain outlives a restart.
        actor.draining = actor
            .registry
            .host(&actor.cfg.fleet.host)
            .is_ok_and(|h| h.draining);
        // Leases this host's previous run still held (it was killed) are
        // released first: they are claimed again below, like any other.
        let released = actor
            .registry
            .release_all(&actor.cfg.fleet.host, crate::unix_ms())?;
        if released > 0 {
            tracing::info!(released, "released the leases of this host's previous run");
        }
        if let Some(first) = actor.cfg.first_phone.clone()
            && actor.registry.phones()?.is_empty()
        {
            match actor
                .registry
                .insert_phone(&first.unchecked_record(crate::unix_ms()))
            {
                Ok(()) => tracing::info!(
                    "no phone recorded: created {} phone {}",
                    first.backend.as_str(),
                    first.name
                ),
                // Another host of the fleet, starting at the same time, did.
                Err(HostError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for record in actor.registry.phones()? {
            let want = record.desired;
            let name = record.name.clone();
            actor
                .phones
                .insert(name.clone(), Entry::new(record, &actor.cfg));
            if want == DesiredState::Running {
                actor.begin_start(&name);
            }
        }
        actor.publish();
        let every = (actor.cfg.fleet.round() / 4).max(Duration::from_millis(50));
        let ticks = tx.downgrade();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(tx) = ticks.upgrade() else { break };
                if tx.send(Cmd::Tick).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(actor.run(rx));
        Ok(Self { tx, status, states })
    }

    /// Stops lease rounds and claims and waits for a round in flight (a
    /// clean shutdown: the host releases its leases next).
    pub async fn quiesce(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Quiesce(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// `phone`'s lifecycle state, its failures and their changes (a
    /// deleted phone's ends as Stopped).
    #[must_use]
    pub fn watch(&self, phone: &str) -> watch::Receiver<PhoneWatch> {
        self.states.sender(phone).subscribe()
    }

    /// Where the host writes what `phone` shows of its state (its session,
    /// its Bluetooth link); works whether or not the phone runs.
    #[must_use]
    pub fn status(&self, phone: &str) -> StatusHandle {
        self.status.handle(phone)
    }

    /// What `phone` shows of the host now (who drives it, the radio), and
    /// its changes.
    #[must_use]
    pub fn watch_status(&self, phone: &str) -> watch::Receiver<crate::status::PhoneStatus> {
        self.status.subscribe(phone)
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, HostError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Creates a phone (and starts it when the spec asks).
    ///
    /// # Errors
    /// [`HostError::AlreadyExists`], [`HostError::Invalid`].
    pub async fn create(&self, spec: PhoneSpec) -> Result<PhoneView, HostError> {
        self.call(|r| Cmd::Create(spec, r)).await
    }

    /// Every phone.
    ///
    /// # Errors
    /// Only if the actor is gone.
    pub async fn list(&self) -> Result<Vec<PhoneView>, HostError> {
        self.call(Cmd::List).await
    }

    /// One phone.
    ///
    /// # Errors
    /// [`HostError::NotFound`].
    pub async fn get(&self, name: &str) -> Result<PhoneView, HostError> {
        self.call(|r| Cmd::Get(name.to_owned(), r)).await
    }

    /// Starts a phone (returns at once, in Booting).
    ///
    /// # Errors
    /// [`HostError::NotFound`].
    pub async fn start(&self, name: &str) -> Result<PhoneView, HostError> {
        self.call(|r| Cmd::Start(name.to_owned(), r)).await
    }

    /// Stops a phone (returns at once, in Stopping or Stopped).
    ///
    /// # Errors
    /// [`HostError::NotFound`].
    pub async fn stop(&self, name: &str) -> Result<PhoneView, HostError> {
        self.call(|r| Cmd::Stop(name.to_owned(), r)).await
    }

    /// Deletes a phone; a running one only with `force` (it is stopped first).
    ///
    /// # Errors
    /// [`HostError::NotFound`], [`HostError::Invalid`] for a running phone
    /// without `force`.
    pub async fn delete(&self, name: &str, force: bool) -> Result<(), HostError> {
        self.call(|r| Cmd::Delete(name.to_owned(), force, r)).await
    }

    /// A gRPC client for a running phone.
    ///
    /// # Errors
    /// [`HostError::NotFound`], or [`HostError::Conflict`] when it is not running.
    pub async fn connect(&self, name: &str) -> Result<EmulatorClient, HostError> {
        self.call(|r| Cmd::Connect(name.to_owned(), r)).await
    }

    /// Waits until the phone is Running (or Failed / Stopped: an error).
    ///
    /// # Errors
    /// The failure reason, or a timeout.
    pub async fn wait_running(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<PhoneView, HostError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let v = self.get(name).await?;
            match &v.state {
                Lifecycle::Running => return Ok(v),
                Lifecycle::Failed(why) => {
                    return Err(HostError::Unavailable {
                        what: "phone",
                        why: format!("'{name}' failed: {why}"),
                    });
                }
                Lifecycle::Stopped => {
                    return Err(HostError::Conflict(format!(
                        "phone '{name}' is stopped; start it first"
                    )));
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(HostError::Unavailable {
                    what: "phone",
                    why: format!(
                        "'{name}' is still {} after {}s",
                        v.state.name(),
                        timeout.as_secs()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn gone() -> HostError {
    HostError::Unavailable {
        what: "host",
        why: "the phone manager has stopped".to_owned(),
    }
}

struct Entry {
    record: PhoneRecord,
    state: Lifecycle,
    progress: Option<String>,
    backend: Arc<Mutex<Box<dyn PhoneBackend>>>,
    running: Option<(PhoneEndpoint, EmulatorClient)>,
    generation: u64,
    boot: Option<tokio::task::AbortHandle>,
    restarts: u32,
}

impl ManagerConfig {
    /// What `phone`'s backend needs to know about this host; opens the
    /// phone's Bluetooth attach point. A phone whose attach point cannot
    /// open still runs, without Bluetooth.
    fn backend_context(&self, phone: &str) -> BackendContext {
        let packet_streamer = match self.attach.open(phone) {
            Ok(addr) => addr.to_string(),
            Err(e) => {
                tracing::warn!(%phone, error = %e, "no Bluetooth attach point");
                String::new()
            }
        };
        BackendContext {
            data_dir: self.data_dir.clone(),
            packet_streamer,
            boot_timeout: self.boot_timeout,
            emulator_args: self.emulator_args.clone(),
        }
    }
}

fn make_backend(record: &PhoneRecord, cfg: &ManagerConfig) -> Box<dyn PhoneBackend> {
    match cfg.backends.get(record.backend) {
        Some(kind) => kind.make(record, &cfg.backend_context(&record.name)),
        None => Box::new(Unavailable(record.backend)),
    }
}

impl Entry {
    fn new(record: PhoneRecord, cfg: &ManagerConfig) -> Self {
        Self {
            backend: Arc::new(Mutex::new(make_backend(&record, cfg))),
            record,
            state: Lifecycle::Stopped,
            progress: None,
            running: None,
            generation: 0,
            boot: None,
            restarts: 0,
        }
    }

    fn view(&self) -> PhoneView {
        PhoneView {
            record: self.record.clone(),
            state: self.state.clone(),
            progress: self.progress.clone(),
            endpoint: self.running.as_ref().map(|r| r.0.clone()),
        }
    }
}

struct Actor {
    registry: Arc<Registry>,
    cfg: ManagerConfig,
    phones: HashMap<String, Entry>,
    tx: mpsc::Sender<Cmd>,
    status: StatusBoard,
    states: States,
    /// The leases this host holds: the phones it may run.
    leases: BTreeMap<String, Lease>,
    /// Leases claimed since the running round started (its renewal may
    /// not list them).
    fresh: BTreeSet<String>,
    /// When the last renewal that succeeded was sent: every lease held
    /// then runs until at least that plus the lease length.
    renewed_at: Option<Instant>,
    round_in_flight: bool,
    last_round: Instant,
    draining: bool,
    /// Leases whose phones were given up, released once they stopped.
    pending_release: Vec<Lease>,
    /// The host is shutting down: no more rounds or claims.
    shutting_down: bool,
    /// Answered once no round is in flight any more (shutdown).
    quiesced: Option<oneshot::Sender<()>>,
}

fn not_found(name: &str) -> HostError {
    HostError::NotFound {
        kind: "phone",
        name: name.to_owned(),
    }
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        while let Some(cmd) = rx.recv().await {
            self.handle(cmd);
            self.publish();
        }
    }

    /// Tells the watchers of every phone its state.
    fn publish(&self) {
        for (name, e) in &self.phones {
            self.states.publish(name, &e.state);
        }
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Create(spec, r) => {
                let _ = r.send(self.create(spec));
            }
            Cmd::List(r) => {
                let mut v: Vec<_> = self.phones.values().map(Entry::view).collect();
                v.sort_by(|a, b| a.record.name.cmp(&b.record.name));
                let _ = r.send(Ok(v));
            }
            Cmd::Get(name, r) => {
                let _ = r.send(
                    self.phones
                        .get(&name)
                        .map(Entry::view)
                        .ok_or_else(|| not_found(&name)),
                );
            }
            Cmd::Start(name, r) => {
                let res = self.set_desired(&name, DesiredState::Running).map(|()| {
                    self.begin_start(&name);
                    self.phones[&name].view()
                });
                let _ = r.send(res);
            }
            Cmd::Stop(name, r) => {
                let res = self.set_desired(&name, DesiredState::Stopped).map(|()| {
                    self.begin_stop(&name);
                    if let Some(lease) = self.leases.remove(&name) {
                        self.pending_release.push(lease);
                    }
                    self.phones[&name].view()
                });
                let _ = r.send(res);
            }
            Cmd::Delete(name, force, r) => {
                let _ = r.send(self.delete(&name, force));
            }
            Cmd::Connect(name, r) => {
                let res = match self.phones.get(&name) {
                    None => Err(not_found(&name)),
                    Some(e) => match &e.running {
                        Some((_, c)) if e.state == Lifecycle::Running => Ok(c.clone()),
                        _ => Err(HostError::Conflict(format!(
                            "phone '{name}' is {}, not running",
                            e.state.name()
                        ))),
                    },
                };
                let _ = r.send(res);
            }
            Cmd::Booted(name, generation, res) => self.booted(&name, generation, *res),
            Cmd::StopDone(name, generation) => {
                if let Some(e) = self.phones.get_mut(&name)
                    && e.generation == generation
                    && e.state == Lifecycle::Stopping
                {
                    e.state = Lifecycle::Stopped;
                    tracing::info!(phone = %name, "stopped");
                }
                // A phone given up is released as soon as it stopped, so
                // the next host claims it without waiting for a round.
                if let Some(i) = self.pending_release.iter().position(|l| l.phone == name) {
                    let lease = self.pending_release.swap_remove(i);
                    let registry = self.registry.clone();
                    tokio::task::spawn_blocking(move || {
                        match registry.release(&lease, crate::unix_ms()) {
                            Ok(true) => tracing::info!(phone = %lease.phone, "lease released"),
                            Ok(false) => {}
                            Err(e) => {
                                tracing::warn!(phone = %lease.phone, error = %e, "lease release failed; it runs out")
                            }
                        }
                    });
                }
            }
            Cmd::Exited(name, generation, reason) => self.exited(&name, generation, reason),
            Cmd::Tick => self.tick(),
            Cmd::Quiesce(reply) => {
                self.shutting_down = true;
                if self.round_in_flight {
                    self.quiesced = Some(reply);
                } else {
                    let _ = reply.send(());
                }
            }
            Cmd::Round(res, sent) => self.round_done(*res, sent),
            Cmd::Progress(name, generation, msg) => {
                if let Some(e) = self.phones.get_mut(&name)
                    && e.generation == generation
                {
                    tracing::info!(phone = %name, "{msg}");
                    e.progress = Some(msg);
                }
            }
        }
    }

    fn create(&mut self, spec: PhoneSpec) -> Result<PhoneView, HostError> {
        validate_name("phone name", &spec.name)?;
        let kind = self
            .cfg
            .backends
            .get(spec.backend)
            .ok_or_else(|| HostError::Unavailable {
                what: "backend",
                why: format!("this host does not run {} phones", spec.backend.as_str()),
            })?;
        let record = spec.record(kind.as_ref(), crate::unix_ms())?;
        if self.phones.contains_key(&spec.name) {
            return Err(HostError::AlreadyExists {
                kind: "phone",
                name: spec.name,
            });
        }
        self.registry.insert_phone(&record)?;
        self.fresh.insert(spec.name.clone());
        let mut entry = Entry::new(record, &self.cfg);
        entry.state = Lifecycle::Creating;
        self.phones.insert(spec.name.clone(), entry);
        if spec.start {
            self.begin_start(&spec.name);
        }
        // Not started: asked not to, or its lease went elsewhere.
        if let Some(e) = self.phones.get_mut(&spec.name)
            && e.state == Lifecycle::Creating
        {
            e.state = Lifecycle::Stopped;
        }
        Ok(self.phones[&spec.name].view())
    }

    fn set_desired(&mut self, name: &str, desired: DesiredState) -> Result<(), HostError> {
        let e = self.phones.get_mut(name).ok_or_else(|| not_found(name))?;
        self.registry.set_desired_state(name, desired)?;
        e.record.desired = desired;
        Ok(())
    }

    /// Whether this host holds `name`'s lease, claiming it if free and
    /// there is room.
    fn ensure_lease(&mut self, name: &str) -> bool {
        if self.leases.contains_key(name) {
            return true;
        }
        let why = if self.shutting_down {
            "waiting: this host is shutting down".to_owned()
        } else if self.draining {
            "waiting: this host is draining".to_owned()
        } else {
            // Before the call: the lease runs from about then.
            let asked = Instant::now();
            match crate::lease::claim_now(&self.registry, &self.cfg.fleet, name, self.leases.len())
            {
                Ok(Some(lease)) => {
                    tracing::info!(phone = %name, generation = lease.generation, "lease claimed");
                    self.leases.insert(name.to_owned(), lease);
                    self.fresh.insert(name.to_owned());
                    self.renewed_at.get_or_insert(asked);
                    return true;
                }
                Ok(None) => match self.registry.leases() {
                    Ok(all) => match all.into_iter().find(|l| l.phone == name) {
                        Some(l) if l.expires_at_ms > crate::unix_ms() => {
                            format!("runs on host {}", l.host)
                        }
                        _ => "waiting for a host with room (and the labels it asks for)".to_owned(),
                    },
                    Err(_) => "waiting for a lease".to_owned(),
                },
                Err(e) => format!("waiting for a lease: {e}"),
            }
        };
        if let Some(e) = self.phones.get_mut(name) {
            e.progress = Some(why);
        }
        false
    }

    fn begin_start(&mut self, name: &str) {
        if !self.phones.contains_key(name) || !self.ensure_lease(name) {
            return;
        }
        let tx = self.tx.clone();
        let Some(e) = self.phones.get_mut(name) else {
            return;
        };
        if matches!(e.state, Lifecycle::Booting | Lifecycle::Running) {
            return;
        }
        e.generation += 1;
        e.state = Lifecycle::Booting;
        e.progress = None;
        self.states.handed_over(name, false);
        let generation = e.generation;
        let backend = e.backend.clone();
        let n = name.to_owned();
        let status = self.status.subscribe(name);
        let task = tokio::spawn(async move {
            let progress_tx = tx.clone();
            let pn = n.clone();
            let progress: crate::backend::Progress = Box::new(move |msg| {
                let _ = progress_tx.try_send(Cmd::Progress(pn.clone(), generation, msg));
            });
            let res = async {
                let mut b = backend.lock().await;
                let ep = b.start(progress, status).await?;
                drop(b);
                let client = EmulatorClient::connect(&ep.grpc_addr, ep.token.as_deref()).await?;
                client.wait_booted(Duration::from_secs(600), |_| {}).await?;
                Ok((ep, client))
            }
            .await;
            let _ = tx.send(Cmd::Booted(n, generation, Box::new(res))).await;
        });
        e.boot = Some(task.abort_handle());
    }

    fn booted(&mut self, name: &str, generation: u64, res: BootResult) {
        let tx = self.tx.clone();
        let Some(e) = self.phones.get_mut(name) else {
            return;
        };
        if e.generation != generation || e.state != Lifecycle::Booting {
            return;
        }
        e.boot = None;
        match res {
            Ok(running) => {
                tracing::info!(phone = %name, api = %running.0.grpc_addr, "running");
                e.state = Lifecycle::Running;
                e.running = Some(running);
                let backend = e.backend.clone();
                let n = name.to_owned();
                tokio::spawn(async move {
                    let exited = backend.lock().await.exited();
                    let reason = exited.await;
                    let _ = tx.send(Cmd::Exited(n, generation, reason)).await;
                });
            }
            Err(err) => {
                tracing::error!(phone = %name, error = %err, "failed to start");
                e.state = Lifecycle::Failed(err.to_string());
                let backend = e.backend.clone();
                tokio::spawn(async move {
                    let _ = backend.lock().await.stop().await;
                });
            }
        }
    }

    fn exited(&mut self, name: &str, generation: u64, reason: String) {
        let Some(e) = self.phones.get_mut(name) else {
            return;
        };
        if e.generation != generation || e.state != Lifecycle::Running {
            return;
        }
        tracing::error!(phone = %name, %reason, "phone died");
        e.running = None;
        e.state = Lifecycle::Failed(reason);
        // Watchers (its session) learn of the failure and its reason even
        // when the restart below follows at once.
        self.states.publish(name, &e.state);
        if let RestartPolicy::OnFailure(max) = self.cfg.restart
            && e.restarts < max
            && e.record.desired == DesiredState::Running
        {
            e.restarts += 1;
            tracing::warn!(phone = %name, attempt = e.restarts, "restarting after failure");
            self.begin_start(name);
        }
    }

    fn begin_stop(&mut self, name: &str) {
        let tx = self.tx.clone();
        let Some(e) = self.phones.get_mut(name) else {
            return;
        };
        if let Some(boot) = e.boot.take() {
            boot.abort();
        }
        if matches!(e.state, Lifecycle::Stopped) {
            return;
        }
        e.generation += 1;
        e.state = Lifecycle::Stopping;
        e.running = None;
        e.restarts = 0;
        let generation = e.generation;
        let backend = e.backend.clone();
        let n = name.to_owned();
        tokio::spawn(async move {
            if let Err(err) = backend.lock().await.stop().await {
                tracing::error!(phone = %n, error = %err, "stop failed");
            }
            let _ = tx.send(Cmd::StopDone(n, generation)).await;
        });
    }

    /// Stops `name` because another host takes it over (its sessions end
    /// saying so, and handsets come back through the front door).
    fn hand_over(&mut self, name: &str) {
        self.states.handed_over(name, true);
        self.begin_stop(name);
    }

    /// Every few hundred ms: stop every phone once the leases may have run
    /// out unrenewed, and start a lease round when one is due.
    fn tick(&mut self) {
        let (serve_for, round) = (self.cfg.fleet.serve_for(), self.cfg.fleet.round());
        if let Some(at) = self.renewed_at
            && !self.leases.is_empty()
            && at.elapsed() > serve_for
        {
            let lost: Vec<String> = self.leases.keys().cloned().collect();
            tracing::error!(
                phones = lost.len(),
                since = ?at.elapsed(),
                "the registry has not renewed this host's leases: stopping its phones before \
                 another host may claim them"
            );
            self.leases.clear();
            self.renewed_at = None;
            for name in lost {
                self.hand_over(&name);
                if let Some(e) = self.phones.get_mut(&name) {
                    e.progress = Some("stopped: its lease could not be renewed".to_owned());
                }
            }
        }
        if self.round_in_flight || self.last_round.elapsed() < round {
            return;
        }
        if self.shutting_down {
            return;
        }
        self.round_in_flight = true;
        self.last_round = Instant::now();
        self.fresh.clear();
        // Only leases whose phones have stopped are released (the others
        // are, the moment they stop: StopDone).
        let (release, waiting): (Vec<Lease>, Vec<Lease>) =
            std::mem::take(&mut self.pending_release)
                .into_iter()
                .partition(|l| {
                    self.phones.get(&l.phone).is_none_or(|e| {
                        matches!(e.state, Lifecycle::Stopped | Lifecycle::Failed(_))
                    })
                });
        self.pending_release = waiting;
        let input = RoundInput {
            release,
            held: self
                .leases
                .values()
                .map(|l| (l.phone.clone(), l.generation))
                .collect(),
            began_ms: crate::unix_ms(),
            draining: self.draining,
        };
        let registry = self.registry.clone();
        let cfg = self.cfg.fleet.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            let res = tokio::task::spawn_blocking(move || {
                crate::lease::run_round(&registry, &cfg, input)
            })
            .await
            .unwrap_or_default();
            let _ = tx.send(Cmd::Round(Box::new(res), sent)).await;
        });
    }

    /// Applies a lease round: the registry's phones, the leases renewed,
    /// lost and claimed, the phones to give up.
    fn round_done(&mut self, res: RoundResult, sent: Instant) {
        tracing::debug!(took = ?sent.elapsed(), renewed = res.renewed.is_some(), "lease round");
        self.round_in_flight = false;
        if let Some(reply) = self.quiesced.take() {
            // Shutting down: no lease this round claimed stays (the host
            // releases every lease next).
            let _ = reply.send(());
            return;
        }
        self.draining = res.draining.unwrap_or(self.draining);
        if let Some(records) = res.records {
            let names: BTreeSet<&str> = records.iter().map(|r| r.name.as_str()).collect();
            // Phones created or deleted here since the round read the
            // registry are as this host left them.
            let gone: Vec<String> = self
                .phones
                .keys()
                .filter(|n| !names.contains(n.as_str()) && !self.fresh.contains(*n))
                .cloned()
                .collect();
            for name in gone {
                // Deleted through another host.
                self.begin_stop(&name);
                self.leases.remove(&name);
                self.phones.remove(&name);
                self.status.remove(&name);
                self.states.remove(&name);
                self.cfg.attach.close(&name);
            }
            for record in records {
                match self.phones.get_mut(&record.name) {
                    Some(e) => e.record.desired = record.desired,
                    None if self.fresh.contains(&record.name) => {}
                    None => {
                        let name = record.name.clone();
                        self.phones.insert(name, Entry::new(record, &self.cfg));
                    }
                }
            }
        }
        let Some(renewed) = res.renewed else {
            return;
        };
        self.renewed_at = Some(sent);
        let lost: Vec<String> = self
            .leases
            .iter()
            .filter(|(name, l)| {
                !self.fresh.contains(*name)
                    && renewed.get(*name).map(|r| r.generation) != Some(l.generation)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in lost {
            tracing::warn!(phone = %name, "lease lost (it ran out): stopping the phone here");
            self.leases.remove(&name);
            self.hand_over(&name);
        }
        for (name, l) in renewed {
            if let Some(held) = self.leases.get_mut(&name) {
                *held = l;
            }
        }
        for lease in res.claimed {
            self.leases.insert(lease.phone.clone(), lease);
        }
        for name in res.give_up {
            if let Some(lease) = self.leases.remove(&name) {
                tracing::info!(phone = %name, "giving the phone up (drain, move or stop)");
                let stopped = self
                    .phones
                    .get(&name)
                    .is_some_and(|e| e.record.desired == DesiredState::Stopped);
                if stopped {
                    self.begin_stop(&name);
                } else {
                    self.hand_over(&name);
                }
                self.pending_release.push(lease);
            }
        }
        let start: Vec<String> = self
            .leases
            .keys()
            .filter(|n| {
                self.phones.get(*n).is_some_and(|e| {
                    e.record.desired == DesiredState::Running && e.state == Lifecycle::Stopped
                })
            })
            .cloned()
            .collect();
        for name in start {
            self.begin_start(&name);
        }
    }

    fn delete(&mut self, name: &str, force: bool) -> Result<(), HostError> {
        let e = self.phones.get(name).ok_or_else(|| not_found(name))?;
        if !force && matches!(e.state, Lifecycle::Running | Lifecycle::Booting) {
            return Err(HostError::Conflict(format!(
                "phone '{name}' is {}; stop it first or use --force",
                e.state.name()
            )));
        }
        self.begin_stop(name);
        self.registry.delete_phone(name)?;
        self.fresh.insert(name.to_owned());
        self.leases.remove(name);
        self.phones.remove(name);
        self.status.remove(name);
        self.states.remove(name);
        self.cfg.attach.close(name);
        Ok(())
    }
}
