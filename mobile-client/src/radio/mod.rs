//! Lending this handset's Bluetooth radio to the virtual phone.
//!
//! The virtual phone's Bluetooth host stack runs in the cloud; its HCI
//! packets arrive on the session's hci channel and go to the handset's
//! controller unchanged, and the controller's events and data go back up
//! unchanged. Pairing, bonding and keys stay in the phone's stack: the handset
//! never decrypts or re-encrypts anything. It does protect its own controller:
//!
//! * **Policy.** Every command from the phone's stack goes through a
//!   [`Policy`] (the safe default, or `--radio-policy FILE`). A denied command
//!   never reaches the radio; the stack gets the policy's refusal event (the
//!   Command Complete or Command Status that command normally gets, with a
//!   failure status) at once, and the denial is counted.
//! * **Flow control.** A [`FlowControl`](bt_raw::flow::FlowControl) accountant sees every packet written
//!   to and read from the radio. Commands beyond the controller's command
//!   credits and ACL/ISO data beyond its buffer credits are held here, in
//!   order (per connection handle for data), and released as credits return
//!   (Command Complete/Status, Number Of Completed Packets, Disconnection
//!   Complete). An `HCI_Reset` from the stack drops what is held (the stack
//!   starts over) and is sent at once. The queue is bounded: while it is full
//!   the relay stops reading from the session, which holds the rest
//!   (exactly once, across resumes).
//! * **Capture.** `--snoop FILE` writes a btsnoop of the controller-facing
//!   traffic only: what was written to the radio and what was read from it.
//!   Denied commands and their local refusals are not in it.
//! * **Release.** When lending ends with the radio still working, a `tcp:`,
//!   `tcp-listen:` or `unix:` radio gets an `HCI_Reset` (and up to
//!   [`RELEASE_RESET_TIMEOUT`] for its Command Complete), so no connection,
//!   advertising or scan the phone started outlives the loan. An `hci:N`
//!   adapter goes back to the kernel, which closes it (and BlueZ powers it
//!   on afresh).
//!
//! [`RelayCore`] is the sans-IO part (policy, flow accounting, queue). The
//! async driver [`RadioRelay`] moves packets between a [`ClientSession`] and a
//! [`LentRadio`], sends the `RadioState` heartbeat the host watches (every
//! [`HEARTBEAT`] while lending) and on [`RadioRelay::stop`] tells the host the
//! radio is no longer lent, flushes the capture and restores the adapter.

use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bt_raw::btsnoop::SnoopWriter;
use bt_raw::policy::Policy;
pub use bt_raw::transport::RadioSpec;
use bt_raw::transport::{HciTransport, Radio};
use device_bridge::ClientSession;
use sensor_proto::bridge::{RadioState, control_message};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ClientError;
use crate::adapters::PowerRestore;

mod core;

pub use self::core::{RadioStats, RelayCore, RelayOutput, record};

/// How often the handset repeats `RadioState{lent: true}` while lending (the
/// host declares the radio lost after 1.5 s without one).
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// Default bound of the credit queue (packets held until the controller
/// returns credits).
pub const DEFAULT_QUEUE_LIMIT: usize = 512;

/// How long [`RadioRelay::stop`] waits to tell the host the radio is no
/// longer lent (the session may be reconnecting).
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long [`RadioRelay::stop`] waits for the relay to finish the packet
/// it is moving.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a released radio has to answer the `HCI_Reset` sent when lending
/// ends (inside the 2 s that stopping the relay may take).
pub const RELEASE_RESET_TIMEOUT: Duration = Duration::from_secs(1);

/// How to lend the radio (`vphone-companion connect --radio ...`).
#[derive(Clone, Debug)]
pub struct RadioOptions {
    /// Which radio.
    pub spec: RadioSpec,
    /// A policy file; `None` = the safe default.
    pub policy_file: Option<PathBuf>,
    /// Write a btsnoop capture of the controller-facing traffic here.
    pub snoop: Option<PathBuf>,
    /// Keep keys in clear in the capture (only when the user asked).
    pub unredacted: bool,
    /// Bound of the credit queue.
    pub queue_limit: usize,
}

