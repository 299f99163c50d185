//! The session core shared by both sides: it outlives individual QUIC
//! connections ("links"), owns the app-facing queues and the HCI
//! sequencing, and runs the per-link reader and writer tasks.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bt_raw::H4Packet;
use bytes::Bytes;
use quinn::{RecvStream, SendStream};
use sensor_proto::bridge::{
    AppErrorCode, AudioFrame, ControlMessage, Hello, InputMessage, SensorKind, SensorSample,
    StreamKind, VideoFrameHeader, VideoStreamHeader, Welcome,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::BridgeError;
use crate::hci::{HciReceiver, HciSender};
use crate::identity::Fingerprint;
use crate::sensors::LatestWins;
use crate::wire::{self, FrameReader, ReadFail};

mod app;
mod hci_tasks;
mod link_tasks;
mod video;

use self::hci_tasks::{hci_reader, hci_writer};
use self::link_tasks::{bidi_acceptor, control_reader, datagram_reader, uni_acceptor};
use self::video::GopSlot;
pub use self::video::GopWriter;

/// Capacity of each app-facing inbound queue.
const INBOX: usize = 1024;
/// Capacity of the inbound audio queue: about a second of 20 ms frames.
const AUDIO_INBOX: usize = 50;
/// Capacity of the outbound HCI queue (app -> writer task).
const HCI_OUT_QUEUE: usize = 1024;
/// Retransmission buffer limits: the writer waits for acks beyond these.
const MAX_UNACKED_PACKETS: usize = 16 * 1024;
const MAX_UNACKED_BYTES: usize = 16 * 1024 * 1024;
/// How many bytes the HCI writer gathers before one stream write.
const HCI_BATCH_BYTES: usize = 64 * 1024;
/// The receiver asks for an ack at least every this many packets.
const ACK_EVERY: u64 = 64;

/// Locks a std mutex, ignoring poisoning (the protected state is plain
/// data that stays consistent between statements).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Which side of the bridge a session core is.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Role {
    /// The handset (QUIC client).
    Client,
    /// The host (QUIC server).
    Server,
}

impl Role {
    fn peer(self) -> &'static str {
        match self {
            Self::Client => "host",
            Self::Server => "handset",
        }
    }
}

/// How and why a session ended. A session ends exactly once.
#[derive(Clone, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub struct SessionEnd {
    /// The application error code the connection was closed with
    /// (`NoError` for an orderly close).
    pub code: AppErrorCode,
    /// Human-readable cause.
    pub reason: String,
    /// True if the peer ended it (its `Close` or CONNECTION_CLOSE), false
    /// if this side did (including protocol errors it detected in the
    /// peer's data and an expired resume window).
    pub by_peer: bool,
}

impl fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = if self.by_peer { "peer" } else { "local" };
        write!(f, "{:?} ({who}): {}", self.code, self.reason)
    }
}

/// Counters of one session, cumulative across its connections.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
#[non_exhaustive]
pub struct SessionStats {
    /// Connections this session has used (1 + successful resumes).
    pub connections: u64,
    /// Control messages sent / received by the app.
    pub control_sent: u64,
    /// Control messages received and handed to the app.
    pub control_received: u64,
    /// Sensor samples sent (handset).
    pub sensor_samples_sent: u64,
    /// Sensor samples applied and handed to the app (host).
    pub sensor_samples_received: u64,
    /// Sensor samples dropped as stale by the latest-wins filter (host).
    pub sensor_samples_stale: u64,
    /// Sensor samples dropped because the app did not keep up, or (handset)
    /// because the session was disconnected.
    pub sensor_samples_dropped: u64,
    /// Input messages sent (handset).
    pub input_sent: u64,
    /// Input messages handed to the app (host).
    pub input_received: u64,
    /// Video frames written (host).
    pub video_frames_sent: u64,
    /// Video frames handed to the app (handset).
    pub video_frames_received: u64,
    /// GOP streams abandoned because a newer GOP started.
    pub video_gops_superseded: u64,
    /// Streams the peer reset before their first byte arrived (under loss,
    /// a superseded GOP whose reset overtook its data); nothing was lost.
    pub streams_reset_unread: u64,
    /// HCI packets numbered and sent (first transmissions).
    pub hci_sent: u64,
    /// HCI packets retransmitted after a resume.
    pub hci_resent: u64,
    /// HCI packets handed to the app.
    pub hci_received: u64,
    /// HCI packets dropped as already delivered (replays).
    pub hci_duplicates: u64,
    /// HCI packets sent and not yet acknowledged.
    pub hci_unacked: u64,
    /// Audio frames sent as datagrams (host: sound; handset: microphone).
    pub audio_frames_sent: u64,
    /// Audio frames received and handed to the app.
    pub audio_frames_received: u64,
    /// Audio frames not sent (disconnected, send buffer full) or not handed
    /// over (the app did not keep up): late audio is dropped, never queued.
    pub audio_frames_dropped: u64,
    /// Smoothed RTT of the current connection, microseconds (0 if none).
    pub rtt_us: u64,
}

