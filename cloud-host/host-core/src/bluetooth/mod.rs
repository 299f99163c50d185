//! Bluetooth passthrough, host side: the netsim `PacketStreamer` server that
//! phone Bluetooth stacks attach to (the Android Emulator's
//! `-packet-streamer-endpoint`, bumble's `android-netsim` transport), and one
//! link actor per phone that relays HCI between that stack and the radio a
//! handset lends over its QUIC session.
//!
//! The actor never lets the stack wait: with no radio, a command waits at
//! most [`LinkTiming::command_deadline`] for one to attach and is then refused
//! with Hardware Failure; when the radio is lost (the handset stops its
//! heartbeat, its session ends, or a command stays unanswered past the
//! deadline) the stack gets a refusal for every outstanding command, a
//! Disconnection Complete for every open connection and a Hardware Error
//! ([`bt_raw::link::LinkTracker::radio_lost`]). After that only an HCI_Reset
//! goes through until the stack has re-initialised, so no stale controller
//! state reaches it.
//!
//! The rules live in [`core::LinkCore`] (sans-IO, unit-tested with injected
//! time); this module is its driver: the netsim server, the radio's reader
//! task and the channels. HCI parsing lives in `bt-raw`.

mod attach;
pub mod core;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bt_raw::H4Packet;
use bt_raw::btsnoop::Direction;
use device_bridge::ServerSession;
use sensor_proto::netsim::common::ChipKind;
use sensor_proto::netsim::packet::packet_request::RequestType;
use sensor_proto::netsim::packet::packet_response::ResponseType;
use sensor_proto::netsim::packet::packet_streamer_server::{PacketStreamer, PacketStreamerServer};
use sensor_proto::netsim::packet::{HciPacket, PacketRequest, PacketResponse};
use sensor_proto::netsim::startup::ChipInfo;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::Stream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::Metrics;
use crate::phones::PhoneManager;
use crate::registry::Backend;
use crate::status::StatusHandle;

use self::attach::Source;
pub use self::attach::{AttachPoints, DEFAULT_ATTACH_IP, check_attach_ip, peer_uid};
use self::core::{Action, LinkCore};
pub use self::core::{LinkInfo, LinkTiming, RadioStatus};

/// Packets queued towards a stack.
const STACK_QUEUE: usize = 1024;
/// How long the link waits for room in a stack's full queue before it
/// drops the stack: a stack that stops reading must never hold its phone.
pub const STACK_STALL_LIMIT: Duration = Duration::from_millis(500);
/// Control events queued towards a link (heartbeats, attaches); they are
/// handled before data, so the radio's traffic never delays them.
const CONTROL_QUEUE: usize = 64;
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

enum Ev {
    StackAttach {
        who: String,
        reply: oneshot::Sender<Result<StackHandle, Status>>,
    },
    StackPacket(u64, H4Packet),
    StackGone(u64),
    RadioBeat(ServerSession),
    RadioReleased(String, String),
    RadioPacket(u64, H4Packet),
    RadioEnded(u64, String),
}

/// A stack's handle on its link: its id, the packets for it, and the
/// token the link cancels when it drops the stack.
struct StackHandle {
    id: u64,
    out_tx: mpsc::Sender<Result<PacketResponse, Status>>,
    out_rx: mpsc::Receiver<Result<PacketResponse, Status>>,
    dropped: CancellationToken,
}

/// The link's side of an attached stack.
struct StackOut {
    id: u64,
    tx: mpsc::Sender<Result<PacketResponse, Status>>,
    dropped: CancellationToken,
}

/// What a stack reads: its packets until the link drops it, then the
/// reason as the stream's status.
struct Outbound {
    packets: mpsc::Receiver<Result<PacketResponse, Status>>,
    dropped: Pin<Box<WaitForCancellationFutureOwned>>,
    done: bool,
}

impl Stream for Outbound {
    type Item = Result<PacketResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.dropped.as_mut().poll(cx).is_ready() {
            self.done = true;
            return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                "the Bluetooth stack stopped reading: its {STACK_QUEUE}-packet queue stayed \
                 full for {STACK_STALL_LIMIT:?}, so the link dropped it; attach again"
            )))));
        }
        self.packets.poll_recv(cx)
    }
}