impl RadioOptions {
    /// Lend `spec` with the safe-default policy, no capture.
    #[must_use]
    pub fn new(spec: RadioSpec) -> Self {
        Self {
            spec,
            policy_file: None,
            snoop: None,
            unredacted: false,
            queue_limit: DEFAULT_QUEUE_LIMIT,
        }
    }
}

/// A btsnoop capture file.
struct Snoop {
    writer: SnoopWriter<BufWriter<File>>,
    path: PathBuf,
}

impl Snoop {
    fn create(path: &Path, unredacted: bool) -> Result<Self, ClientError> {
        // 0600, and an unredacted capture says so in its name.
        let path = &bt_raw::btsnoop::capture_path(path, unredacted);
        let file = bt_raw::btsnoop::create_capture(path)
            .map_err(|e| ClientError::io("creating", path, e))?;
        let out = BufWriter::new(file);
        let started = if unredacted {
            tracing::warn!(
                path = %path.display(),
                "the btsnoop capture keeps keys (link keys, LTKs, IRKs) in clear: --unredacted"
            );
            SnoopWriter::unredacted(out)
        } else {
            SnoopWriter::new(out)
        };
        let writer = started.map_err(|e| ClientError::Radio {
            spec: "snoop".to_owned(),
            why: format!("{}: {e}", path.display()),
        })?;
        Ok(Self {
            writer,
            path: path.to_owned(),
        })
    }
}

/// A radio opened and ready to lend: the transport, the policy, the capture
/// file and (for `hci:N` with BlueZ) the adapter state to restore.
pub struct LentRadio {
    spec: RadioSpec,
    radio: Radio,
    policy: Policy,
    snoop: Option<Snoop>,
    restore: Option<PowerRestore>,
    queue_limit: usize,
}

impl fmt::Debug for LentRadio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LentRadio")
            .field("spec", &self.spec.to_string())
            .field("snoop", &self.snoop.as_ref().map(|s| s.path.clone()))
            .finish_non_exhaustive()
    }
}

impl LentRadio {
    /// Loads the policy, opens the radio (for `hci:N`: powers the adapter
    /// off through BlueZ first where BlueZ runs) and creates the capture.
    ///
    /// # Errors
    /// [`ClientError::Radio`] naming the spec and what to do (is the
    /// controller running? CAP_NET_ADMIN?), a policy error, or
    /// [`ClientError::Io`] creating the capture.
    pub async fn open(opts: &RadioOptions) -> Result<Self, ClientError> {
        let policy = match &opts.policy_file {
            Some(path) => Policy::from_file(path).map_err(|e| ClientError::Radio {
                spec: opts.spec.to_string(),
                why: e.to_string(),
            })?,
            None => Policy::safe_default(),
        };
        let restore = match opts.spec {
            RadioSpec::Hci(index) => crate::adapters::power_off_for_user_channel(index).await?,
            _ => None,
        };
        if let RadioSpec::TcpListen(addr) = &opts.spec {
            tracing::info!(%addr, "waiting for an H4 controller to connect");
        }
        let radio = match Radio::open(&opts.spec).await {
            Ok(r) => r,
            Err(e) => {
                if let Some(r) = restore {
                    r.restore().await;
                }
                return Err(open_error(&opts.spec, e));
            }
        };
        let snoop = match &opts.snoop {
            Some(path) => match Snoop::create(path, opts.unredacted) {
                Ok(s) => Some(s),
                Err(e) => {
                    drop(radio);
                    if let Some(r) = restore {
                        r.restore().await;
                    }
                    return Err(e);
                }
            },
            None => None,
        };
        tracing::info!(radio = %opts.spec, "radio open");
        Ok(Self {
            spec: opts.spec.clone(),
            radio,
            policy,
            snoop,
            restore,
            queue_limit: opts.queue_limit,
        })
    }

    /// The spec it was opened with.
    #[must_use]
    pub fn spec(&self) -> &RadioSpec {
        &self.spec
    }