impl SessionStats {
    /// The counters as a `Stats` control message (fields this side does not
    /// track stay 0), e.g. for `send_control(Msg::Stats(stats.to_proto()))`.
    #[must_use]
    pub fn to_proto(&self) -> sensor_proto::bridge::Stats {
        sensor_proto::bridge::Stats {
            frames_sent: self.video_frames_sent,
            frames_decoded: 0,
            frames_dropped: 0,
            bytes_sent: 0,
            bytes_received: 0,
            rtt_us: u32::try_from(self.rtt_us).unwrap_or(u32::MAX),
            sensor_samples_sent: self.sensor_samples_sent,
            sensor_samples_dropped: self.sensor_samples_dropped + self.sensor_samples_stale,
            hci_packets_sent: self.hci_sent,
            hci_packets_received: self.hci_received,
            input_events: self.input_sent.max(self.input_received),
            clock_offset_ns: 0,
            glass_to_glass_us: 0,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    control_sent: AtomicU64,
    control_received: AtomicU64,
    sensor_samples_sent: AtomicU64,
    sensor_samples_received: AtomicU64,
    sensor_samples_dropped: AtomicU64,
    input_sent: AtomicU64,
    input_received: AtomicU64,
    video_frames_sent: AtomicU64,
    video_frames_received: AtomicU64,
    video_gops_superseded: AtomicU64,
    streams_reset_before_kind: AtomicU64,
    hci_resent: AtomicU64,
    hci_received: AtomicU64,
    hci_duplicates: AtomicU64,
    audio_sent: AtomicU64,
    audio_received: AtomicU64,
    audio_dropped: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// One decoded video frame (handset side).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct VideoFrame {
    /// The header of the GOP stream the frame came on.
    pub stream: VideoStreamHeader,
    /// The frame header (pts, seq, keyframe, ...).
    pub header: VideoFrameHeader,
    /// The H.264 Annex B access unit.
    pub payload: Bytes,
}

/// An app-facing inbound queue.
#[derive(Debug)]
pub(crate) struct Inbox<T> {
    pub(crate) tx: mpsc::Sender<T>,
    rx: tokio::sync::Mutex<mpsc::Receiver<T>>,
}

impl<T> Inbox<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity);
        Self {
            tx,
            rx: tokio::sync::Mutex::new(rx),
        }
    }

    /// The next message, or `ended()` once the session is over and the
    /// queue empty. Cancel safe.
    pub(crate) async fn recv(
        &self,
        end: &watch::Sender<Option<SessionEnd>>,
        ended: impl Fn() -> BridgeError,
    ) -> Result<T, BridgeError> {
        let mut rx = self.rx.lock().await;
        let mut end_rx = end.subscribe();
        tokio::select! {
            biased;
            msg = rx.recv() => msg.ok_or_else(&ended),
            _ = end_rx.wait_for(Option::is_some) => rx.try_recv().map_err(|_| ended()),
        }
    }
}

