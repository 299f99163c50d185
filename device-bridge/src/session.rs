//! The session core shared by both sides: it outlives individual QUIC
//! connections ("links"), owns the app-facing queues and the HCI
//! sequencing, and runs the per-link reader and writer tasks.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bt_raw::H4Packet;
use bytes::{Bytes, BytesMut};
use prost::Message as _;
use quinn::{RecvStream, SendStream};
use sensor_proto::bridge::{
    AppErrorCode, ClockPong, Close, CloseReason, ControlMessage, HciAck, HciMessage, Hello,
    InputMessage, SensorDatagram, SensorKind, SensorSample, StreamKind, VideoFrameHeader,
    VideoStreamHeader, Welcome, control_message, hci_message,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::BridgeError;
use crate::hci::{HciReceiver, HciSender, Incoming};
use crate::identity::Fingerprint;
use crate::sensors::{LatestWins, SampleVerdict};
use crate::wire::{self, FrameReader, ReadFail};

/// Capacity of each app-facing inbound queue.
const INBOX: usize = 1024;
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
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
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
struct Inbox<T> {
    tx: mpsc::Sender<T>,
    rx: tokio::sync::Mutex<mpsc::Receiver<T>>,
}

impl<T> Inbox<T> {
    fn new(capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity);
        Self {
            tx,
            rx: tokio::sync::Mutex::new(rx),
        }
    }
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

/// The send priority of GOP `gop_id`'s stream. Every video stream ranks
/// below control, input and HCI (priority 0, quinn's default), so those
/// never queue behind video in the shared connection; among video streams a
/// newer GOP ranks above an older one, which must never hold it up.
fn video_priority(gop_id: u64) -> i32 {
    // gop_id counts up from 1; after 2^31 GOPs (years) the order wraps once.
    let rank = i32::try_from(gop_id % (1 << 31)).unwrap_or(0);
    i32::MIN.saturating_add(rank)
}

/// The state of a video GOP stream being written (host side).
#[derive(Debug)]
struct GopSlot {
    gop_id: u64,
    /// The stream, while no write is in progress.
    stream: Mutex<Option<SendStream>>,
    superseded: AtomicBool,
    wake: Notify,
}

impl GopSlot {
    /// Marks the GOP stale and resets its stream (now, or as soon as the
    /// write in progress notices).
    /// Returns true if data was actually cut off (a write was in progress
    /// or the stream still had unacknowledged data).
    fn supersede(&self) -> bool {
        self.superseded.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        match lock(&self.stream).take() {
            // Fails harmlessly if everything was already acknowledged.
            Some(mut stream) => stream
                .reset(wire::code_varint(AppErrorCode::NoError))
                .is_ok(),
            // A write is in progress: the writer resets the stream.
            None => true,
        }
    }
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
        BridgeError::SessionEnded(self.end_state().unwrap_or_else(|| SessionEnd {
            code: AppErrorCode::InternalError,
            reason: "session dropped".into(),
            by_peer: false,
        }))
    }

    /// Ends the session (once): closes the current connection with the
    /// end's code and reason and stops its tasks.
    pub(crate) fn end(&self, end: SessionEnd) {
        let first = self.ended.send_if_modified(|slot| {
            if slot.is_none() {
                *slot = Some(end.clone());
                true
            } else {
                false
            }
        });
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

    // ----- app-facing operations --------------------------------------------

    pub(crate) async fn ended(&self) -> SessionEnd {
        let mut rx = self.ended.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(end) => end.clone().unwrap_or_else(unreachable_end),
            Err(_) => unreachable_end(),
        }
    }

    async fn recv_from<T>(&self, inbox: &Inbox<T>) -> Result<T, BridgeError> {
        let mut rx = inbox.rx.lock().await;
        let mut end_rx = self.ended.subscribe();
        tokio::select! {
            biased;
            msg = rx.recv() => msg.ok_or_else(|| self.ended_error()),
            _ = end_rx.wait_for(Option::is_some) => rx.try_recv().map_err(|_| self.ended_error()),
        }
    }

    pub(crate) async fn recv_control(&self) -> Result<ControlMessage, BridgeError> {
        self.recv_from(&self.control_in).await
    }

    pub(crate) async fn send_control(&self, msg: control_message::Msg) -> Result<(), BridgeError> {
        use control_message::Msg;
        match (&msg, self.role) {
            (Msg::Hello(_) | Msg::Welcome(_) | Msg::Close(_), _) => {
                return Err(BridgeError::InvalidArgument(
                    "Hello, Welcome and Close are sent by the bridge itself (use close())".into(),
                ));
            }
            (Msg::Pong(_), Role::Server) => {
                return Err(BridgeError::InvalidArgument(
                    "the bridge answers ClockPing itself".into(),
                ));
            }
            _ => {}
        }
        let bytes = wire::frame(&ControlMessage { msg: Some(msg) })?;
        let link = self.wait_link().await?;
        wire::write(&mut *link.control_tx.lock().await, bytes).await?;
        bump(&self.counters.control_sent);
        Ok(())
    }

    pub(crate) async fn close(&self, reason: CloseReason, message: &str) {
        if self.is_ended() {
            return;
        }
        if let Some(link) = self.current_link() {
            let close = ControlMessage {
                msg: Some(control_message::Msg::Close(Close {
                    reason: reason as i32,
                    message: message.to_owned(),
                })),
            };
            if let Ok(bytes) = wire::frame(&close) {
                let mut tx = link.control_tx.lock().await;
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), tx.write_chunk(bytes)).await;
            }
        }
        self.end(SessionEnd {
            code: reason.app_error_code(),
            reason: message.to_owned(),
            by_peer: false,
        });
    }

    pub(crate) async fn recv_sensor(&self) -> Result<SensorSample, BridgeError> {
        self.recv_from(&self.sensors_in).await
    }

    /// Handset: numbers the samples and sends them as one datagram.
    pub(crate) fn send_sensors(&self, samples: Vec<SensorSample>) -> Result<(), BridgeError> {
        if let Some(end) = self.end_state() {
            return Err(BridgeError::SessionEnded(end));
        }
        let allowed: Vec<i32> = self.hello.capabilities.iter().map(|c| c.kind).collect();
        if let Some(bad) = samples.iter().find(|s| !allowed.contains(&s.kind)) {
            return Err(BridgeError::InvalidArgument(format!(
                "sensor kind {} is not among the capabilities in Hello",
                bad.kind
            )));
        }
        let count = samples.len() as u64;
        let datagram = {
            let mut seqs = lock(&self.sensor_seqs);
            let mut samples = samples;
            for s in &mut samples {
                let seq = seqs.per_kind.entry(s.kind).or_insert(0);
                *seq += 1;
                s.seq = *seq;
            }
            seqs.datagram += 1;
            SensorDatagram {
                seq: seqs.datagram,
                batch: Some(sensor_proto::bridge::SensorBatch { samples }),
            }
        };
        let Some(link) = self.current_link() else {
            self.counters
                .sensor_samples_dropped
                .fetch_add(count, Ordering::Relaxed);
            return Ok(());
        };
        let bytes = Bytes::from(datagram.encode_to_vec());
        match link.conn.send_datagram(bytes) {
            Ok(()) => {
                self.counters
                    .sensor_samples_sent
                    .fetch_add(count, Ordering::Relaxed);
                Ok(())
            }
            Err(quinn::SendDatagramError::TooLarge) => Err(BridgeError::InvalidArgument(format!(
                "sensor datagram too large ({} samples); send fewer at once",
                count
            ))),
            Err(_) => {
                self.counters
                    .sensor_samples_dropped
                    .fetch_add(count, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// Handset: sends one input event in order; returns its seq.
    pub(crate) async fn send_input(
        &self,
        event: sensor_proto::bridge::input_message::Event,
    ) -> Result<u64, BridgeError> {
        let link = self.wait_link().await?;
        let Some(input) = &link.input_tx else {
            return Err(BridgeError::Disconnected);
        };
        let mut tx = input.lock().await;
        let seq = self.input_seq.fetch_add(1, Ordering::SeqCst) + 1;
        let bytes = wire::frame(&InputMessage {
            seq,
            event: Some(event),
        })?;
        wire::write(&mut tx, bytes).await?;
        bump(&self.counters.input_sent);
        Ok(seq)
    }

    pub(crate) async fn recv_input(&self) -> Result<InputMessage, BridgeError> {
        self.recv_from(&self.input_in).await
    }

    pub(crate) async fn send_hci(&self, packet: H4Packet) -> Result<(), BridgeError> {
        if let Some(end) = self.end_state() {
            return Err(BridgeError::SessionEnded(end));
        }
        let mut end_rx = self.ended.subscribe();
        tokio::select! {
            r = self.hci_out_tx.send(packet) => r.map_err(|_| self.ended_error()),
            _ = end_rx.wait_for(Option::is_some) => Err(self.ended_error()),
        }
    }

    pub(crate) async fn recv_hci(&self) -> Result<H4Packet, BridgeError> {
        self.recv_from(&self.hci_in).await
    }

    pub(crate) async fn recv_video(&self) -> Result<VideoFrame, BridgeError> {
        loop {
            let frame = self.recv_from(&self.video_in).await?;
            if frame.stream.gop_id >= self.newest_gop.load(Ordering::SeqCst) {
                bump(&self.counters.video_frames_received);
                return Ok(frame);
            }
        }
    }

    pub(crate) async fn start_gop(
        self: &Arc<Self>,
        mut header: VideoStreamHeader,
    ) -> Result<GopWriter, BridgeError> {
        let link = self.wait_link().await?;
        let gop_id = self.gop_seq.fetch_add(1, Ordering::SeqCst) + 1;
        header.gop_id = gop_id;
        let prev = lock(&self.last_gop).take();
        if let Some(prev) = prev
            && prev.supersede()
        {
            bump(&self.counters.video_gops_superseded);
        }
        let mut stream = link
            .conn
            .open_uni()
            .await
            .map_err(|_| BridgeError::Disconnected)?;
        let _ = stream.set_priority(video_priority(gop_id));
        let mut buf = wire::kind_prefix(StreamKind::Video);
        wire::put_frame(&mut buf, &header);
        wire::write(&mut stream, buf.freeze()).await?;
        let slot = Arc::new(GopSlot {
            gop_id,
            stream: Mutex::new(Some(stream)),
            superseded: AtomicBool::new(false),
            wake: Notify::new(),
        });
        *lock(&self.last_gop) = Some(slot.clone());
        Ok(GopWriter {
            core: self.clone(),
            slot,
            frames: 0,
        })
    }

    pub(crate) fn stats(&self) -> SessionStats {
        let c = &self.counters;
        let (hci_sent, hci_unacked) = {
            let tx = lock(&self.hci_tx);
            (tx.last_seq(), tx.unacked_len() as u64)
        };
        let (stale, applied) = {
            let f = lock(&self.sensor_filter);
            (f.stale_count(), f.applied_count())
        };
        let _ = applied;
        SessionStats {
            connections: get(&c.connections),
            control_sent: get(&c.control_sent),
            control_received: get(&c.control_received),
            sensor_samples_sent: get(&c.sensor_samples_sent),
            sensor_samples_received: get(&c.sensor_samples_received),
            sensor_samples_stale: stale,
            sensor_samples_dropped: get(&c.sensor_samples_dropped),
            input_sent: get(&c.input_sent),
            input_received: get(&c.input_received),
            video_frames_sent: get(&c.video_frames_sent),
            video_frames_received: get(&c.video_frames_received),
            video_gops_superseded: get(&c.video_gops_superseded),
            streams_reset_unread: get(&c.streams_reset_before_kind),
            hci_sent,
            hci_resent: get(&c.hci_resent),
            hci_received: get(&c.hci_received),
            hci_duplicates: get(&c.hci_duplicates),
            hci_unacked,
            rtt_us: self.current_link().map_or(0, |l| {
                u64::try_from(l.conn.rtt().as_micros()).unwrap_or(u64::MAX)
            }),
        }
    }
}

fn unreachable_end() -> SessionEnd {
    SessionEnd {
        code: AppErrorCode::InternalError,
        reason: "session state dropped".into(),
        by_peer: false,
    }
}

/// Writes one GOP (group of pictures) on its own unidirectional stream
/// (host side). Obtained from `ServerSession::start_gop`.
///
/// Starting a newer GOP resets this GOP's stream if it is still unfinished
/// or not fully delivered, so stale video never delays fresh video; writes
/// then fail with [`BridgeError::GopSuperseded`].
#[derive(Debug)]
pub struct GopWriter {
    core: Arc<Core>,
    slot: Arc<GopSlot>,
    frames: u64,
}

impl GopWriter {
    /// This GOP's id (`VideoStreamHeader.gop_id`).
    #[must_use]
    pub fn gop_id(&self) -> u64 {
        self.slot.gop_id
    }

    /// Writes one frame: `header` (its `seq` and `payload_len` are filled
    /// in by the bridge) followed by `payload`. The first frame of a GOP
    /// must be a keyframe. Returns the frame's seq.
    ///
    /// # Errors
    ///
    /// [`BridgeError::GopSuperseded`] once a newer GOP started (stop
    /// writing this one); [`BridgeError::InvalidArgument`] for a non-key
    /// first frame or a payload over 8 MiB; [`BridgeError::Disconnected`]
    /// if the connection died (start a new GOP after the resume).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a cancelled write leaves the stream unusable.
    pub async fn write_frame(
        &mut self,
        mut header: VideoFrameHeader,
        payload: Bytes,
    ) -> Result<u64, BridgeError> {
        let superseded = BridgeError::GopSuperseded {
            gop_id: self.slot.gop_id,
        };
        if self.slot.superseded.load(Ordering::SeqCst) {
            return Err(superseded);
        }
        if self.frames == 0 && !header.keyframe {
            return Err(BridgeError::InvalidArgument(
                "the first frame of a GOP must be a keyframe".into(),
            ));
        }
        if payload.len() > wire::MAX_VIDEO_PAYLOAD {
            return Err(BridgeError::InvalidArgument(format!(
                "video payload of {} bytes exceeds 8 MiB",
                payload.len()
            )));
        }
        let Some(mut stream) = lock(&self.slot.stream).take() else {
            return Err(superseded);
        };
        header.seq = self.core.frame_seq.fetch_add(1, Ordering::SeqCst) + 1;
        header.payload_len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let mut head = BytesMut::new();
        wire::put_frame(&mut head, &header);
        let result = tokio::select! {
            biased;
            () = self.slot.wake.notified() => Ok(()),
            r = async {
                stream.write_chunk(head.freeze()).await?;
                stream.write_chunk(payload).await
            } => r.map_err(wire::write_error),
        };
        if self.slot.superseded.load(Ordering::SeqCst) {
            let _ = stream.reset(wire::code_varint(AppErrorCode::NoError));
            return Err(superseded);
        }
        result?;
        *lock(&self.slot.stream) = Some(stream);
        self.frames += 1;
        bump(&self.core.counters.video_frames_sent);
        Ok(header.seq)
    }

    /// Ends the GOP cleanly. Its data keeps flowing until delivered or
    /// until a newer GOP resets it.
    ///
    /// # Errors
    ///
    /// [`BridgeError::GopSuperseded`] if a newer GOP already started.
    pub fn finish(self) -> Result<(), BridgeError> {
        let mut slot = lock(&self.slot.stream);
        match slot.as_mut() {
            Some(stream) => {
                let _ = stream.finish();
                Ok(())
            }
            None => Err(BridgeError::GopSuperseded {
                gop_id: self.slot.gop_id,
            }),
        }
    }
}

// ----- link tasks -------------------------------------------------------------

async fn control_reader(core: Arc<Core>, link: Arc<Link>, mut reader: FrameReader) {
    use control_message::Msg;
    loop {
        let msg = match reader.next::<ControlMessage>().await {
            Ok(Some(msg)) => msg,
            Ok(None) => return,
            Err(fail) => return core.read_failed(&link, fail, "control"),
        };
        match msg.msg {
            None => {
                tracing::debug!(session = %core.id, "ignoring an empty or unknown control message")
            }
            Some(Msg::Hello(_) | Msg::Welcome(_)) => {
                return core.fail(
                    &link,
                    AppErrorCode::ProtocolViolation,
                    "Hello/Welcome on an established session".into(),
                );
            }
            Some(Msg::Close(close)) => {
                let reason =
                    CloseReason::try_from(close.reason).unwrap_or(CloseReason::Unspecified);
                core.end(SessionEnd {
                    code: reason.app_error_code(),
                    reason: close.message,
                    by_peer: true,
                });
                return;
            }
            Some(Msg::Ping(ping)) if core.role == Role::Server => {
                let recv_ns = crate::util::unix_nanos();
                let pong = ControlMessage {
                    msg: Some(Msg::Pong(ClockPong {
                        id: ping.id,
                        client_send_ns: ping.client_send_ns,
                        server_recv_ns: recv_ns,
                        server_send_ns: crate::util::unix_nanos(),
                    })),
                };
                if let Ok(bytes) = wire::frame(&pong) {
                    let _ = wire::write(&mut *link.control_tx.lock().await, bytes).await;
                }
            }
            Some(other) => {
                bump(&core.counters.control_received);
                if core
                    .control_in
                    .tx
                    .send(ControlMessage { msg: Some(other) })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

async fn datagram_reader(core: Arc<Core>, link: Arc<Link>) {
    loop {
        let Ok(datagram) = link.conn.read_datagram().await else {
            return;
        };
        if core.role == Role::Client {
            return core.fail(
                &link,
                AppErrorCode::WrongStreamDirection,
                "the host sent a datagram; sensor datagrams flow from handset to host only".into(),
            );
        }
        let datagram = match SensorDatagram::decode(datagram) {
            Ok(d) => d,
            Err(e) => {
                return core.fail(
                    &link,
                    AppErrorCode::MalformedMessage,
                    format!("sensor datagram: {e}"),
                );
            }
        };
        for sample in datagram.batch.map(|b| b.samples).unwrap_or_default() {
            let verdict = lock(&core.sensor_filter).check(&sample);
            match verdict {
                Err(unknown) => {
                    return core.fail(&link, AppErrorCode::UnknownSensor, unknown.to_string());
                }
                Ok(SampleVerdict::Stale) => {}
                Ok(SampleVerdict::Apply) => {
                    bump(&core.counters.sensor_samples_received);
                    if core.sensors_in.tx.try_send(sample).is_err() {
                        bump(&core.counters.sensor_samples_dropped);
                    }
                }
            }
        }
    }
}

/// Reads the kind byte of a newly accepted stream.
async fn stream_kind(
    core: &Core,
    link: &Link,
    reader: &mut FrameReader,
) -> Option<Result<StreamKind, u8>> {
    match reader.raw(1).await {
        Ok(Some(byte)) => {
            let b = byte.first().copied().unwrap_or(0);
            Some(StreamKind::from_byte(b).ok_or(b))
        }
        Ok(None) => None,
        // A stream reset before its first byte carried nothing. Under loss
        // this is ordinary: the host resets a superseded GOP's stream, and
        // that RESET_STREAM can overtake the stream's lost first packet.
        // It is no protocol error; there is simply nothing to read.
        Err(ReadFail::Reset(code)) => {
            bump(&core.counters.streams_reset_before_kind);
            tracing::debug!(
                session = %core.id,
                code,
                "{} reset a new stream before its kind byte; ignored",
                core.role.peer()
            );
            None
        }
        Err(fail) => {
            core.read_failed(link, fail, "new stream");
            None
        }
    }
}

async fn uni_acceptor(core: Arc<Core>, link: Arc<Link>) {
    while let Ok(recv) = link.conn.accept_uni().await {
        let (core, task_link) = (core.clone(), link.clone());
        link.spawn(async move {
            let link = task_link;
            let mut reader = FrameReader::new(recv);
            let Some(kind) = stream_kind(&core, &link, &mut reader).await else {
                return;
            };
            match (core.role, kind) {
                (Role::Server, Ok(StreamKind::Input)) => {
                    if link.has_input.swap(true, Ordering::SeqCst) {
                        return core.fail(
                            &link,
                            AppErrorCode::ProtocolViolation,
                            "a second input stream on one connection".into(),
                        );
                    }
                    input_reader(core, link, reader).await;
                }
                (Role::Client, Ok(StreamKind::Video)) => gop_reader(core, link, reader).await,
                (_, Ok(kind)) => core.fail(
                    &link,
                    AppErrorCode::WrongStreamDirection,
                    format!(
                        "the {} opened a unidirectional {kind:?} stream, which only flows the other way or is bidirectional",
                        core.role.peer()
                    ),
                ),
                (_, Err(byte)) => core.fail(
                    &link,
                    AppErrorCode::ProtocolViolation,
                    format!("stream starts with unknown kind byte {byte}"),
                ),
            }
        });
    }
}

async fn bidi_acceptor(core: Arc<Core>, link: Arc<Link>) {
    while let Ok((send, recv)) = link.conn.accept_bi().await {
        let (core, task_link) = (core.clone(), link.clone());
        link.spawn(async move {
            let link = task_link;
            let mut reader = FrameReader::new(recv);
            let Some(kind) = stream_kind(&core, &link, &mut reader).await else {
                return;
            };
            match (core.role, kind) {
                (Role::Server, Ok(StreamKind::Hci)) => {
                    if link.has_hci.swap(true, Ordering::SeqCst) {
                        return core.fail(
                            &link,
                            AppErrorCode::ProtocolViolation,
                            "a second hci stream on one connection".into(),
                        );
                    }
                    link.spawn(hci_writer(core.clone(), link.clone(), send));
                    hci_reader(core, link, reader).await;
                }
                (_, Ok(kind)) => core.fail(
                    &link,
                    AppErrorCode::WrongStreamDirection,
                    format!(
                        "the {} opened a bidirectional {kind:?} stream",
                        core.role.peer()
                    ),
                ),
                (_, Err(byte)) => core.fail(
                    &link,
                    AppErrorCode::ProtocolViolation,
                    format!("stream starts with unknown kind byte {byte}"),
                ),
            }
        });
    }
}

async fn input_reader(core: Arc<Core>, link: Arc<Link>, mut reader: FrameReader) {
    loop {
        let msg = match reader.next::<InputMessage>().await {
            Ok(Some(msg)) => msg,
            Ok(None) => return,
            Err(fail) => return core.read_failed(&link, fail, "input"),
        };
        if msg.seq <= core.input_seq.load(Ordering::SeqCst) {
            continue;
        }
        core.input_seq.store(msg.seq, Ordering::SeqCst);
        bump(&core.counters.input_received);
        if core.input_in.tx.send(msg).await.is_err() {
            return;
        }
    }
}

async fn gop_reader(core: Arc<Core>, link: Arc<Link>, mut reader: FrameReader) {
    let header = match reader.next::<VideoStreamHeader>().await {
        Ok(Some(h)) => h,
        Ok(None) | Err(ReadFail::Reset(_)) => return,
        Err(fail) => return core.read_failed(&link, fail, "video"),
    };
    let gop = header.gop_id;
    let newest = core.newest_gop.fetch_max(gop, Ordering::SeqCst);
    if gop < newest {
        bump(&core.counters.video_gops_superseded);
        reader.stop(AppErrorCode::NoError);
        return;
    }
    loop {
        if core.newest_gop.load(Ordering::SeqCst) > gop {
            bump(&core.counters.video_gops_superseded);
            reader.stop(AppErrorCode::NoError);
            return;
        }
        let frame = match reader.next::<VideoFrameHeader>().await {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(ReadFail::Reset(_)) => {
                bump(&core.counters.video_gops_superseded);
                return;
            }
            Err(fail) => return core.read_failed(&link, fail, "video"),
        };
        let len = usize::try_from(frame.payload_len).unwrap_or(usize::MAX);
        if len > wire::MAX_VIDEO_PAYLOAD {
            return core.fail(
                &link,
                AppErrorCode::MessageTooLarge,
                format!("video frame payload of {len} bytes exceeds 8 MiB"),
            );
        }
        let payload = match reader.raw(len).await {
            Ok(Some(p)) => p,
            Ok(None) if len == 0 => Bytes::new(),
            Ok(None) => {
                return core.fail(
                    &link,
                    AppErrorCode::MalformedMessage,
                    "video stream ended before the frame payload".into(),
                );
            }
            Err(ReadFail::Reset(_)) => {
                bump(&core.counters.video_gops_superseded);
                return;
            }
            Err(fail) => return core.read_failed(&link, fail, "video"),
        };
        let frame = VideoFrame {
            stream: header,
            header: frame,
            payload,
        };
        if core.video_in.tx.send(frame).await.is_err() {
            return;
        }
    }
}

async fn hci_reader(core: Arc<Core>, link: Arc<Link>, mut reader: FrameReader) {
    loop {
        loop {
            let msg = match reader.try_next::<HciMessage>() {
                Ok(Some(msg)) => msg,
                Ok(None) => break,
                Err(fail) => return core.read_failed(&link, fail, "hci"),
            };
            match msg.msg {
                Some(hci_message::Msg::Packet(p)) => {
                    let seq = p.seq;
                    let packet = match H4Packet::parse(p.h4) {
                        Ok(packet) => packet,
                        Err(e) => {
                            return core.fail(
                                &link,
                                AppErrorCode::BadH4,
                                format!("hci packet seq {seq} is not a valid H4 packet: {e}"),
                            );
                        }
                    };
                    let verdict = lock(&core.hci_rx).check(seq);
                    match verdict {
                        Err(v) => {
                            return core.fail(
                                &link,
                                AppErrorCode::ProtocolViolation,
                                v.to_string(),
                            );
                        }
                        Ok(Incoming::Duplicate) => bump(&core.counters.hci_duplicates),
                        Ok(Incoming::Deliver) => {
                            let Ok(permit) = core.hci_in.tx.reserve().await else {
                                return;
                            };
                            lock(&core.hci_rx).delivered(seq);
                            permit.send(packet);
                            bump(&core.counters.hci_received);
                            if seq % ACK_EVERY == 0 {
                                core.hci_ack_due.notify_one();
                            }
                        }
                    }
                }
                Some(hci_message::Msg::Ack(ack)) => {
                    let freed = lock(&core.hci_tx).on_ack(ack.acked);
                    match freed {
                        Ok(0) => {}
                        Ok(_) => core.hci_window.notify_one(),
                        Err(v) => {
                            return core.fail(
                                &link,
                                AppErrorCode::ProtocolViolation,
                                v.to_string(),
                            );
                        }
                    }
                }
                None => {
                    return core.fail(
                        &link,
                        AppErrorCode::MalformedMessage,
                        "empty or unknown hci message".into(),
                    );
                }
            }
        }
        if lock(&core.hci_rx).ack_due() {
            core.hci_ack_due.notify_one();
        }
        match reader.fill().await {
            Ok(true) => {}
            Ok(false) => {
                return core.fail(
                    &link,
                    AppErrorCode::ProtocolViolation,
                    format!("the {} finished the hci stream", core.role.peer()),
                );
            }
            Err(fail) => return core.read_failed(&link, fail, "hci"),
        }
    }
}

fn window_open(core: &Core) -> bool {
    let tx = lock(&core.hci_tx);
    tx.unacked_len() < MAX_UNACKED_PACKETS && tx.unacked_bytes() < MAX_UNACKED_BYTES
}

async fn hci_writer(core: Arc<Core>, link: Arc<Link>, mut send: SendStream) {
    // Only one writer at a time: a previous link's writer must be gone
    // before this one replays the unacknowledged packets.
    let mut out = core.hci_out_rx.lock().await;
    let replay = lock(&core.hci_tx).unacked_messages();
    if !replay.is_empty() {
        tracing::debug!(session = %core.id, packets = replay.len(), "replaying unacknowledged hci packets");
    }
    let mut buf = BytesMut::with_capacity(HCI_BATCH_BYTES * 2);
    for packet in replay {
        wire::put_frame(
            &mut buf,
            &HciMessage {
                msg: Some(hci_message::Msg::Packet(packet)),
            },
        );
        bump(&core.counters.hci_resent);
        if buf.len() >= HCI_BATCH_BYTES && flush(&core, &link, &mut send, &mut buf).await.is_err() {
            return;
        }
    }
    if flush(&core, &link, &mut send, &mut buf).await.is_err() {
        return;
    }
    loop {
        let open = window_open(&core);
        tokio::select! {
            biased;
            packet = out.recv(), if open => {
                let Some(packet) = packet else { return };
                push_packet(&core, &mut buf, packet);
                while buf.len() < HCI_BATCH_BYTES && window_open(&core) {
                    match out.try_recv() {
                        Ok(packet) => push_packet(&core, &mut buf, packet),
                        Err(_) => break,
                    }
                }
            }
            () = core.hci_ack_due.notified() => {}
            () = core.hci_window.notified(), if !open => {}
            _ = link.conn.closed() => return,
        }
        let ack = lock(&core.hci_rx).take_ack();
        if let Some(acked) = ack {
            wire::put_frame(
                &mut buf,
                &HciMessage {
                    msg: Some(hci_message::Msg::Ack(HciAck { acked })),
                },
            );
        }
        if flush(&core, &link, &mut send, &mut buf).await.is_err() {
            return;
        }
    }
}

fn push_packet(core: &Core, buf: &mut BytesMut, packet: H4Packet) {
    let msg = lock(&core.hci_tx).push(packet);
    wire::put_frame(
        buf,
        &HciMessage {
            msg: Some(hci_message::Msg::Packet(msg)),
        },
    );
}

async fn flush(
    core: &Core,
    link: &Link,
    send: &mut SendStream,
    buf: &mut BytesMut,
) -> Result<(), ()> {
    if buf.is_empty() {
        return Ok(());
    }
    let chunk = buf.split().freeze();
    match send.write_chunk(chunk).await {
        Ok(()) => Ok(()),
        Err(quinn::WriteError::Stopped(code)) => {
            core.fail(
                link,
                AppErrorCode::ProtocolViolation,
                format!("{} stopped the hci stream (code {code})", core.role.peer()),
            );
            Err(())
        }
        Err(_) => Err(()),
    }
}

/// Opens the handset's per-connection streams: input (uni) and hci (bidi),
/// each announced by its kind byte.
pub(crate) async fn open_client_streams(
    conn: &quinn::Connection,
) -> Result<(SendStream, (SendStream, FrameReader)), BridgeError> {
    let mut input = conn
        .open_uni()
        .await
        .map_err(|_| BridgeError::Disconnected)?;
    wire::write(&mut input, wire::kind_prefix(StreamKind::Input).freeze()).await?;
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

#[cfg(test)]
mod tests {
    use super::video_priority;

    #[test]
    fn video_ranks_below_other_streams_and_newer_gops_above_older() {
        for gop in [1, 2, 1000, (1 << 31) - 1, u64::MAX] {
            assert!(video_priority(gop) < 0, "GOP {gop}");
        }
        assert!(video_priority(2) > video_priority(1));
        assert!(video_priority(1001) > video_priority(1000));
    }
}