    /// Closes the radio without lending it (restores the adapter).
    pub async fn close(self) {
        drop(self.radio);
        if let Some(r) = self.restore {
            r.restore().await;
        }
    }
}

/// Turns a transport error into advice.
fn open_error(spec: &RadioSpec, e: bt_raw::Error) -> ClientError {
    use std::io::ErrorKind;
    let why = match &e {
        bt_raw::Error::UserChannel { reason, .. } => reason.clone(),
        bt_raw::Error::Io { source, .. } => match source.kind() {
            ErrorKind::ConnectionRefused => {
                "connection refused — is the controller running?".to_owned()
            }
            ErrorKind::NotFound if matches!(spec, RadioSpec::Unix(_)) => {
                "no such socket — is the controller running?".to_owned()
            }
            ErrorKind::NotFound => format!("{source} (check the host name)"),
            ErrorKind::TimedOut => format!("{source} — is the address reachable?"),
            _ => source.to_string(),
        },
        other => other.to_string(),
    };
    ClientError::Radio {
        spec: spec.to_string(),
        why,
    }
}

use device_bridge::clock::unix_us;

fn lock(stats: &Mutex<RadioStats>) -> std::sync::MutexGuard<'_, RadioStats> {
    stats.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the handset still lends; the heartbeat and the goodbye take this
/// lock around their sends so a late heartbeat never follows the goodbye.
type Lending = Arc<tokio::sync::Mutex<bool>>;

async fn send_state(
    session: &ClientSession,
    stats: &Mutex<RadioStats>,
    available: bool,
    lent: bool,
) -> bool {
    let msg = control_message::Msg::RadioState(RadioState { available, lent });
    match session.send_control(msg).await {
        Ok(()) => {
            lock(stats).radio_state_messages += 1;
            true
        }
        Err(e) => {
            tracing::debug!("RadioState not sent: {e}");
            false
        }
    }
}

/// Sends `RadioState{available, lent: false}` once unless already done.
async fn goodbye(
    session: &ClientSession,
    lending: &Lending,
    stats: &Mutex<RadioStats>,
    available: bool,
) {
    let mut g = lending.lock().await;
    if *g {
        *g = false;
        let sent = tokio::time::timeout(
            GOODBYE_TIMEOUT,
            send_state(session, stats, available, false),
        )
        .await;
        if !matches!(sent, Ok(true)) {
            tracing::warn!("could not tell the host that the radio is no longer lent");
        }
    }
}

/// The running relay between a session and a lent radio.
pub struct RadioRelay {
    session: ClientSession,
    stats: Arc<Mutex<RadioStats>>,
    lending: Lending,
    stop: watch::Sender<bool>,
    relay: Option<JoinHandle<Option<Snoop>>>,
    heartbeat: JoinHandle<()>,
    restore: Option<PowerRestore>,
}