/// Records how a session ended; true the first time only (a session ends
/// once).
pub(crate) fn end_once(slot: &watch::Sender<Option<SessionEnd>>, end: &SessionEnd) -> bool {
    slot.send_if_modified(|s| {
        if s.is_none() {
            *s = Some(end.clone());
            true
        } else {
            false
        }
    })
}

/// One QUIC connection serving a session.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) conn: quinn::Connection,
    pub(crate) generation: u64,
    control_tx: tokio::sync::Mutex<SendStream>,
    input_tx: Option<tokio::sync::Mutex<SendStream>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    has_input: AtomicBool,
    has_hci: AtomicBool,
}

impl Link {
    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(fut);
        let mut tasks = lock(&self.tasks);
        tasks.retain(|h| !h.is_finished());
        tasks.push(handle);
    }

    fn abort(&self) {
        for h in lock(&self.tasks).iter() {
            h.abort();
        }
    }

    /// Aborts every task of this link and waits until they are gone (so no
    /// packet is half-delivered afterwards). Never call from a link task.
    pub(crate) async fn stop(&self) {
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for h in &tasks {
            h.abort();
        }
        for h in tasks {
            let _ = h.await;
        }
    }
}

/// How a connection ended, from the session's point of view.
#[derive(Debug)]
pub(crate) enum Loss {
    /// Network trouble: keep the session for the resume window.
    Transient,
    /// The peer closed it on purpose.
    Closed { code: AppErrorCode, reason: String },
    /// We closed it; whoever did handles the consequences.
    Local,
}

pub(crate) fn classify(err: &quinn::ConnectionError) -> Loss {
    use quinn::ConnectionError as E;
    match err {
        E::TimedOut | E::Reset | E::TransportError(_) | E::ConnectionClosed(_) => Loss::Transient,
        // quinn's implicit close when every handle of a connection is
        // dropped (e.g. a handshake attempt abandoned on timeout). The
        // bridge's own closes always carry a reason, so this is not a
        // deliberate end of the session.
        E::ApplicationClosed(close)
            if close.error_code.into_inner() == 0 && close.reason.is_empty() =>
        {
            Loss::Transient
        }
        E::ApplicationClosed(close) => Loss::Closed {
            code: AppErrorCode::from_code(close.error_code.into_inner())
                .unwrap_or(AppErrorCode::InternalError),
            reason: String::from_utf8_lossy(&close.reason).into_owned(),
        },
        E::LocallyClosed => Loss::Local,
        E::VersionMismatch | E::CidsExhausted => Loss::Closed {
            code: AppErrorCode::InternalError,
            reason: err.to_string(),
        },
    }
}

/// Per-kind and per-datagram sequence numbers of the handset's sensors.
#[derive(Debug, Default)]
struct SensorSeqs {
    datagram: u64,
    per_kind: HashMap<i32, u64>,
}

