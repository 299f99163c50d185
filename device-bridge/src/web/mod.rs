//! Browser handsets: the same session over WebTransport (HTTP/3, ALPN
//! `h3`) on the bridge's UDP port, beside the native `vphone/1`.
//!
//! A browser cannot present a client certificate on WebTransport, so the
//! page proves its identity inside the session: it sends its public key
//! (an ECDSA P-256 key WebCrypto made non-extractable and keeps in
//! IndexedDB) in `hello`, the host answers with a random challenge, and the
//! page signs it. The handset's [`Fingerprint`] is the
//! SHA-256 of that key's SubjectPublicKeyInfo, exactly as for a native
//! handset's certificate, and the host's [`Authorizer`](crate::Authorizer)
//! decides with the same rules (enrollment token on the first visit,
//! revocation, phone assignment). The admitted session is a
//! [`ServerSession`](crate::ServerSession) like any other: the host app
//! cannot tell the difference except through
//! [`ServerSession::is_browser`](crate::ServerSession::is_browser).
//!
//! The browser trusts the host through `serverCertificateHashes`
//! ([`certs`]): short-lived certificates whose hashes the enrollment link
//! carries and the host signs with its long-term key. What the page and the
//! host say is in [`protocol`]. A browser session plays the phone's sound
//! but has no microphone, no clipboard, no radio and no resume: a page that
//! loses its connection starts a new session.

pub mod certs;
pub mod protocol;
pub(crate) mod serve;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use sensor_proto::bridge::{
    CloseReason, ControlMessage, Hello, InputMessage, SensorSample, VideoFrameHeader,
    VideoStreamHeader, Welcome, control_message,
};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::watch;

pub use self::certs::{PublishedCert, WebCertificates, signed_message};

/// What the bridge needs to serve browser handsets.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WebSettings {
    /// The short-lived WebTransport certificates.
    pub certs: Arc<WebCertificates>,
    /// The origins the host's page is served from (`https://phones.example.com:4433`):
    /// a WebTransport session whose `Origin` is not one of them is refused
    /// before any work, so no other web site can open sessions through its
    /// visitors' browsers.
    pub origins: Vec<String>,
}

impl WebSettings {
    /// Settings for these certificates and page origins.
    #[must_use]
    pub fn new(certs: Arc<WebCertificates>, origins: Vec<String>) -> Self {
        Self { certs, origins }
    }
}
pub(crate) use self::serve::serve_web;

use crate::BridgeError;
use crate::identity::Fingerprint;
use crate::server::PathInfo;
use crate::session::{
    Inbox, SessionEnd, SessionStats, bump, end_once, ended_error, get, lock, wait_end,
};

use self::protocol::{Down, WebActiveSensor, sensor_name};

type WtSession = h3_webtransport::server::WebTransportSession<h3_quinn::Connection, Bytes>;
type WtSend = h3_webtransport::stream::SendStream<h3_quinn::SendStream<Bytes>, Bytes>;
type WtDatagrams = h3_datagram::datagram_handler::DatagramSender<
    <h3_quinn::Connection as h3_datagram::quic_traits::DatagramConnectionExt<Bytes>>::SendDatagramHandler,
    Bytes,
>;

/// The path of the WebTransport session on the handsets' UDP port.
pub const WT_PATH: &str = "/wt";

/// Capacity of each inbound queue.
pub(crate) const INBOX: usize = 1024;

#[derive(Debug, Default)]
struct Counters {
    control_sent: AtomicU64,
    control_received: AtomicU64,
    sensors_received: AtomicU64,
    sensors_dropped: AtomicU64,
    input_received: AtomicU64,
    frames_sent: AtomicU64,
    gops_superseded: AtomicU64,
    audio_sent: AtomicU64,
    audio_dropped: AtomicU64,
}

/// The state of one browser session, shared by its handle and its tasks.
pub(crate) struct WebCore {
    id: String,
    hello: Hello,
    welcome: Welcome,
    handset: Fingerprint,
    conn: quinn::Connection,
    wt: WtSession,
    control_tx: tokio::sync::Mutex<WtSend>,
    control_in: Inbox<ControlMessage>,
    sensors_in: Inbox<SensorSample>,
    input_in: Inbox<InputMessage>,
    ended: watch::Sender<Option<SessionEnd>>,
    counters: Counters,
    stale: AtomicU64,
    frame_seq: AtomicU64,
    gop_seq: AtomicU64,
    current_gop: Mutex<Option<Arc<GopSlot>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    audio_out: Mutex<WtDatagrams>,
}

impl std::fmt::Debug for WebCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebCore")
            .field("id", &self.id)
            .field("handset", &self.handset)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct GopSlot {
    gop_id: u64,
    superseded: AtomicBool,
}

impl WebCore {
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn handset(&self) -> Fingerprint {
        self.handset
    }

    pub(crate) fn hello(&self) -> &Hello {
        &self.hello
    }

    pub(crate) fn welcome(&self) -> Welcome {
        self.welcome.clone()
    }