impl fmt::Debug for RadioRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RadioRelay")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl RadioRelay {
    /// Starts lending: sends `RadioState{available: true, lent: true}` at
    /// once and every [`HEARTBEAT`], and relays HCI both ways. Must be
    /// called inside a tokio runtime, right after the session is established.
    pub fn start(session: ClientSession, radio: LentRadio) -> Self {
        let LentRadio {
            spec,
            radio,
            policy,
            snoop,
            restore,
            queue_limit,
        } = radio;
        let stats = Arc::new(Mutex::new(RadioStats {
            spec: spec.to_string(),
            ..RadioStats::default()
        }));
        let lending: Lending = Arc::new(tokio::sync::Mutex::new(true));
        let heartbeat = {
            let (session, lending, stats) = (session.clone(), lending.clone(), stats.clone());
            tokio::spawn(async move {
                loop {
                    {
                        let g = lending.lock().await;
                        if !*g {
                            return;
                        }
                        send_state(&session, &stats, true, true).await;
                    }
                    tokio::time::sleep(HEARTBEAT).await;
                }
            })
        };
        let (stop, stop_rx) = watch::channel(false);
        let core = RelayCore::with_queue_limit(policy, queue_limit);
        let reset_on_release = !matches!(spec, RadioSpec::Hci(_));
        let relay = tokio::spawn(run(
            session.clone(),
            Lent {
                radio,
                reset_on_release,
            },
            core,
            snoop,
            stats.clone(),
            lending.clone(),
            stop_rx,
        ));
        tracing::info!(radio = %spec, "lending the radio to the phone");
        Self {
            session,
            stats,
            lending,
            stop,
            relay: Some(relay),
            heartbeat,
            restore,
        }
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> RadioStats {
        lock(&self.stats).clone()
    }

    /// Stops lending: tells the host (`RadioState{available: true, lent:
    /// false}`, unless the radio failed), stops the relay, flushes the
    /// capture, closes the radio and restores the adapter. Call it before
    /// closing the session. Returns the final counters.
    pub async fn stop(mut self) -> RadioStats {
        goodbye(&self.session, &self.lending, &self.stats, true).await;
        self.heartbeat.abort();
        let _ = self.stop.send(true);
        if let Some(mut task) = self.relay.take() {
            // The relay sees the stop between packets; a radio or session
            // that no longer takes packets must not hold the shutdown.
            let joined = match tokio::time::timeout(STOP_TIMEOUT, &mut task).await {
                Ok(j) => j,
                Err(_) => {
                    tracing::warn!("the radio relay did not stop in time; abandoning it");
                    task.abort();
                    task.await
                }
            };
            match joined {
                Ok(Some(mut snoop)) => {
                    if let Err(e) = snoop.writer.flush() {
                        tracing::warn!(path = %snoop.path.display(), "{e}");
                    }
                    lock(&self.stats).snoop_records = snoop.writer.records();
                    tracing::info!(path = %snoop.path.display(), records = snoop.writer.records(), "btsnoop capture written");
                }
                Ok(None) => {}
                Err(e) if e.is_cancelled() => {}
                Err(e) => tracing::warn!("the radio relay task failed: {e}"),
            }
        }
        if let Some(r) = self.restore.take() {
            r.restore().await;
        }
        self.stats()
    }
}

impl Drop for RadioRelay {
    fn drop(&mut self) {
        self.heartbeat.abort();
        let _ = self.stop.send(true);
        // Dropped without stop(): still give the adapter back once the
        // relay task has closed the radio.
        if let (Some(restore), Ok(rt)) =
            (self.restore.take(), tokio::runtime::Handle::try_current())
        {
            let task = self.relay.take();
            rt.spawn(async move {
                if let Some(t) = task {
                    let _ = t.await;
                }
                restore.restore().await;
            });
        }
    }
}

/// Why the relay loop ended.
enum Exit {
    Stopped,
    SessionEnded,
    Radio(String),
}

/// The radio in the relay's hands, and whether it is reset when released.
struct Lent {
    radio: Radio,
    reset_on_release: bool,
}