/// The session state shared by the app handles and the link tasks.
pub(crate) struct Core {
    pub(crate) role: Role,
    pub(crate) id: String,
    /// The handset's first `Hello` (enrollment token removed).
    pub(crate) hello: Hello,
    /// The latest `Welcome` (sent by the host / received by the handset).
    pub(crate) welcome: Mutex<Welcome>,
    /// The handset's certificate fingerprint (host side).
    pub(crate) handset: Option<Fingerprint>,
    pub(crate) resume_window: Duration,
    link: watch::Sender<Option<Arc<Link>>>,
    last_link: Mutex<Option<Arc<Link>>>,
    ended: watch::Sender<Option<SessionEnd>>,
    generation: AtomicU64,
    /// Serializes link replacement (resume) on the host.
    pub(crate) attach: tokio::sync::Mutex<()>,
    control_in: Inbox<ControlMessage>,
    sensors_in: Inbox<SensorSample>,
    audio_in: Inbox<AudioFrame>,
    input_in: Inbox<InputMessage>,
    video_in: Inbox<VideoFrame>,
    hci_in: Inbox<H4Packet>,
    hci_out_tx: mpsc::Sender<H4Packet>,
    hci_out_rx: tokio::sync::Mutex<mpsc::Receiver<H4Packet>>,
    pub(crate) hci_tx: Mutex<HciSender>,
    pub(crate) hci_rx: Mutex<HciReceiver>,
    hci_window: Notify,
    hci_ack_due: Notify,
    sensor_filter: Mutex<LatestWins>,
    sensor_seqs: Mutex<SensorSeqs>,
    /// Handset: last input seq assigned. Host: last input seq received.
    input_seq: AtomicU64,
    /// Handset: the last [`INPUT_REPLAY`] input messages as sent (framed),
    /// sent again on a resumed connection: the old connection may have
    /// taken some to its grave, and the host drops those it already has
    /// (by seq), so every input arrives exactly once.
    pub(crate) input_recent: Mutex<std::collections::VecDeque<Bytes>>,
    /// Handset: newest GOP id seen.
    newest_gop: AtomicU64,
    /// Host: last GOP id / frame seq assigned.
    gop_seq: AtomicU64,
    frame_seq: AtomicU64,
    last_gop: Mutex<Option<Arc<GopSlot>>>,
    on_end: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    counters: Counters,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("role", &self.role)
            .field("id", &self.id)
            .field("handset", &self.handset)
            .finish_non_exhaustive()
    }
}

impl Core {
    pub(crate) fn new(
        role: Role,
        id: String,
        mut hello: Hello,
        handset: Option<Fingerprint>,
        resume_window: Duration,
        welcome: Welcome,
    ) -> Arc<Self> {
        hello.enrollment_token = None;
        hello.resume_token = None;
        let allowed: Vec<SensorKind> = hello
            .capabilities
            .iter()
            .filter_map(|c| SensorKind::try_from(c.kind).ok())
            .collect();
        let (hci_out_tx, hci_out_rx) = mpsc::channel(HCI_OUT_QUEUE);
        Arc::new(Self {
            role,
            id,
            hello,
            welcome: Mutex::new(welcome),
            handset,
            resume_window,
            link: watch::Sender::new(None),
            last_link: Mutex::new(None),
            ended: watch::Sender::new(None),
            generation: AtomicU64::new(0),
            attach: tokio::sync::Mutex::new(()),
            control_in: Inbox::new(INBOX),
            sensors_in: Inbox::new(INBOX),
            // About a second of 20 ms frames; beyond that the app is not
            // keeping up, and older sound is worth less than newer.
            audio_in: Inbox::new(AUDIO_INBOX),
            input_in: Inbox::new(INBOX),
            video_in: Inbox::new(64),
            hci_in: Inbox::new(INBOX),
            hci_out_tx,
            hci_out_rx: tokio::sync::Mutex::new(hci_out_rx),
            hci_tx: Mutex::new(HciSender::new()),
            hci_rx: Mutex::new(HciReceiver::new()),
            hci_window: Notify::new(),
            hci_ack_due: Notify::new(),
            sensor_filter: Mutex::new(LatestWins::new(allowed)),
            sensor_seqs: Mutex::new(SensorSeqs::default()),
            input_seq: AtomicU64::new(0),
            input_recent: Mutex::new(std::collections::VecDeque::new()),
            newest_gop: AtomicU64::new(0),
            gop_seq: AtomicU64::new(0),
            frame_seq: AtomicU64::new(0),
            last_gop: Mutex::new(None),
            on_end: Mutex::new(None),
            counters: Counters::default(),
        })
    }

    pub(crate) fn set_on_end(&self, hook: Box<dyn FnOnce() + Send>) {
        *lock(&self.on_end) = Some(hook);
    }

    // ----- link management -------------------------------------------------

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub(crate) fn current_link(&self) -> Option<Arc<Link>> {
        self.link.borrow().clone()
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.link.borrow().is_some()
    }

    pub(crate) fn end_state(&self) -> Option<SessionEnd> {
        self.ended.borrow().clone()
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.ended.borrow().is_some()
    }

