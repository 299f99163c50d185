//! Bluetooth passthrough, host side: the netsim `PacketStreamer` server that
//! phone Bluetooth stacks attach to (the Android Emulator's
//! `-packet-streamer-endpoint`, bumble's `android-netsim` transport), and one
//! link actor per phone that relays HCI between that stack and the radio a
//! handset lends over its QUIC session.
//!
//! The actor never lets the stack wait: with no radio, a command waits at
//! most [`BtConfig::command_deadline`] for one to attach and is then refused
//! with Hardware Failure; when the radio is lost (the handset stops its
//! heartbeat, its session ends, or a command stays unanswered past the
//! deadline) the stack gets a refusal for every outstanding command, a
//! Disconnection Complete for every open connection and a Hardware Error
//! ([`bt_raw::link::LinkTracker::radio_lost`]). After that only an HCI_Reset
//! goes through until the stack has re-initialised, so no stale controller
//! state reaches it.
//!
//! HCI parsing lives in `bt-raw`; this module only routes packets.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bt_raw::btsnoop::Direction;
use bt_raw::link::{LinkChange, LinkTracker, answers, disconnect_command, disconnected_handle};
use bt_raw::packet::{Command, opcodes, status};
use bt_raw::policy::refusal;
use bt_raw::{H4Packet, PacketType};
use device_bridge::ServerSession;
use sensor_proto::netsim::common::ChipKind;
use sensor_proto::netsim::packet::packet_request::RequestType;
use sensor_proto::netsim::packet::packet_response::ResponseType;
use sensor_proto::netsim::packet::packet_streamer_server::{PacketStreamer, PacketStreamerServer};
use sensor_proto::netsim::packet::{HciPacket, PacketRequest, PacketResponse};
use sensor_proto::netsim::startup::ChipInfo;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, oneshot};
use tonic::{Request, Response, Status, Streaming};

use crate::operator::Metrics;
use crate::phones::PhoneManager;
use crate::registry::Backend;
use crate::sim::SimPhone;
use crate::sim::render::BluetoothView;

/// Timing of the link actors.
#[derive(Clone, Copy, Debug)]
pub struct BtConfig {
    /// Longest a command from the stack may stay unanswered (Android's
    /// stack gives up after 2 s and restarts its Bluetooth process).
    pub command_deadline: Duration,
    /// The radio counts as lost after this long without a heartbeat
    /// (`RadioState{lent: true}`) from the handset.
    pub heartbeat_timeout: Duration,
}

impl Default for BtConfig {
    fn default() -> Self {
        Self {
            command_deadline: Duration::from_millis(1500),
            heartbeat_timeout: Duration::from_millis(1500),
        }
    }
}

/// Commands from a stack that may wait for a radio to attach.
const MAX_PENDING: usize = 16;
/// Packets queued towards a stack.
const STACK_QUEUE: usize = 1024;
/// Packets kept for slow snoop readers.
const SNOOP_BUFFER: usize = 4096;
/// How long a new stream may take to send its ChipInfo.
const CHIP_INFO_TIMEOUT: Duration = Duration::from_secs(10);

/// One packet seen by a phone's link, for captures.
#[derive(Clone, Debug)]
pub struct SnoopItem {
    /// Stack to radio (`HostToController`) or back.
    pub direction: Direction,
    /// The packet, unredacted (redact before it leaves the process).
    pub packet: H4Packet,
    /// When the host saw it, Unix microseconds.
    pub unix_us: i64,
}

/// What a phone's link is doing, for the operator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkInfo {
    /// The attached stack (its name and peer address), if any.
    pub stack: Option<String>,
    /// The session whose handset lends the radio, if any.
    pub radio_session: Option<String>,
    /// Packets relayed from the stack to the radio.
    pub to_radio: u64,
    /// Packets relayed from the radio to the stack.
    pub to_stack: u64,
    /// Commands the host answered itself (no radio, radio lost, resync).
    pub answered_locally: u64,
    /// Packets dropped (data without a radio, radio data without a stack).
    pub dropped: u64,
    /// Times the radio was lost while lent.
    pub radio_losses: u64,
}