#[allow(clippy::too_many_arguments)]
async fn run(
    session: ClientSession,
    lent: Lent,
    mut core: RelayCore,
    mut snoop: Option<Snoop>,
    stats: Arc<Mutex<RadioStats>>,
    lending: Lending,
    mut stop: watch::Receiver<bool>,
) -> Option<Snoop> {
    let Lent {
        mut radio,
        reset_on_release,
    } = lent;
    let started = Instant::now();
    let mut flush = tokio::time::interval(Duration::from_millis(500));
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut bytes_to, mut bytes_from) = (0u64, 0u64);
    let exit = 'relay: loop {
        while let Some(out) = core.poll_output() {
            match &out {
                RelayOutput::ToRadio(p) => {
                    if let Err(e) = radio.send(p).await {
                        break 'relay Exit::Radio(e.to_string());
                    }
                    bytes_to += p.len() as u64;
                }
                RelayOutput::ToPhone(p) | RelayOutput::Refusal(p) => {
                    if session.send_hci(p.clone()).await.is_err() {
                        break 'relay Exit::SessionEnded;
                    }
                }
            }
            if let Some(s) = snoop.as_mut()
                && let Err(e) = record(&mut s.writer, &out, unix_us())
            {
                tracing::warn!(path = %s.path.display(), "btsnoop capture stopped: {e}");
                snoop = None;
            }
        }
        {
            let mut st = lock(&stats);
            let spec = std::mem::take(&mut st.spec);
            let (records, beats) = (st.snoop_records, st.radio_state_messages);
            *st = RadioStats {
                spec,
                bytes_to_radio: bytes_to,
                bytes_from_radio: bytes_from,
                snoop_records: snoop.as_ref().map_or(records, |s| s.writer.records()),
                radio_state_messages: beats,
                ..core.stats().clone()
            };
        }
        tokio::select! {
            biased;
            _ = stop.changed() => break Exit::Stopped,
            r = radio.recv() => match r {
                Ok(p) => {
                    bytes_from += p.len() as u64;
                    core.from_radio(p);
                }
                Err(e) => break Exit::Radio(match e {
                    bt_raw::Error::Closed => "the radio closed the connection".to_owned(),
                    other => other.to_string(),
                }),
            },
            r = session.recv_hci(), if core.can_accept() => match r {
                Ok(p) => core.from_phone(p, started.elapsed().as_millis() as u64),
                Err(_) => break Exit::SessionEnded,
            },
            _ = flush.tick() => {
                if let Some(s) = snoop.as_mut()
                    && let Err(e) = s.writer.flush()
                {
                    tracing::warn!(path = %s.path.display(), "btsnoop capture stopped: {e}");
                    snoop = None;
                }
            }
        }
    };
    match exit {
        Exit::Stopped | Exit::SessionEnded => {
            if matches!(exit, Exit::Stopped) {
                tracing::debug!("radio relay stopped");
            } else {
                tracing::debug!("radio relay: the session ended");
            }
            if reset_on_release {
                let done = reset_radio(&mut radio, snoop.as_mut()).await;
                lock(&stats).reset_on_release = done;
            }
        }
        Exit::Radio(why) => {
            tracing::warn!("the lent radio failed: {why}; the phone's Bluetooth loses it");
            lock(&stats).error = Some(why);
            drop(radio);
            goodbye(&session, &lending, &stats, false).await;
            return snoop;
        }
    }
    snoop
}

/// Sends `HCI_Reset` to a radio the phone no longer has and waits up to
/// [`RELEASE_RESET_TIMEOUT`] for its Command Complete (other packets the
/// radio still sends are dropped: nobody is lent them). Both are captured.
/// Returns whether the radio answered.
async fn reset_radio(radio: &mut Radio, mut snoop: Option<&mut Snoop>) -> bool {
    use bt_raw::btsnoop::Direction;
    let reset = bt_raw::H4Packet::parse(bt_raw::h4::HCI_RESET.to_vec())
        .expect("HCI_Reset is a valid packet");
    let mut capture = |dir, p: &bt_raw::H4Packet| {
        if let Some(s) = snoop.as_mut() {
            let _ = s.writer.write(dir, p, unix_us());
        }
    };
    capture(Direction::HostToController, &reset);
    let answered = tokio::time::timeout(RELEASE_RESET_TIMEOUT, async {
        radio.send(&reset).await.ok()?;
        loop {
            let p = radio.recv().await.ok()?;
            capture(Direction::ControllerToHost, &p);
            let done = bt_raw::packet::Event::new(&p)
                .ok()
                .and_then(|e| e.command_complete())
                .is_some_and(|cc| cc.opcode == bt_raw::packet::opcodes::RESET);
            if done {
                return Some(());
            }
        }
    })
    .await
    .ok()
    .flatten()
    .is_some();
    if answered {
        tracing::info!("radio reset on release: nothing the phone started outlives the loan");
    } else {
        tracing::warn!(
            "the radio did not answer the HCI_Reset sent on release within {} ms",
            RELEASE_RESET_TIMEOUT.as_millis()
        );
    }
    answered
}