    /// Starts serving the session on a new connection: spawns the link's
    /// tasks and makes it current. The caller has already stopped any
    /// previous link ([`Self::stop_previous_link`]).
    pub(crate) fn install_link(
        self: &Arc<Self>,
        conn: quinn::Connection,
        control_tx: SendStream,
        control_rx: FrameReader,
        input_tx: Option<SendStream>,
        hci: Option<(SendStream, FrameReader)>,
    ) -> Arc<Link> {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let link = Arc::new(Link {
            conn,
            generation,
            control_tx: tokio::sync::Mutex::new(control_tx),
            input_tx: input_tx.map(tokio::sync::Mutex::new),
            tasks: Mutex::new(Vec::new()),
            has_input: AtomicBool::new(false),
            has_hci: AtomicBool::new(false),
        });
        link.spawn(control_reader(self.clone(), link.clone(), control_rx));
        link.spawn(datagram_reader(self.clone(), link.clone()));
        link.spawn(uni_acceptor(self.clone(), link.clone()));
        link.spawn(bidi_acceptor(self.clone(), link.clone()));
        if let Some((send, reader)) = hci {
            link.has_hci.store(true, Ordering::SeqCst);
            link.spawn(hci_writer(self.clone(), link.clone(), send));
            link.spawn(hci_reader(self.clone(), link.clone(), reader));
        }
        bump(&self.counters.connections);
        *lock(&self.last_link) = Some(link.clone());
        self.link.send_replace(Some(link.clone()));
        if let Some(end) = self.end_state() {
            // Ended while we were attaching.
            link.conn
                .close(wire::code_varint(end.code), wire::reason_bytes(&end.reason));
            link.abort();
            self.link.send_replace(None);
        }
        link
    }

    /// Marks the session as disconnected if `generation` is still the
    /// current link. Returns false if a newer link took over meanwhile.
    pub(crate) fn detach(&self, generation: u64) -> bool {
        self.link.send_if_modified(|slot| match slot {
            Some(l) if l.generation == generation => {
                *slot = None;
                true
            }
            _ => false,
        })
    }

    /// Closes and fully stops the most recent link (if any), so that its
    /// HCI state is final. Used before answering a resume.
    pub(crate) async fn stop_previous_link(&self, reason: &str) {
        let prev = lock(&self.last_link).take();
        if let Some(prev) = prev {
            self.detach(prev.generation);
            prev.conn
                .close(wire::code_varint(AppErrorCode::NoError), reason.as_bytes());
            prev.stop().await;
        }
    }

    /// Waits for a live link (or the end of the session).
    pub(crate) async fn wait_link(&self) -> Result<Arc<Link>, BridgeError> {
        let mut link_rx = self.link.subscribe();
        let mut end_rx = self.ended.subscribe();
        loop {
            if let Some(end) = end_rx.borrow_and_update().clone() {
                return Err(BridgeError::SessionEnded(end));
            }
            if let Some(link) = link_rx.borrow_and_update().clone() {
                return Ok(link);
            }
            tokio::select! {
                r = link_rx.changed() => if r.is_err() { return Err(self.ended_error()) },
                r = end_rx.changed() => if r.is_err() { return Err(self.ended_error()) },
            }
        }
    }

    fn ended_error(&self) -> BridgeError {
        ended_error(&self.ended)
    }

    /// Ends the session (once): closes the current connection with the
    /// end's code and reason and stops its tasks.
    pub(crate) fn end(&self, end: SessionEnd) {
        let first = end_once(&self.ended, &end);
        if !first {
            return;
        }
        tracing::info!(session = %self.id, code = ?end.code, by_peer = end.by_peer, "session ended: {}", end.reason);
        let link = self.link.send_replace(None);
        let last = lock(&self.last_link).take();
        for l in link.iter().chain(last.iter()) {
            l.conn
                .close(wire::code_varint(end.code), wire::reason_bytes(&end.reason));
            l.abort();
        }
        if let Some(gop) = lock(&self.last_gop).take() {
            gop.supersede();
        }
        let hook = lock(&self.on_end).take();
        if let Some(hook) = hook {
            hook();
        }
    }