#[derive(Debug)]
struct Link {
    /// Data (packets, in order with the attach/detach of their ends).
    tx: mpsc::Sender<Ev>,
    /// Control: heartbeats and attaches, handled before data.
    ctl: mpsc::Sender<Ev>,
    snoop: broadcast::Sender<SnoopItem>,
    info: Arc<Mutex<LinkInfo>>,
}

/// The Bluetooth side of the host: every phone's link and the netsim server.
#[derive(Debug)]
pub struct Bluetooth {
    phones: PhoneManager,
    metrics: Arc<Metrics>,
    cfg: LinkTiming,
    links: Mutex<HashMap<String, Arc<Link>>>,
}

impl Bluetooth {
    /// The Bluetooth side over these phones; stacks attaching through
    /// `attach` reach it from now on.
    pub fn new(
        phones: PhoneManager,
        metrics: Arc<Metrics>,
        cfg: LinkTiming,
        attach: &AttachPoints,
    ) -> Arc<Self> {
        let bt = Arc::new(Self {
            phones,
            metrics,
            cfg,
            links: Mutex::new(HashMap::new()),
        });
        attach.join(&bt);
        bt
    }

    fn link(&self, phone: &str) -> Arc<Link> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = links.get(phone) {
            return l.clone();
        }
        let (tx, rx) = mpsc::channel(256);
        let (ctl, ctl_rx) = mpsc::channel(CONTROL_QUEUE);
        let (snoop, _) = broadcast::channel(SNOOP_BUFFER);
        let info = Arc::new(Mutex::new(LinkInfo::default()));
        let actor = Actor {
            phone: phone.to_owned(),
            metrics: self.metrics.clone(),
            self_tx: tx.downgrade(),
            snoop: snoop.clone(),
            info: info.clone(),
            core: LinkCore::new(self.cfg),
            stack: None,
            radio: None,
            lending: None,
            status: self.phones.status(phone),
        };
        tokio::spawn(actor.run(ctl_rx, rx));
        let link = Arc::new(Link {
            tx,
            ctl,
            snoop,
            info,
        });
        links.insert(phone.to_owned(), link.clone());
        link
    }

    /// The handset in `session` lends its radio to `phone` (first call) or
    /// confirms it still does (a heartbeat).
    ///
    /// Beats travel on the link's control queue, ahead of HCI data, so a
    /// radio busy with traffic is never taken for a lost one. Should that
    /// queue be full (the link is stuck), the beat is dropped: the next one
    /// follows within the heartbeat interval.
    pub fn radio_heartbeat(&self, phone: &str, session: &ServerSession) {
        let _ = self
            .link(phone)
            .ctl
            .try_send(Ev::RadioBeat(session.clone()));
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
    async fn resolve(&self, info: &ChipInfo) -> Result<String, Status> {
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
            // Never list the phones: a refused client learns nothing about
            // the others.
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no phone named '{name}' on this host; a Bluetooth stack attaches under \
                     its phone's name"
                ))
            })?;
        Ok(phone.record.name.clone())
    }

    /// The netsim `PacketStreamer` gRPC service of the development
    /// listener, where a stack's `ChipInfo` names its phone (any process of
    /// the host's user may attach as any phone).
    pub fn development_service(self: &Arc<Self>) -> PacketStreamerServer<NetsimService> {
        PacketStreamerServer::new(NetsimService {
            source: Source::Development(self.clone()),
        })
    }

    /// Serves the development `PacketStreamer` listener (see
    /// [`check_attach_ip`]) on `listener` until `shutdown`.
    ///
    /// # Errors
    /// The transport error that stopped the server.
    pub async fn serve_development(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .add_service(self.development_service())
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
    source: Source,
}