enum Ev {
    StackAttach {
        who: String,
        sim: Option<SimPhone>,
        reply: oneshot::Sender<Result<StackHandle, Status>>,
    },
    StackPacket(u64, H4Packet),
    StackGone(u64),
    RadioBeat(ServerSession),
    RadioReleased(String, String),
    RadioPacket(u64, H4Packet),
    RadioEnded(u64, String),
}

/// A stack's handle on its link: its id and the packets for it.
struct StackHandle {
    id: u64,
    out_tx: mpsc::Sender<Result<PacketResponse, Status>>,
    out_rx: mpsc::Receiver<Result<PacketResponse, Status>>,
}

#[derive(Debug)]
struct Link {
    tx: mpsc::Sender<Ev>,
    snoop: broadcast::Sender<SnoopItem>,
    info: Arc<Mutex<LinkInfo>>,
}

/// The Bluetooth side of the host: every phone's link and the netsim server.
#[derive(Debug)]
pub struct Bluetooth {
    phones: PhoneManager,
    metrics: Arc<Metrics>,
    cfg: BtConfig,
    links: Mutex<HashMap<String, Arc<Link>>>,
}

impl Bluetooth {
    /// The Bluetooth side over these phones.
    pub fn new(phones: PhoneManager, metrics: Arc<Metrics>, cfg: BtConfig) -> Arc<Self> {
        Arc::new(Self {
            phones,
            metrics,
            cfg,
            links: Mutex::new(HashMap::new()),
        })
    }

    fn link(&self, phone: &str) -> Arc<Link> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = links.get(phone) {
            return l.clone();
        }
        let (tx, rx) = mpsc::channel(256);
        let (snoop, _) = broadcast::channel(SNOOP_BUFFER);
        let info = Arc::new(Mutex::new(LinkInfo::default()));
        let actor = Actor {
            phone: phone.to_owned(),
            phones: self.phones.clone(),
            metrics: self.metrics.clone(),
            cfg: self.cfg,
            self_tx: tx.downgrade(),
            snoop: snoop.clone(),
            info: info.clone(),
            next_id: 0,
            stack: None,
            radio: None,
            pending: VecDeque::new(),
            tracker: LinkTracker::new(),
            waiting_since: None,
            resync: false,
            sim: None,
            view: BluetoothView::NoRadio,
            orphans: None,
            cleanup: Cleanup::default(),
        };
        tokio::spawn(actor.run(rx));
        let link = Arc::new(Link { tx, snoop, info });
        links.insert(phone.to_owned(), link.clone());
        link
    }

    /// The handset in `session` lends its radio to `phone` (first call) or
    /// confirms it still does (a heartbeat).
    pub fn radio_heartbeat(&self, phone: &str, session: &ServerSession) {
        let _ = self.link(phone).tx.try_send(Ev::RadioBeat(session.clone()));
    }

    /// The handset in session `session_id` stopped lending its radio.
    pub async fn radio_released(&self, phone: &str, session_id: &str, why: &str) {
        let link = self.link(phone);
        let _ = link
            .tx
            .send(Ev::RadioReleased(session_id.to_owned(), why.to_owned()))
            .await;
    }

    /// A live copy of `phone`'s HCI traffic (as the stack sees it).
    pub fn subscribe(&self, phone: &str) -> broadcast::Receiver<SnoopItem> {
        self.link(phone).snoop.subscribe()
    }

    /// What `phone`'s link is doing (default when nothing ever attached).
    pub fn info(&self, phone: &str) -> LinkInfo {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links
            .get(phone)
            .map(|l| l.info.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default()
    }

    /// Which phone a stack's ChipInfo names: the phone of that name, or the
    /// emulator phone whose AVD has that name.
    async fn resolve(&self, info: &ChipInfo) -> Result<(String, Option<SimPhone>), Status> {
        let device = info.device_info.as_ref().map(|d| d.name.as_str());
        let name = Some(info.name.as_str())
            .filter(|n| !n.is_empty())
            .or(device.filter(|n| !n.is_empty()))
            .ok_or_else(|| {
                Status::invalid_argument(
                    "ChipInfo carries no name: name the stack after its phone \
                     (bumble: android-netsim:HOST:PORT,name=PHONE)",
                )
            })?;
        let phones = self.phones.list().await.map_err(Status::from)?;
        let phone = phones
            .iter()
            .find(|p| p.record.name == name)
            .or_else(|| {
                phones.iter().find(|p| {
                    p.record.backend == Backend::Emulator && p.record.avd.as_deref() == Some(name)
                })
            })
            .ok_or_else(|| {
                let known: Vec<&str> = phones.iter().map(|p| p.record.name.as_str()).collect();
                Status::not_found(format!(
                    "no phone named '{name}' on this host (phones: {}); a Bluetooth stack \
                     attaches under its phone's name",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ))
            })?;
        let name = phone.record.name.clone();
        let sim = match self.phones.connect(&name).await {
            Ok((_, sim)) => sim,
            Err(_) => None,
        };
        Ok((name, sim))
    }

    /// The netsim `PacketStreamer` gRPC service.
    pub fn service(self: &Arc<Self>) -> PacketStreamerServer<NetsimService> {
        PacketStreamerServer::new(NetsimService { bt: self.clone() })
    }

    /// Serves the `PacketStreamer` service on `listener` until `shutdown`.
    ///
    /// # Errors
    /// The transport error that stopped the server.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .add_service(self.service())
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown,
            )
            .await
    }
}