    /// The peer broke the protocol on `link`: log the cause and close.
    fn fail(&self, link: &Link, code: AppErrorCode, message: String) {
        if self.generation() != link.generation || self.is_ended() {
            link.conn
                .close(wire::code_varint(code), wire::reason_bytes(&message));
            return;
        }
        tracing::warn!(
            session = %self.id,
            code = ?code,
            peer = %link.conn.remote_address(),
            "closing session, {} broke the protocol: {message}",
            self.role.peer()
        );
        self.end(SessionEnd {
            code,
            reason: message,
            by_peer: false,
        });
    }

    fn read_failed(&self, link: &Link, fail: ReadFail, what: &str) {
        match fail {
            ReadFail::Lost => {}
            ReadFail::Reset(code) => self.fail(
                link,
                AppErrorCode::ProtocolViolation,
                format!("{} reset the {what} stream (code {code})", self.role.peer()),
            ),
            ReadFail::Peer(code, msg) => self.fail(link, code, format!("{what}: {msg}")),
            ReadFail::Internal(msg) => {
                self.fail(link, AppErrorCode::InternalError, format!("{what}: {msg}"));
            }
        }
    }
}

/// Waits until `slot` records how the session ended.
pub(crate) async fn wait_end(slot: &watch::Sender<Option<SessionEnd>>) -> SessionEnd {
    let mut rx = slot.subscribe();
    match rx.wait_for(Option::is_some).await {
        Ok(end) => end.clone().unwrap_or_else(unreachable_end),
        Err(_) => unreachable_end(),
    }
}

/// The error for an operation on an ended session (`slot` says how).
pub(crate) fn ended_error(slot: &watch::Sender<Option<SessionEnd>>) -> BridgeError {
    BridgeError::SessionEnded(slot.borrow().clone().unwrap_or_else(|| SessionEnd {
        code: AppErrorCode::InternalError,
        reason: "session dropped".into(),
        by_peer: false,
    }))
}

fn unreachable_end() -> SessionEnd {
    SessionEnd {
        code: AppErrorCode::InternalError,
        reason: "session state dropped".into(),
        by_peer: false,
    }
}

/// Opens the handset's per-connection streams: input (uni) and hci (bidi),
/// each announced by its kind byte.
/// Input messages a handset keeps to send again after a resume: more than a
/// person types or touches in the seconds a resume can take.
pub(crate) const INPUT_REPLAY: usize = 1024;

/// Opens a handset's input and hci streams on `conn`; the input stream
/// starts with the input messages `core` sent recently (after a resume, the
/// host drops those it already has).
pub(crate) async fn open_client_streams(
    core: &Core,
    conn: &quinn::Connection,
) -> Result<(SendStream, (SendStream, FrameReader)), BridgeError> {
    let mut input = conn
        .open_uni()
        .await
        .map_err(|_| BridgeError::Disconnected)?;
    wire::write(&mut input, wire::kind_prefix(StreamKind::Input).freeze()).await?;
    let recent: Vec<Bytes> = lock(&core.input_recent).iter().cloned().collect();
    for bytes in recent {
        wire::write(&mut input, bytes).await?;
    }
    let (mut hci_send, hci_recv): (SendStream, RecvStream) = conn
        .open_bi()
        .await
        .map_err(|_| BridgeError::Disconnected)?;
    wire::write(&mut hci_send, wire::kind_prefix(StreamKind::Hci).freeze()).await?;
    Ok((input, (hci_send, FrameReader::new(hci_recv))))
}

/// An owning handle: when the last app handle goes away, the session ends.
#[derive(Debug)]
pub(crate) struct Owner(pub(crate) Arc<Core>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.end(SessionEnd {
            code: AppErrorCode::NoError,
            reason: "the session handle was dropped".into(),
            by_peer: false,
        });
    }
}
