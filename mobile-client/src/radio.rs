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
//! * **Flow control.** A [`FlowControl`] accountant sees every packet written
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
//!
//! [`RelayCore`] is the sans-IO part (policy, flow accounting, queue). The
//! async driver [`RadioRelay`] moves packets between a [`ClientSession`] and a
//! [`LentRadio`], sends the `RadioState` heartbeat the host watches (every
//! [`HEARTBEAT`] while lending) and on [`RadioRelay::stop`] tells the host the
//! radio is no longer lent, flushes the capture and restores the adapter.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bt_raw::btsnoop::{Direction, SnoopWriter};
use bt_raw::flow::FlowControl;
use bt_raw::packet::{Command, ConnectionHandle, opcodes};
use bt_raw::policy::{Policy, Verdict};
pub use bt_raw::transport::RadioSpec;
use bt_raw::transport::{HciTransport, Radio};
use bt_raw::{H4Packet, PacketType};
use device_bridge::ClientSession;
use sensor_proto::bridge::{RadioState, control_message};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ClientError;
use crate::adapters::PowerRestore;

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

/// Counters of a radio relay. All zero (and `spec` empty) before lending.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct RadioStats {
    /// The radio lent, as given (`tcp:127.0.0.1:9002`, `hci:0`, ...).
    pub spec: String,
    /// Packets received from the phone's stack (all kinds, denied included).
    pub packets_from_phone: u64,
    /// Packets written to the radio.
    pub packets_to_radio: u64,
    /// Bytes written to the radio (H4, type byte included).
    pub bytes_to_radio: u64,
    /// Packets read from the radio (all sent up unchanged).
    pub packets_from_radio: u64,
    /// Bytes read from the radio.
    pub bytes_from_radio: u64,
    /// Commands the policy denied (answered locally, never sent).
    pub denied_commands: u64,
    /// Packets that had to wait for controller credits before being sent.
    pub queued_for_credits: u64,
    /// Packets waiting for credits right now.
    pub queue_len: u64,
    /// Most packets that waited at once.
    pub queue_peak: u64,
    /// Held packets dropped because the stack sent `HCI_Reset`.
    pub dropped_on_reset: u64,
    /// Packets from the phone that a controller must never get (events),
    /// dropped.
    pub dropped_invalid: u64,
    /// Records written to the `--snoop` capture.
    pub snoop_records: u64,
    /// `RadioState` messages sent to the host.
    pub radio_state_messages: u64,
    /// Why the relay stopped early (radio closed or failed), if it did.
    pub error: Option<String>,
}

/// What the core wants done with a packet.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum RelayOutput {
    /// Write it to the radio (a controller-facing packet: captured as sent).
    ToRadio(H4Packet),
    /// Send it up to the phone's stack; it came from the radio (captured as
    /// received).
    ToPhone(H4Packet),
    /// Send it up to the phone's stack; it is the local refusal of a denied
    /// command (never captured: the radio never saw that exchange).
    Refusal(H4Packet),
}

impl RelayOutput {
    /// The btsnoop direction this output is recorded with, `None` for
    /// packets the controller never saw.
    #[must_use]
    pub fn snoop_direction(&self) -> Option<Direction> {
        match self {
            Self::ToRadio(_) => Some(Direction::HostToController),
            Self::ToPhone(_) => Some(Direction::ControllerToHost),
            Self::Refusal(_) => None,
        }
    }

    /// The packet.
    #[must_use]
    pub fn packet(&self) -> &H4Packet {
        match self {
            Self::ToRadio(p) | Self::ToPhone(p) | Self::Refusal(p) => p,
        }
    }
}