impl NetsimService {
    /// The Bluetooth side and the phone this stream may attach to.
    async fn admit(
        &self,
        conn: Option<(SocketAddr, SocketAddr)>,
        info: &ChipInfo,
    ) -> Result<(Arc<Bluetooth>, String), Status> {
        let refuse = |phone: &str, uid: Option<u32>| {
            tracing::warn!(
                phone,
                peer_uid = ?uid,
                "Bluetooth attach refused: the peer does not run as the host's user"
            );
            Status::permission_denied("only the host's own phone processes may attach here")
        };
        let host_uid = rustix::process::geteuid().as_raw();
        let uid = conn.and_then(|(local, peer)| peer_uid(local, peer));
        match &self.source {
            Source::Development(bt) => {
                if uid != Some(host_uid) {
                    return Err(refuse("(development listener)", uid));
                }
                Ok((bt.clone(), bt.resolve(info).await?))
            }
            Source::AttachPoint { phone, points } => {
                match conn {
                    Some((local, peer)) => points
                        .admits(local, peer)
                        .map_err(|uid| refuse(phone, uid))?,
                    None => return Err(refuse(phone, None)),
                }
                let bt = points
                    .bluetooth()
                    .ok_or_else(|| Status::unavailable("the host is starting or stopping"))?;
                Ok((bt, phone.clone()))
            }
        }
    }
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
        let conn = request.local_addr().zip(request.remote_addr());
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
        let (bt, phone) = self.admit(conn, &info).await?;
        // The name is the peer's claim: shown escaped and short, never trusted.
        let claimed: String = chip_name(&info).chars().take(64).collect();
        let who = format!("{claimed:?} from {peer}");
        let link = bt.link(&phone);
        let (reply, answer) = oneshot::channel();
        let attach = Ev::StackAttach {
            who: who.clone(),
            reply,
        };
        link.ctl
            .send(attach)
            .await
            .map_err(|_| Status::unavailable("host shutting down"))?;
        let handle = answer
            .await
            .map_err(|_| Status::unavailable("host shutting down"))??;
        tracing::info!(%phone, stack = %who, "Bluetooth stack attached");
        let (id, out_tx, dropped) = (handle.id, handle.out_tx, handle.dropped);
        let tx = link.tx.clone();
        let outbound = Outbound {
            packets: handle.out_rx,
            dropped: Box::pin(dropped.clone().cancelled_owned()),
            done: false,
        };
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    msg = inbound.message() => msg,
                    () = dropped.cancelled() => break,
                };
                let Ok(Some(msg)) = msg else {
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
        Ok(Response::new(Box::pin(outbound)))
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

/// The attached radio's session and its reader task.
struct Radio {
    session: ServerSession,
    generation: u64,
    reader: tokio::task::JoinHandle<()>,
}

/// The driver of one phone's [`LinkCore`]: it owns the channels, the
/// stack's outbound queue, the radio's session and reader, and carries out
/// the core's actions.
struct Actor {
    phone: String,
    metrics: Arc<Metrics>,
    self_tx: mpsc::WeakSender<Ev>,
    snoop: broadcast::Sender<SnoopItem>,
    info: Arc<Mutex<LinkInfo>>,
    core: LinkCore,
    stack: Option<StackOut>,
    radio: Option<Radio>,
    /// The session whose heartbeat is being handled.
    lending: Option<ServerSession>,
    /// Where the phone shows the link's status.
    status: StatusHandle,
}

impl Actor {
    async fn run(mut self, mut ctl: mpsc::Receiver<Ev>, mut rx: mpsc::Receiver<Ev>) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Control first, then the clock, then data: a flood of packets
            // never delays a heartbeat or a deadline.
            tokio::select! {
                biased;
                ev = ctl.recv() => match ev {
                    Some(ev) => self.on_event(ev).await,
                    None => break,
                },
                _ = tick.tick() => self.core.tick(Instant::now()),
                ev = rx.recv() => match ev {
                    Some(ev) => self.on_event(ev).await,
                    None => break,
                },
            }
            self.carry_out().await;
            self.lending = None;
        }
    }

    async fn on_event(&mut self, ev: Ev) {
        let now = Instant::now();
        match ev {
            Ev::StackAttach { who, reply } => match self.core.stack_attached(&who) {
                Err(e) => {
                    let _ = reply.send(Err(Status::already_exists(format!(
                        "phone '{}' already has a Bluetooth stack attached ({}); \
                         one stack per phone: detach it first",
                        self.phone, e.who
                    ))));
                }
                Ok(id) => {
                    let (out_tx, out_rx) = mpsc::channel(STACK_QUEUE);
                    let dropped = CancellationToken::new();
                    let handle = StackHandle {
                        id,
                        out_tx: out_tx.clone(),
                        out_rx,
                        dropped: dropped.clone(),
                    };
                    if reply.send(Ok(handle)).is_ok() {
                        self.stack = Some(StackOut {
                            id,
                            tx: out_tx,
                            dropped,
                        });
                    } else {
                        // The attaching call went away: undo the attach.
                        self.core.stack_abandoned(id);
                    }
                }
            },
            Ev::StackPacket(id, pkt) => self.core.stack_packet(id, pkt, now),
            Ev::StackGone(id) => {
                if self.core.is_stack(id) {
                    self.stack = None;
                }
                self.core.stack_gone(id, now);
            }
            Ev::RadioBeat(session) => {
                let handset = session.handset().to_string();
                let id = session.id().to_owned();
                // Taken by the `AttachRadio` action if this beat attaches.
                self.lending = Some(session);
                self.core.radio_beat(&id, &handset, now);
            }
            Ev::RadioReleased(id, why) => self.core.radio_released(&id, &why),
            Ev::RadioPacket(generation, pkt) => self.core.radio_packet(generation, pkt, now),
            Ev::RadioEnded(generation, why) => self.core.radio_failed(generation, &why),
        }
    }

    /// Starts reading the radio's packets (the core's actions that follow,
    /// e.g. commands that waited for a radio, go to it).
    async fn attach_radio(&mut self, session: ServerSession, generation: u64) {
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
        if let Some(old) = self.radio.replace(Radio {
            session,
            generation,
            reader,
        }) {
            old.reader.abort();
        }
    }

    /// Carries out everything the core decided, in order.
    async fn carry_out(&mut self) {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::ToStack { packet, relayed } => {
                    if relayed {
                        self.metrics.hci_packets.inc();
                    }
                    self.send_to_stack(&packet).await;
                }
                Action::ToRadio {
                    generation,
                    packet,
                    counted,
                } => self.send_to_radio(generation, packet, counted).await,
                Action::Snoop(direction, packet) => self.snoop(direction, &packet),
                Action::AttachRadio { generation } => {
                    if let Some(session) = self.lending.take() {
                        self.attach_radio(session, generation).await;
                    }
                }
                Action::DropRadio { generation, why } => {
                    if let Some(r) = self.radio.take_if(|r| r.generation == generation) {
                        r.reader.abort();
                        tracing::info!(phone = %self.phone, session = %r.session.id(), %why, "handset radio lost");
                    }
                }
                Action::Status(status) => self.status.set_radio(status),
            }
        }
        let info = self.core.info().clone();
        *self.info.lock().unwrap_or_else(|p| p.into_inner()) = info;
    }

    async fn send_to_radio(&mut self, generation: u64, packet: H4Packet, counted: bool) {
        let Some(r) = self.radio.as_ref().filter(|r| r.generation == generation) else {
            return;
        };
        let session = r.session.clone();
        // A handset that stops reading must not hold the link either: past
        // the command deadline its radio counts as lost.
        let limit = self.core.timing().command_deadline;
        let sent = match tokio::time::timeout(limit, session.send_hci(packet)).await {
            Ok(sent) => sent.map_err(|e| format!("the handset's session ended: {e}")),
            Err(_) => Err(format!(
                "the handset took no HCI packet for {} ms",
                limit.as_millis()
            )),
        };
        match sent {
            Ok(()) if counted => {
                self.core.radio_sent(generation);
                self.metrics.hci_packets.inc();
            }
            Ok(()) => {}
            Err(why) if counted => self.core.radio_failed(generation, &why),
            // A failed cleanup command: the reader reports the session's end.
            Err(_) => {}
        }
    }

    /// Queues `pkt` for the stack. A stack whose queue stays full for
    /// [`STACK_STALL_LIMIT`] has stopped reading: it is dropped (counted,
    /// its stream ends with RESOURCE_EXHAUSTED) so it never holds the phone.
    async fn send_to_stack(&mut self, pkt: &H4Packet) {
        let Some(out) = &self.stack else { return };
        let tx = out.tx.clone();
        self.snoop(Direction::ControllerToHost, pkt);
        let msg = match tx.try_send(Ok(response(pkt))) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                // The stream's reader reports StackGone; nothing else to do.
                tracing::debug!(phone = %self.phone, "stack stream closed");
                return;
            }
            Err(mpsc::error::TrySendError::Full(msg)) => msg,
        };
        if let Ok(sent) = tokio::time::timeout(STACK_STALL_LIMIT, tx.send(msg)).await {
            if sent.is_err() {
                tracing::debug!(phone = %self.phone, "stack stream closed");
            }
            return;
        }
        let Some(out) = self.stack.take() else { return };
        out.dropped.cancel();
        self.metrics.bt_stacks_dropped.inc();
        tracing::warn!(
            phone = %self.phone,
            queued = STACK_QUEUE,
            limit = ?STACK_STALL_LIMIT,
            "Bluetooth stack dropped: it stopped reading"
        );
        self.core.stack_stalled(out.id, Instant::now());
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