    pub(crate) fn remote_address(&self) -> Option<SocketAddr> {
        (!self.is_ended()).then(|| self.conn.remote_address())
    }

    pub(crate) fn is_connected(&self) -> bool {
        // Ended means gone for a browser: there is no resume.
        !self.is_ended()
    }

    pub(crate) fn path(&self) -> Option<PathInfo> {
        if self.is_ended() {
            return None;
        }
        Some(PathInfo::of(&self.conn))
    }

    pub(crate) fn stats(&self) -> SessionStats {
        let c = &self.counters;
        SessionStats {
            connections: 1,
            control_sent: get(&c.control_sent),
            control_received: get(&c.control_received),
            sensor_samples_received: get(&c.sensors_received),
            sensor_samples_stale: get(&self.stale),
            sensor_samples_dropped: get(&c.sensors_dropped),
            input_received: get(&c.input_received),
            video_frames_sent: get(&c.frames_sent),
            video_gops_superseded: get(&c.gops_superseded),
            audio_frames_sent: get(&c.audio_sent),
            audio_frames_dropped: get(&c.audio_dropped),
            rtt_us: u64::try_from(self.conn.rtt().as_micros()).unwrap_or(u64::MAX),
            ..SessionStats::default()
        }
    }

    fn is_ended(&self) -> bool {
        self.ended.borrow().is_some()
    }

    fn ended_error(&self) -> BridgeError {
        ended_error(&self.ended)
    }

    pub(crate) async fn ended(&self) -> SessionEnd {
        wait_end(&self.ended).await
    }

    /// Ends the session once; closes the connection with the code.
    pub(crate) fn end(&self, end: SessionEnd) {
        if end_once(&self.ended, &end) {
            tracing::info!(session = %self.id, end = %end, "browser session ended");
            self.conn.close(
                crate::wire::code_varint(end.code),
                crate::wire::reason_bytes(&end.reason),
            );
            for t in lock(&self.tasks).drain(..) {
                t.abort();
            }
        }
    }

    async fn recv_from<T>(&self, q: &Inbox<T>) -> Result<T, BridgeError> {
        q.recv(&self.ended, || self.ended_error()).await
    }

    pub(crate) async fn recv_control(&self) -> Result<ControlMessage, BridgeError> {
        self.recv_from(&self.control_in).await
    }

    pub(crate) async fn recv_sensor(&self) -> Result<SensorSample, BridgeError> {
        self.recv_from(&self.sensors_in).await
    }

    pub(crate) async fn recv_input(&self) -> Result<InputMessage, BridgeError> {
        self.recv_from(&self.input_in).await
    }

    /// Waits until the session ends (what the paths a browser does not
    /// have return).
    pub(crate) async fn never<T>(&self) -> Result<T, BridgeError> {
        let _ = self.ended().await;
        Err(self.ended_error())
    }

    async fn send_down(&self, msg: &Down) -> Result<(), BridgeError> {
        if self.is_ended() {
            return Err(self.ended_error());
        }
        let mut line = serde_json::to_vec(msg)
            .map_err(|e| BridgeError::InvalidArgument(format!("control message: {e}")))?;
        line.push(b'\n');
        let mut tx = self.control_tx.lock().await;
        tx.write_all(&line)
            .await
            .map_err(|_| BridgeError::Disconnected)?;
        bump(&self.counters.control_sent);
        Ok(())
    }

    /// Sends what the browser mapping has of `msg`; the rest (radio, sound,
    /// clipboard, stats) a browser does not take and is skipped.
    pub(crate) async fn send_control(&self, msg: control_message::Msg) -> Result<(), BridgeError> {
        use control_message::Msg;
        let down = match msg {
            Msg::Hello(_) | Msg::Welcome(_) | Msg::Close(_) | Msg::Pong(_) => {
                return Err(BridgeError::InvalidArgument(
                    "Hello, Welcome, Close and Pong are sent by the bridge itself".into(),
                ));
            }
            Msg::ActiveSensors(a) => Down::Active {
                sensors: a
                    .sensors
                    .iter()
                    .filter_map(|s| {
                        let kind = sensor_proto::bridge::SensorKind::try_from(s.kind).ok()?;
                        Some(WebActiveSensor {
                            kind: sensor_name(kind),
                            rate_hz: s.rate_hz,
                        })
                    })
                    .collect(),
                location: a.location_wanted,
            },
            Msg::VideoConfig(v) => Down::Video {
                codec: "avc1.42E01F".into(),
                width: v.width,
                height: v.height,
                max_fps: v.max_fps,
            },
            _ => return Ok(()),
        };
        self.send_down(&down).await
    }

    pub(crate) async fn close(&self, reason: CloseReason, message: &str) {
        if self.is_ended() {
            return;
        }
        let code = reason.app_error_code();
        let down = Down::Closed {
            code: protocol::code_name(code),
            message: message.to_owned(),
        };
        let _ = tokio::time::timeout(Duration::from_millis(200), self.send_down(&down)).await;
        // Give the page a moment to read it and close on its own.
        let _ = tokio::time::timeout(Duration::from_millis(300), self.conn.closed()).await;
        self.end(SessionEnd {
            code,
            reason: message.to_owned(),
            by_peer: false,
        });
    }