/// Writes `output` to a capture if it is controller-facing; returns whether
/// it did. The one place that decides what a handset capture contains.
///
/// # Errors
/// [`bt_raw::Error::Io`] from the writer.
pub fn record<W: std::io::Write>(
    snoop: &mut SnoopWriter<W>,
    output: &RelayOutput,
    unix_us: i64,
) -> Result<bool, bt_raw::Error> {
    match output.snoop_direction() {
        Some(dir) => snoop.write(dir, output.packet(), unix_us).map(|()| true),
        None => Ok(false),
    }
}

/// The sans-IO relay: policy, flow-control accounting and the credit queue.
///
/// Feed it packets from the phone ([`RelayCore::from_phone`]) and from the
/// radio ([`RelayCore::from_radio`]); drain [`RelayCore::poll_output`] after
/// each call and carry the outputs out in order.
#[derive(Debug)]
pub struct RelayCore {
    policy: Policy,
    flow: FlowControl,
    commands: VecDeque<H4Packet>,
    data: VecDeque<H4Packet>,
    limit: usize,
    out: VecDeque<RelayOutput>,
    stats: RadioStats,
}

impl RelayCore {
    /// A core with `policy` and the default queue bound.
    #[must_use]
    pub fn new(policy: Policy) -> Self {
        Self::with_queue_limit(policy, DEFAULT_QUEUE_LIMIT)
    }

    /// A core whose credit queue holds at most `limit` packets before
    /// [`RelayCore::can_accept`] turns false.
    #[must_use]
    pub fn with_queue_limit(policy: Policy, limit: usize) -> Self {
        Self {
            policy,
            flow: FlowControl::new(),
            commands: VecDeque::new(),
            data: VecDeque::new(),
            limit: limit.max(1),
            out: VecDeque::new(),
            stats: RadioStats::default(),
        }
    }

    /// False while the credit queue is full: the driver then stops reading
    /// from the phone until credits return.
    #[must_use]
    pub fn can_accept(&self) -> bool {
        self.queued() < self.limit
    }