/// The `PacketStreamer` implementation: one stream per attached stack.
#[derive(Debug)]
pub struct NetsimService {
    bt: Arc<Bluetooth>,
}

#[tonic::async_trait]
impl PacketStreamer for NetsimService {
    type StreamPacketsStream = tonic::codegen::BoxStream<PacketResponse>;

    async fn stream_packets(
        &self,
        request: Request<Streaming<PacketRequest>>,
    ) -> Result<Response<Self::StreamPacketsStream>, Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(CHIP_INFO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(
                    "no ChipInfo within 10 s: the first PacketRequest must carry initial_info",
                )
            })??
            .ok_or_else(|| Status::cancelled("stream closed before its ChipInfo"))?;
        let Some(RequestType::InitialInfo(info)) = first.request_type else {
            return Err(Status::invalid_argument(
                "the first PacketRequest must carry initial_info (ChipInfo), not a packet",
            ));
        };
        let kind = info.chip.as_ref().map_or(0, |c| c.kind);
        if kind != ChipKind::Bluetooth as i32 {
            let kind = ChipKind::try_from(kind)
                .map_or_else(|_| format!("{kind}"), |k| k.as_str_name().to_owned());
            return Err(Status::unimplemented(format!(
                "vphone-host relays Bluetooth chips only; chip kind {kind} is not served"
            )));
        }
        let (phone, sim) = self.bt.resolve(&info).await?;
        let who = format!("'{}' from {peer}", chip_name(&info));
        let link = self.bt.link(&phone);
        let (reply, answer) = oneshot::channel();
        let attach = Ev::StackAttach {
            who: who.clone(),
            sim,
            reply,
        };
        link.tx
            .send(attach)
            .await
            .map_err(|_| Status::unavailable("host shutting down"))?;
        let handle = answer
            .await
            .map_err(|_| Status::unavailable("host shutting down"))??;
        tracing::info!(%phone, stack = %who, "Bluetooth stack attached");
        let (id, out_tx) = (handle.id, handle.out_tx);
        let tx = link.tx.clone();
        tokio::spawn(async move {
            loop {
                let Ok(Some(msg)) = inbound.message().await else {
                    break;
                };
                let error = match msg.request_type {
                    Some(RequestType::HciPacket(p)) => match to_h4(&p) {
                        Ok(pkt) => {
                            if tx.send(Ev::StackPacket(id, pkt)).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        Err(e) => format!("HCI packet rejected: {e}"),
                    },
                    Some(RequestType::InitialInfo(_)) => {
                        "initial_info already received on this stream".to_owned()
                    }
                    Some(RequestType::Packet(_)) => {
                        "only HCI packets are relayed on a Bluetooth stream".to_owned()
                    }
                    None => "empty PacketRequest".to_owned(),
                };
                tracing::info!(%phone, %error, "bad packet from the Bluetooth stack");
                let resp = PacketResponse {
                    response_type: Some(ResponseType::Error(error)),
                };
                if out_tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
            tracing::info!(%phone, "Bluetooth stack detached");
            let _ = tx.send(Ev::StackGone(id)).await;
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(handle.out_rx);
        Ok(Response::new(Box::pin(stream)))
    }
}

fn chip_name(info: &ChipInfo) -> &str {
    if info.name.is_empty() {
        info.device_info.as_ref().map_or("", |d| d.name.as_str())
    } else {
        &info.name
    }
}

fn to_h4(p: &HciPacket) -> Result<H4Packet, String> {
    let raw = p.to_h4().map_err(|e| e.to_string())?;
    H4Packet::parse(raw).map_err(|e| e.to_string())
}

fn response(pkt: &H4Packet) -> PacketResponse {
    PacketResponse {
        response_type: Some(ResponseType::HciPacket(HciPacket {
            packet_type: i32::from(pkt.kind().byte()),
            // netsim's `HCIPacket.packet` is the packet without its H4 type byte.
            packet: pkt.clone().into_bytes().slice(1..),
        })),
    }
}

struct Stack {
    id: u64,
    who: String,
    out: mpsc::Sender<Result<PacketResponse, Status>>,
}

struct Radio {
    session: ServerSession,
    generation: u64,
    last_beat: Instant,
    reader: tokio::task::JoinHandle<()>,
}

struct Actor {
    phone: String,
    phones: PhoneManager,
    metrics: Arc<Metrics>,
    cfg: BtConfig,
    self_tx: mpsc::WeakSender<Ev>,
    snoop: broadcast::Sender<SnoopItem>,
    info: Arc<Mutex<LinkInfo>>,
    next_id: u64,
    stack: Option<Stack>,
    radio: Option<Radio>,
    /// Commands waiting for a radio, with when they arrived.
    pending: VecDeque<(Instant, H4Packet)>,
    tracker: LinkTracker,
    /// Since when the oldest outstanding command waits for its reply.
    waiting_since: Option<Instant>,
    /// The radio was lost: only HCI_Reset passes until the stack resets.
    resync: bool,
    sim: Option<SimPhone>,
    view: BluetoothView,
    /// Connections open when the radio was lost, and whose radio it was:
    /// if that handset lends its radio again, they are disconnected there
    /// (the stack that owned them has been told they are gone).
    orphans: Option<(String, Vec<u16>)>,
    /// Replies to that cleanup, kept from the stack.
    cleanup: Cleanup,
}

/// Replies the host expects from its own cleanup commands.
#[derive(Debug, Default)]
struct Cleanup {
    statuses: usize,
    handles: Vec<u16>,
    until: Option<Instant>,
}

impl Cleanup {
    /// True if `pkt` answers the cleanup (and is consumed by it).
    fn takes(&mut self, pkt: &H4Packet) -> bool {
        if self.until.is_none_or(|t| Instant::now() > t) {
            *self = Self::default();
            return false;
        }
        if self.statuses > 0 && answers(pkt) == Some(opcodes::DISCONNECT) {
            self.statuses -= 1;
            return true;
        }
        if let Some(h) = disconnected_handle(pkt)
            && let Some(i) = self.handles.iter().position(|x| *x == h)
        {
            self.handles.remove(i);
            return true;
        }
        false
    }
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<Ev>) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => self.on_event(ev).await,
                    None => break,
                },
                _ = tick.tick() => self.on_tick().await,
            }
        }
    }

    fn info(&self) -> std::sync::MutexGuard<'_, LinkInfo> {
        self.info.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn on_event(&mut self, ev: Ev) {
        match ev {
            Ev::StackAttach { who, sim, reply } => {
                if let Some(s) = &self.stack {
                    let _ = reply.send(Err(Status::already_exists(format!(
                        "phone '{}' already has a Bluetooth stack attached ({}); \
                         one stack per phone: detach it first",
                        self.phone, s.who
                    ))));
                    return;
                }
                self.next_id += 1;
                let (out_tx, out_rx) = mpsc::channel(STACK_QUEUE);
                let handle = StackHandle {
                    id: self.next_id,
                    out_tx: out_tx.clone(),
                    out_rx,
                };
                if reply.send(Ok(handle)).is_ok() {
                    self.stack = Some(Stack {
                        id: self.next_id,
                        who: who.clone(),
                        out: out_tx,
                    });
                    self.tracker.clear();
                    self.pending.clear();
                    self.waiting_since = None;
                    self.resync = false;
                    if sim.is_some() {
                        self.sim = sim;
                    }
                    self.info().stack = Some(who);
                    self.update_view();
                }
            }
            Ev::StackPacket(id, pkt) => {
                if self.stack.as_ref().is_some_and(|s| s.id == id) {
                    self.on_stack_packet(pkt).await;
                }
            }
            Ev::StackGone(id) => {
                if self.stack.as_ref().is_some_and(|s| s.id == id) {
                    // Links the stack left open belong to no one now.
                    let open: Vec<u16> = self.tracker.connections().map(|c| c.handle).collect();
                    if let Some(r) = &self.radio {
                        self.orphans = Some((r.session.handset().to_string(), open));
                        self.clean_up_orphans().await;
                    }
                    self.stack = None;
                    self.tracker.clear();
                    self.pending.clear();
                    self.waiting_since = None;
                    self.info().stack = None;
                    self.update_view();
                }
            }
            Ev::RadioBeat(session) => self.on_beat(session).await,
            Ev::RadioReleased(id, why) => {
                if self.radio.as_ref().is_some_and(|r| r.session.id() == id) {
                    self.lose_radio(&why).await;
                }
            }
            Ev::RadioPacket(generation, pkt) => {
                if self
                    .radio
                    .as_ref()
                    .is_some_and(|r| r.generation == generation)
                {
                    self.on_radio_packet(pkt).await;
                }
            }
            Ev::RadioEnded(generation, why) => {
                if self
                    .radio
                    .as_ref()
                    .is_some_and(|r| r.generation == generation)
                {
                    self.lose_radio(&why).await;
                }
            }
        }
    }

    async fn on_beat(&mut self, session: ServerSession) {
        let now = Instant::now();
        match &mut self.radio {
            Some(r) if r.session.id() == session.id() => {
                r.last_beat = now;
                return;
            }
            Some(_) => self.lose_radio("another handset lent its radio").await,
            None => {}
        }
        let generation = self.radio_generation();
        let reader = {
            let (session, tx) = (session.clone(), self.self_tx.clone());
            tokio::spawn(async move {
                let why = loop {
                    match session.recv_hci().await {
                        Ok(pkt) => {
                            let Some(tx) = tx.upgrade() else { return };
                            if tx.send(Ev::RadioPacket(generation, pkt)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => break format!("the handset's session ended: {e}"),
                    }
                };
                if let Some(tx) = tx.upgrade() {
                    let _ = tx.send(Ev::RadioEnded(generation, why)).await;
                }
            })
        };
        tracing::info!(phone = %self.phone, session = %session.id(), "handset radio attached");
        if self.sim.is_none() {
            // A sim phone shows the radio even before a stack attaches.
            self.sim = self
                .phones
                .connect(&self.phone)
                .await
                .ok()
                .and_then(|(_, s)| s);
        }
        self.info().radio_session = Some(session.id().to_owned());
        self.radio = Some(Radio {
            session,
            generation,
            last_beat: now,
            reader,
        });
        self.update_view();
        self.clean_up_orphans().await;
        // Commands that waited for a radio go out now, in order.
        while let Some((_, pkt)) = self.pending.pop_front() {
            self.send_to_radio(pkt).await;
        }
    }

    /// Disconnects, on a radio lent again by the same handset, the
    /// connections its previous lending left open.
    async fn clean_up_orphans(&mut self) {
        let Some(r) = &self.radio else { return };
        let Some((handset, handles)) = self.orphans.take() else {
            return;
        };
        if handset != r.session.handset().to_string() || handles.is_empty() {
            return;
        }
        tracing::info!(phone = %self.phone, ?handles, "disconnecting links left open by the lost stack session");
        self.cleanup = Cleanup {
            statuses: handles.len(),
            handles: handles.clone(),
            until: Some(Instant::now() + Duration::from_secs(5)),
        };
        let session = r.session.clone();
        for h in handles {
            // Remote User Terminated Connection.
            if session.send_hci(disconnect_command(h, 0x13)).await.is_err() {
                return;
            }
        }
    }

    fn radio_generation(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        if let Some(r) = &self.radio {
            if now.duration_since(r.last_beat) > self.cfg.heartbeat_timeout {
                let why = format!(
                    "no heartbeat from the handset for {} ms",
                    self.cfg.heartbeat_timeout.as_millis()
                );
                self.lose_radio(&why).await;
            } else if self
                .waiting_since
                .is_some_and(|t| now.duration_since(t) > self.cfg.command_deadline)
            {
                let op = self.tracker.outstanding().next();
                let why = format!(
                    "the radio did not answer command {} within {} ms",
                    op.map_or_else(|| "?".to_owned(), |o| format!("{:#06x}", o.0)),
                    self.cfg.command_deadline.as_millis()
                );
                self.lose_radio(&why).await;
            }
        }
        let expired = self
            .pending
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > self.cfg.command_deadline);
        if expired {
            tracing::info!(
                phone = %self.phone,
                commands = self.pending.len(),
                "no handset radio attached: refusing the stack's commands"
            );
            while let Some((_, pkt)) = self.pending.pop_front() {
                self.answer_locally(&pkt).await;
            }
        }
    }

    async fn on_stack_packet(&mut self, pkt: H4Packet) {
        self.snoop(Direction::HostToController, &pkt);
        if pkt.kind() == PacketType::Command {
            let op = Command::new(&pkt).map(|c| c.opcode()).ok();
            if op == Some(opcodes::RESET) {
                self.resync = false;
            } else if self.resync {
                // The controller behind the stack changed: it must reset first.
                self.answer_locally(&pkt).await;
                return;
            }
            if self.radio.is_some() {
                self.send_to_radio(pkt).await;
            } else if self.pending.len() < MAX_PENDING {
                self.pending.push_back((Instant::now(), pkt));
            } else {
                self.answer_locally(&pkt).await;
            }
        } else if self.radio.is_some() && !self.resync {
            self.send_to_radio(pkt).await;
        } else {
            self.info().dropped += 1;
        }
    }

    /// Answers a command the radio will never see with Hardware Failure.
    async fn answer_locally(&mut self, pkt: &H4Packet) {
        if let Ok(cmd) = Command::new(pkt) {
            self.info().answered_locally += 1;
            let ev = refusal(cmd.opcode(), status::HARDWARE_FAILURE);
            self.send_to_stack(&ev).await;
        }
    }

    async fn send_to_radio(&mut self, pkt: H4Packet) {
        let Some(r) = &self.radio else { return };
        self.tracker.on_host_packet(&pkt);
        if pkt.kind() == PacketType::Command && self.waiting_since.is_none() {
            self.waiting_since = Some(Instant::now());
        }
        let session = r.session.clone();
        match session.send_hci(pkt).await {
            Ok(()) => {
                self.info().to_radio += 1;
                self.metrics
                    .hci_packets
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                self.lose_radio(&format!("the handset's session ended: {e}"))
                    .await
            }
        }
    }

    async fn on_radio_packet(&mut self, pkt: H4Packet) {
        if self.cleanup.takes(&pkt) {
            return;
        }
        if self.stack.is_none() || self.resync {
            self.info().dropped += 1;
            return;
        }
        let change = self.tracker.on_controller_packet(&pkt);
        self.waiting_since = if self.tracker.outstanding().next().is_some() {
            // Another command is still outstanding: its clock starts now.
            self.waiting_since.map(|_| Instant::now())
        } else {
            None
        };
        self.info().to_stack += 1;
        self.metrics
            .hci_packets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.send_to_stack(&pkt).await;
        if change.is_some() {
            if let Some(LinkChange::Connected(c)) = &change {
                tracing::info!(phone = %self.phone, peer = %c.address_string(), "Bluetooth connection");
            }
            self.update_view();
        }
    }

    async fn send_to_stack(&mut self, pkt: &H4Packet) {
        let Some(s) = &self.stack else { return };
        self.snoop(Direction::ControllerToHost, pkt);
        if s.out.send(Ok(response(pkt))).await.is_err() {
            // The stream's reader reports StackGone; nothing else to do.
            tracing::debug!(phone = %self.phone, "stack stream closed");
        }
    }

    async fn lose_radio(&mut self, why: &str) {
        let Some(r) = self.radio.take() else { return };
        r.reader.abort();
        tracing::info!(phone = %self.phone, session = %r.session.id(), %why, "handset radio lost");
        {
            let mut info = self.info();
            info.radio_session = None;
            info.radio_losses += 1;
        }
        self.waiting_since = None;
        let open: Vec<u16> = self.tracker.connections().map(|c| c.handle).collect();
        self.orphans = Some((r.session.handset().to_string(), open));
        if self.stack.is_some() {
            for ev in self.tracker.radio_lost() {
                self.send_to_stack(&ev).await;
            }
            self.resync = true;
        } else {
            self.tracker.clear();
        }
        self.update_view();
    }

    fn snoop(&self, direction: Direction, pkt: &H4Packet) {
        if self.snoop.receiver_count() > 0 {
            let _ = self.snoop.send(SnoopItem {
                direction,
                packet: pkt.clone(),
                unix_us: crate::unix_ns() / 1000,
            });
        }
    }

    fn update_view(&mut self) {
        let view = match (&self.radio, self.tracker.connections().next()) {
            (None, _) => BluetoothView::NoRadio,
            (Some(_), None) => BluetoothView::RadioAttached,
            (Some(_), Some(c)) => BluetoothView::Connected {
                peer_name: self
                    .tracker
                    .name_of(&c.address)
                    .unwrap_or("unknown device")
                    .to_owned(),
                address: c.address_string(),
                encrypted: c.encrypted,
            },
        };
        if view != self.view {
            self.view = view.clone();
            if let Some(sim) = &self.sim {
                sim.set_bluetooth(view);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_carry_the_packet_without_its_type_byte() {
        let pkt = H4Packet::parse(vec![0x04, 0x0E, 0x04, 0x01, 0x03, 0x0C, 0x00]).unwrap();
        let r = response(&pkt);
        let Some(ResponseType::HciPacket(p)) = r.response_type else {
            panic!()
        };
        assert_eq!(p.packet_type, 4);
        assert_eq!(&p.packet[..], &[0x0E, 0x04, 0x01, 0x03, 0x0C, 0x00]);
        assert_eq!(to_h4(&p).unwrap().as_bytes(), pkt.as_bytes());
    }

    #[test]
    fn malformed_stack_packets_are_rejected_with_a_reason() {
        let bad = HciPacket {
            packet_type: 1,
            packet: vec![0x03, 0x0C, 0x05, 0x00].into(),
        };
        assert!(to_h4(&bad).is_err());
        let unknown = HciPacket {
            packet_type: 9,
            packet: vec![0x00].into(),
        };
        assert!(to_h4(&unknown).unwrap_err().contains("packet type"));
    }
}