    /// One frame of the phone's sound as a datagram (latest sound only:
    /// dropped and counted when the send buffer is full).
    pub(crate) fn send_audio(
        &self,
        frame: sensor_proto::bridge::AudioFrame,
    ) -> Result<(), BridgeError> {
        if self.is_ended() {
            return Err(self.ended_error());
        }
        if !self.hello.audio.as_ref().is_some_and(|a| a.playback) {
            return Err(BridgeError::InvalidArgument(
                "the page did not ask for sound".into(),
            ));
        }
        let mut b = BytesMut::with_capacity(17 + frame.payload.len());
        b.put_u8(protocol::AUDIO_TAG);
        b.put_u64(frame.seq);
        b.put_u64(frame.capture_time_us);
        b.put_slice(&frame.payload);
        match lock(&self.audio_out).send_datagram(b.freeze()) {
            Ok(()) => bump(&self.counters.audio_sent),
            Err(_) => bump(&self.counters.audio_dropped),
        }
        Ok(())
    }

    pub(crate) async fn start_gop(
        self: &Arc<Self>,
        header: VideoStreamHeader,
    ) -> Result<WebGop, BridgeError> {
        if self.is_ended() {
            return Err(self.ended_error());
        }
        let gop_id = self.gop_seq.fetch_add(1, Ordering::SeqCst) + 1;
        let slot = Arc::new(GopSlot {
            gop_id,
            superseded: AtomicBool::new(false),
        });
        if let Some(old) = lock(&self.current_gop).replace(slot.clone()) {
            old.superseded.store(true, Ordering::SeqCst);
            bump(&self.counters.gops_superseded);
        }
        let mut stream = self
            .wt
            .open_uni(self.wt.session_id())
            .await
            .map_err(|_| BridgeError::Disconnected)?;
        let mut head = BytesMut::with_capacity(protocol::VIDEO_STREAM_HEADER);
        head.put_slice(protocol::VIDEO_MAGIC);
        head.put_u32(header.width);
        head.put_u32(header.height);
        head.put_u64(gop_id);
        stream
            .write_all(&head)
            .await
            .map_err(|_| BridgeError::Disconnected)?;
        Ok(WebGop {
            core: self.clone(),
            slot,
            stream: Some(stream),
            frames: 0,
        })
    }
}

/// One GOP on a browser session's unidirectional stream.
pub(crate) struct WebGop {
    core: Arc<WebCore>,
    slot: Arc<GopSlot>,
    stream: Option<WtSend>,
    frames: u64,
}

impl std::fmt::Debug for WebGop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebGop")
            .field("gop_id", &self.slot.gop_id)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl WebGop {
    pub(crate) fn gop_id(&self) -> u64 {
        self.slot.gop_id
    }

    pub(crate) async fn write_frame(
        &mut self,
        header: VideoFrameHeader,
        payload: Bytes,
    ) -> Result<u64, BridgeError> {
        use h3::quic::SendStream as _;
        let superseded = BridgeError::GopSuperseded {
            gop_id: self.slot.gop_id,
        };
        if self.slot.superseded.load(Ordering::SeqCst) {
            if let Some(mut s) = self.stream.take() {
                s.reset(0);
            }
            return Err(superseded);
        }
        if self.frames == 0 && !header.keyframe {
            return Err(BridgeError::InvalidArgument(
                "the first frame of a GOP must be a keyframe".into(),
            ));
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(superseded);
        };
        let seq = self.core.frame_seq.fetch_add(1, Ordering::SeqCst) + 1;
        let len = u32::try_from(1 + 8 + 8 + payload.len())
            .map_err(|_| BridgeError::InvalidArgument("video payload too large".into()))?;
        let mut head = BytesMut::with_capacity(21);
        head.put_u32(len);
        head.put_u8(u8::from(header.keyframe));
        head.put_u64(header.capture_time_us);
        head.put_u64(seq);
        let r = async {
            stream.write_all(&head).await?;
            stream.write_all(&payload).await
        }
        .await;
        if r.is_err() {
            return Err(if self.slot.superseded.load(Ordering::SeqCst) {
                superseded
            } else {
                BridgeError::Disconnected
            });
        }
        self.frames += 1;
        bump(&self.core.counters.frames_sent);
        Ok(seq)
    }

    pub(crate) fn finish(mut self) -> Result<(), BridgeError> {
        if self.slot.superseded.load(Ordering::SeqCst) {
            return Err(BridgeError::GopSuperseded {
                gop_id: self.slot.gop_id,
            });
        }
        if let Some(mut s) = self.stream.take() {
            // Finishing flushes in the background: the data is queued.
            tokio::spawn(async move {
                let _ = s.shutdown().await;
            });
        }
        Ok(())
    }
}