    /// Packets held for credits.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.commands.len() + self.data.len()
    }

    /// The counters (the driver adds bytes, capture and heartbeat numbers).
    #[must_use]
    pub fn stats(&self) -> &RadioStats {
        &self.stats
    }

    /// The flow-control accountant of the controller link.
    #[must_use]
    pub fn flow(&self) -> &FlowControl {
        &self.flow
    }

    /// The policy (with its own counters).
    #[must_use]
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The next thing to do, in order.
    pub fn poll_output(&mut self) -> Option<RelayOutput> {
        self.out.pop_front()
    }

    /// One packet from the phone's stack. `now_ms` is any monotonic
    /// millisecond clock (for policed commands).
    pub fn from_phone(&mut self, packet: H4Packet, now_ms: u64) {
        self.stats.packets_from_phone += 1;
        match packet.kind() {
            PacketType::Event => {
                // A controller never receives events; some would confuse it.
                self.stats.dropped_invalid += 1;
                tracing::warn!("dropped an HCI event sent by the phone's stack to the radio");
            }
            PacketType::Command => {
                if let Verdict::Deny(d) = self.policy.decide(&packet, now_ms) {
                    self.stats.denied_commands += 1;
                    tracing::info!(
                        opcode = %d.opcode,
                        rule = %d.reason,
                        status = d.status,
                        "command denied by the handset's HCI policy; answered locally"
                    );
                    self.out.push_back(RelayOutput::Refusal(d.reply));
                    return;
                }
                let op = Command::new(&packet).map(|c| c.opcode()).ok();
                if op == Some(opcodes::RESET) {
                    // The stack starts over: what it sent before is stale, and
                    // a Reset must get through even when credits were lost
                    // with a hung controller.
                    let dropped = self.queued() as u64;
                    if dropped > 0 {
                        tracing::info!(dropped, "HCI_Reset from the phone: dropping held packets");
                    }
                    self.stats.dropped_on_reset += dropped;
                    self.commands.clear();
                    self.data.clear();
                    self.update_queue_len();
                    self.send(packet);
                    return;
                }
                if op == Some(opcodes::HOST_NUMBER_OF_COMPLETED_PACKETS) {
                    // Needs no command credit (the accountant knows): it
                    // returns the controller's buffers, so it does not wait
                    // behind held commands either.
                    self.send(packet);
                    return;
                }
                if self.commands.is_empty() && self.flow.can_send(&packet) {
                    self.send(packet);
                } else {
                    self.hold(packet, true);
                }
            }
            PacketType::Acl | PacketType::Iso => {
                let handle = data_handle(&packet);
                let behind = self.data.iter().any(|q| data_handle(q) == handle);
                if !behind && self.flow.can_send(&packet) {
                    self.send(packet);
                } else {
                    self.hold(packet, false);
                }
            }
            // SCO has no buffer credits unless SCO flow control is enabled,
            // which the accountant does not track: pass it through.
            PacketType::Sco => self.send(packet),
        }
    }

    /// One packet from the radio: sent up unchanged, and whatever its credits
    /// release is sent to the radio after it.
    pub fn from_radio(&mut self, packet: H4Packet) {
        self.stats.packets_from_radio += 1;
        self.flow.on_controller_packet(&packet);
        self.out.push_back(RelayOutput::ToPhone(packet));
        self.release();
    }

    fn hold(&mut self, packet: H4Packet, command: bool) {
        tracing::debug!(kind = %packet.kind(), "holding a packet until the controller returns credits");
        if command {
            self.commands.push_back(packet);
        } else {
            self.data.push_back(packet);
        }
        self.stats.queued_for_credits += 1;
        self.update_queue_len();
    }

    fn send(&mut self, packet: H4Packet) {
        if let Err(e) = self.flow.on_host_packet(&packet) {
            // Only a Reset gets here without credits; the controller's reply
            // resets the accounting.
            tracing::debug!("{e}");
        }
        self.stats.packets_to_radio += 1;
        self.out.push_back(RelayOutput::ToRadio(packet));
    }

    fn release(&mut self) {
        while self.commands.front().is_some_and(|p| self.flow.can_send(p)) {
            if let Some(p) = self.commands.pop_front() {
                self.send(p);
            }
        }
        // Data: in order per connection handle; a handle whose oldest packet
        // must wait does not hold up the others.
        let mut blocked: Vec<ConnectionHandle> = Vec::new();
        let mut i = 0;
        while i < self.data.len() {
            let handle = data_handle(&self.data[i]);
            if !blocked.contains(&handle) && self.flow.can_send(&self.data[i]) {
                if let Some(p) = self.data.remove(i) {
                    self.send(p);
                }
            } else {
                if !blocked.contains(&handle) {
                    blocked.push(handle);
                }
                i += 1;
            }
        }
        self.update_queue_len();
    }

    fn update_queue_len(&mut self) {
        let n = self.queued() as u64;
        self.stats.queue_len = n;
        self.stats.queue_peak = self.stats.queue_peak.max(n);
    }
}

/// The connection handle of an ACL or ISO packet (12 bits).
fn data_handle(packet: &H4Packet) -> ConnectionHandle {
    let b = packet.body();
    let raw = match (b.first(), b.get(1)) {
        (Some(&lo), Some(&hi)) => u16::from_le_bytes([lo, hi]),
        _ => 0xFFFF,
    };
    ConnectionHandle(raw & 0x0FFF)
}

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
        let file = File::create(path).map_err(|e| ClientError::io("creating", path, e))?;
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

fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

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
        let relay = tokio::spawn(run(
            session.clone(),
            radio,
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

#[allow(clippy::too_many_arguments)]
async fn run(
    session: ClientSession,
    mut radio: Radio,
    mut core: RelayCore,
    mut snoop: Option<Snoop>,
    stats: Arc<Mutex<RadioStats>>,
    lending: Lending,
    mut stop: watch::Receiver<bool>,
) -> Option<Snoop> {
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
        Exit::Stopped => tracing::debug!("radio relay stopped"),
        Exit::SessionEnded => tracing::debug!("radio relay: the session ended"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use bt_raw::btsnoop::read_all;
    use bt_raw::packet::{Event, status};

    fn p(raw: &[u8]) -> H4Packet {
        H4Packet::parse(raw.to_vec()).unwrap()
    }

    fn cmd(op: u16) -> H4Packet {
        H4Packet::command(op, &[]).unwrap()
    }

    fn acl(handle: u16, byte: u8) -> H4Packet {
        let [lo, hi] = (handle | 0x2000).to_le_bytes();
        p(&[0x02, lo, hi, 0x01, 0x00, byte])
    }

    /// Command Complete for `op` with status 0 and `extra` return params,
    /// granting `credits` command credits.
    fn complete(op: u16, credits: u8, extra: &[u8]) -> H4Packet {
        let [lo, hi] = op.to_le_bytes();
        let mut v = vec![0x04, 0x0E, (4 + extra.len()) as u8, credits, lo, hi, 0x00];
        v.extend_from_slice(extra);
        p(&v)
    }

    fn le_conn(handle: u16) -> H4Packet {
        let [lo, hi] = handle.to_le_bytes();
        let mut v = vec![0x04, 0x3E, 19, 0x01, 0x00, lo, hi];
        v.resize(3 + 19, 0);
        p(&v)
    }

    fn nocp(handle: u16, n: u16) -> H4Packet {
        let [hl, hh] = handle.to_le_bytes();
        let [nl, nh] = n.to_le_bytes();
        p(&[0x04, 0x13, 0x05, 0x01, hl, hh, nl, nh])
    }

    fn drain(core: &mut RelayCore) -> Vec<RelayOutput> {
        std::iter::from_fn(|| core.poll_output()).collect()
    }

    fn to_radio(outs: &[RelayOutput]) -> Vec<H4Packet> {
        outs.iter()
            .filter_map(|o| match o {
                RelayOutput::ToRadio(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    /// A core whose controller has LE buffers for 2 packets and one open LE
    /// connection on handle 0x0040.
    fn core_with_le_link() -> RelayCore {
        let mut core = RelayCore::new(Policy::safe_default());
        core.from_phone(cmd(0x2002), 0);
        // LE_Read_Buffer_Size: 27 bytes x 2 packets.
        core.from_radio(complete(0x2002, 1, &[27, 0, 2]));
        core.from_radio(le_conn(0x0040));
        drain(&mut core);
        core
    }

    #[test]
    fn a_denied_vendor_command_is_answered_locally_and_never_reaches_the_radio() {
        let mut core = RelayCore::new(Policy::safe_default());
        core.from_phone(cmd(0xFC01), 0);
        let outs = drain(&mut core);
        assert_eq!(outs.len(), 1, "{outs:?}");
        let RelayOutput::Refusal(reply) = &outs[0] else {
            panic!("expected a local refusal, got {outs:?}");
        };
        // Vendor commands are refused with Command Status, Unknown HCI Command.
        let st = Event::new(reply).unwrap().command_status().unwrap();
        assert_eq!(st.opcode.0, 0xFC01);
        assert_eq!(st.status, status::UNKNOWN_HCI_COMMAND);
        assert_eq!(st.num_hci_command_packets, 1);
        assert!(to_radio(&outs).is_empty());
        assert_eq!(core.stats().denied_commands, 1);
        assert_eq!(core.stats().packets_to_radio, 0);
        // The denial consumed no credit: the next allowed command goes out.
        core.from_phone(cmd(0x1001), 0);
        assert_eq!(to_radio(&drain(&mut core)), vec![cmd(0x1001)]);
        // A denied command that normally gets Command Complete gets one.
        core.from_radio(complete(0x1001, 1, &[0; 8]));
        drain(&mut core);
        core.from_phone(cmd(0x0C0D), 0);
        let outs = drain(&mut core);
        let RelayOutput::Refusal(reply) = &outs[0] else {
            panic!("{outs:?}")
        };
        assert!(Event::new(reply).unwrap().command_complete().is_some());
    }

    #[test]
    fn commands_beyond_credits_wait_for_command_complete_in_order() {
        let mut core = RelayCore::new(Policy::safe_default());
        core.from_phone(cmd(0x1001), 0);
        core.from_phone(cmd(0x1009), 0);
        core.from_phone(cmd(0x1005), 0);
        assert_eq!(to_radio(&drain(&mut core)), vec![cmd(0x1001)]);
        assert_eq!(core.stats().queued_for_credits, 2);
        core.from_radio(complete(0x1001, 1, &[0; 8]));
        let outs = drain(&mut core);
        assert_eq!(outs[0], RelayOutput::ToPhone(complete(0x1001, 1, &[0; 8])));
        assert_eq!(to_radio(&outs), vec![cmd(0x1009)]);
        core.from_radio(complete(0x1009, 1, &[0; 6]));
        assert_eq!(to_radio(&drain(&mut core)), vec![cmd(0x1005)]);
        assert_eq!(core.queued(), 0);
    }

    #[test]
    fn acl_beyond_credits_is_held_then_released_on_nocp_in_order() {
        let mut core = core_with_le_link();
        for i in 0..5 {
            core.from_phone(acl(0x0040, i), 0);
        }
        assert_eq!(
            to_radio(&drain(&mut core)),
            vec![acl(0x0040, 0), acl(0x0040, 1)]
        );
        assert_eq!(core.stats().queued_for_credits, 3);
        assert_eq!(core.stats().queue_len, 3);
        // One credit back: exactly the next packet, in order.
        core.from_radio(nocp(0x0040, 1));
        let outs = drain(&mut core);
        assert_eq!(outs[0], RelayOutput::ToPhone(nocp(0x0040, 1)));
        assert_eq!(to_radio(&outs), vec![acl(0x0040, 2)]);
        core.from_radio(nocp(0x0040, 2));
        assert_eq!(
            to_radio(&drain(&mut core)),
            vec![acl(0x0040, 3), acl(0x0040, 4)]
        );
        assert_eq!(core.queued(), 0);
        assert_eq!(core.stats().queue_peak, 3);
        // Never more in flight than the controller advertised.
        let b = core.flow().buffers(bt_raw::flow::Pool::Le).unwrap();
        assert!(b.in_flight <= b.total);
    }

    #[test]
    fn a_new_packet_waits_behind_held_ones_of_its_handle() {
        let mut core = core_with_le_link();
        for i in 0..3 {
            core.from_phone(acl(0x0040, i), 0);
        }
        drain(&mut core);
        // A credit comes back, and before the core sees it the stack sends
        // another packet: it must not overtake the held one.
        core.from_radio(nocp(0x0040, 1));
        core.from_phone(acl(0x0040, 9), 0);
        assert_eq!(to_radio(&drain(&mut core)), vec![acl(0x0040, 2)]);
        core.from_radio(nocp(0x0040, 1));
        assert_eq!(to_radio(&drain(&mut core)), vec![acl(0x0040, 9)]);
    }

    #[test]
    fn reset_clears_the_queue_and_goes_out_without_credits() {
        let mut core = core_with_le_link();
        for i in 0..4 {
            core.from_phone(acl(0x0040, i), 0);
        }
        core.from_phone(cmd(0x1001), 0);
        core.from_phone(cmd(0x1009), 0);
        drain(&mut core);
        assert_eq!(core.queued(), 3);
        core.from_phone(cmd(0x0C03), 0);
        assert_eq!(to_radio(&drain(&mut core)), vec![cmd(0x0C03)]);
        assert_eq!(core.queued(), 0);
        assert_eq!(core.stats().dropped_on_reset, 3);
        // The reset's Command Complete restores credits and clears buffers:
        // new data flows again.
        core.from_radio(complete(0x0C03, 1, &[]));
        drain(&mut core);
        core.from_phone(cmd(0x2002), 0);
        assert_eq!(to_radio(&drain(&mut core)), vec![cmd(0x2002)]);
    }

    #[test]
    fn host_number_of_completed_packets_needs_no_credit_and_leaks_none() {
        let mut core = RelayCore::new(Policy::safe_default());
        core.from_phone(cmd(0x1001), 0); // uses the only credit
        let hnocp = p(&[0x01, 0x35, 0x0C, 0x05, 0x01, 0x40, 0x00, 0x01, 0x00]);
        core.from_phone(hnocp.clone(), 0);
        assert_eq!(to_radio(&drain(&mut core)), vec![cmd(0x1001), hnocp]);
        core.from_radio(complete(0x1001, 1, &[0; 8]));
        drain(&mut core);
        assert_eq!(core.flow().command_credits(), 1);
    }

    #[test]
    fn a_full_queue_stops_intake_until_credits_return() {
        let mut core = RelayCore::with_queue_limit(Policy::safe_default(), 2);
        core.from_phone(cmd(0x1001), 0);
        core.from_phone(cmd(0x1009), 0);
        assert!(core.can_accept());
        core.from_phone(cmd(0x1005), 0);
        assert!(!core.can_accept());
        core.from_radio(complete(0x1001, 1, &[0; 8]));
        assert!(core.can_accept());
    }

    #[test]
    fn events_from_the_phone_never_reach_the_radio() {
        let mut core = RelayCore::new(Policy::safe_default());
        core.from_phone(complete(0x0C03, 1, &[]), 0);
        assert!(drain(&mut core).is_empty());
        assert_eq!(core.stats().dropped_invalid, 1);
    }

    #[test]
    fn the_capture_holds_only_controller_facing_packets() {
        let mut core = RelayCore::new(Policy::safe_default());
        let mut snoop = SnoopWriter::new(Vec::new()).unwrap();
        let mut t = 1_000;
        let mut step = |core: &mut RelayCore, snoop: &mut SnoopWriter<Vec<u8>>| {
            for o in drain(core) {
                t += 1;
                record(snoop, &o, t).unwrap();
            }
        };
        core.from_phone(cmd(0x0C03), 0);
        step(&mut core, &mut snoop);
        core.from_phone(cmd(0xFC01), 0); // denied, answered locally
        step(&mut core, &mut snoop);
        core.from_radio(complete(0x0C03, 1, &[]));
        step(&mut core, &mut snoop);
        core.from_phone(cmd(0x201F), 0); // LE test end: denied too
        step(&mut core, &mut snoop);
        let recs = read_all(&snoop.into_inner()[..]).unwrap();
        let got: Vec<_> = recs
            .iter()
            .map(|r| (r.direction, r.bytes.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Direction::HostToController, cmd(0x0C03).as_bytes().to_vec()),
                (
                    Direction::ControllerToHost,
                    complete(0x0C03, 1, &[]).as_bytes().to_vec()
                ),
            ]
        );
        assert!(recs.windows(2).all(|w| w[0].unix_us < w[1].unix_us));
    }

    #[test]
    fn keys_in_the_capture_are_redacted() {
        // LE_Long_Term_Key_Request_Reply with a recognisable key.
        let mut raw = vec![0x01, 0x1A, 0x20, 18, 0x40, 0x00];
        raw.extend_from_slice(&[0x5A; 16]);
        let ltk_reply = p(&raw);
        let mut snoop = SnoopWriter::new(Vec::new()).unwrap();
        record(&mut snoop, &RelayOutput::ToRadio(ltk_reply), 0).unwrap();
        let recs = read_all(&snoop.into_inner()[..]).unwrap();
        assert!(!recs[0].bytes.contains(&0x5A));
    }
}
