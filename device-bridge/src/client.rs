//! The handset side: [`ClientSession::connect`] opens a session to the host
//! and keeps it alive across network trouble (migration, resume).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bt_raw::H4Packet;
use sensor_proto::bridge::{
    AppErrorCode, AudioFrame, CloseReason, ControlMessage, Hello, PROTOCOL_VERSION, SensorSample,
    Welcome, control_message, input_message,
};
use tokio::time::Instant;

use crate::config::TransportSettings;
use crate::identity::{HandsetIdentity, Pin};
use crate::session::{
    Core, Link, Loss, Owner, Role, SessionEnd, SessionStats, VideoFrame, classify, lock,
    open_client_streams,
};
use crate::wire::{self, FrameReader, ReadFail};
use crate::{BridgeError, tls};

/// The most redirects one connect follows (a front door to the phone's
/// host, and once more if the phone moved meanwhile).
pub(crate) const MAX_REDIRECTS: usize = 2;

/// Configuration of a handset connection. Its `Debug` never shows the
/// enrollment token.
#[derive(Clone)]
#[non_exhaustive]
pub struct BridgeClientConfig {
    /// The host's UDP address.
    pub server_addr: SocketAddr,
    /// TLS server name to send (informational: the pin authenticates).
    pub server_name: String,
    /// The host's SPKI fingerprint, learned at enrollment.
    pub host_pin: Pin,
    /// The handset's key pair and certificate.
    pub identity: HandsetIdentity,
    /// The enrollment token, for the very first connection only. Drop it
    /// once a session was established.
    pub enrollment_token: Option<String>,
    /// What to say in `Hello`: name, capabilities, screen, radio, phone,
    /// codecs, version. `protocol_version` and the token fields are filled
    /// in by the bridge.
    pub hello: Hello,
    /// QUIC timing and windows.
    pub transport: TransportSettings,
    /// Local address to bind; default: the unspecified address (or
    /// loopback, when the host is on loopback), any port.
    pub bind_addr: Option<SocketAddr>,
    /// Reconnect and resume automatically when the connection is lost
    /// (default true).
    pub auto_resume: bool,
}

impl fmt::Debug for BridgeClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = if self.enrollment_token.is_some() {
            "<redacted>"
        } else {
            "<none>"
        };
        f.debug_struct("BridgeClientConfig")
            .field("server_addr", &self.server_addr)
            .field("server_name", &self.server_name)
            .field("host_pin", &self.host_pin)
            .field("identity", &self.identity)
            .field("enrollment_token", &format_args!("{token}"))
            .field("hello", &self.hello)
            .field("transport", &self.transport)
            .field("bind_addr", &self.bind_addr)
            .field("auto_resume", &self.auto_resume)
            .finish()
    }
}

impl BridgeClientConfig {
    /// A configuration with defaults for everything else.
    #[must_use]
    pub fn new(server_addr: SocketAddr, host_pin: Pin, identity: HandsetIdentity) -> Self {
        Self {
            server_addr,
            server_name: tls::SERVER_NAME.to_owned(),
            host_pin,
            identity,
            enrollment_token: None,
            hello: Hello::default(),
            transport: TransportSettings::default(),
            bind_addr: None,
            auto_resume: true,
        }
    }

    fn local_bind(&self) -> SocketAddr {
        self.bind_addr.unwrap_or_else(|| match self.server_addr {
            SocketAddr::V4(a) if a.ip().is_loopback() => (Ipv4Addr::LOCALHOST, 0).into(),
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(a) if a.ip().is_loopback() => (Ipv6Addr::LOCALHOST, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        })
    }
}

struct ClientInner {
    endpoint: quinn::Endpoint,
    config: BridgeClientConfig,
}

/// An established TLS connection plus the Hello/Welcome exchange.
struct Established {
    conn: quinn::Connection,
    send: quinn::SendStream,
    reader: FrameReader,
    welcome: Welcome,
}

fn refused_from(err: &quinn::ConnectionError) -> Option<BridgeError> {
    match classify(err) {
        Loss::Closed { code, reason } => Some(BridgeError::Refused { code, reason }),
        _ => None,
    }
}

async fn handshake(inner: &ClientInner, hello: Hello) -> Result<Established, BridgeError> {
    let cfg = &inner.config;
    let (client_config, probe) =
        tls::client_config_with_probe(&cfg.identity, cfg.host_pin, &cfg.transport)?;
    let connecting =
        inner
            .endpoint
            .connect_with(client_config, cfg.server_addr, &cfg.server_name)?;
    let conn = match connecting.await {
        Ok(conn) => conn,
        Err(e) => {
            if let Some(actual) = probe.mismatch() {
                return Err(BridgeError::PinMismatch {
                    expected: cfg.host_pin,
                    actual,
                });
            }
            return Err(refused_from(&e).unwrap_or(BridgeError::Connection(e)));
        }
    };
    let lost = |conn: &quinn::Connection| {
        conn.close_reason().map_or(BridgeError::Disconnected, |e| {
            refused_from(&e).unwrap_or(BridgeError::Connection(e))
        })
    };
    let (mut send, recv) = match conn.open_bi().await {
        Ok(pair) => pair,
        Err(e) => return Err(refused_from(&e).unwrap_or(BridgeError::Connection(e))),
    };
    let hello_bytes = wire::frame(&ControlMessage {
        msg: Some(control_message::Msg::Hello(hello)),
    })?;
    if wire::write(&mut send, hello_bytes).await.is_err() {
        return Err(lost(&conn));
    }
    let mut reader = FrameReader::new(recv);
    match reader.next::<ControlMessage>().await {
        Ok(Some(ControlMessage {
            msg: Some(control_message::Msg::Welcome(welcome)),
        })) => Ok(Established {
            conn,
            send,
            reader,
            welcome,
        }),
        Ok(Some(ControlMessage {
            msg: Some(control_message::Msg::Close(close)),
        })) => {
            let reason = CloseReason::try_from(close.reason).unwrap_or(CloseReason::Unspecified);
            Err(BridgeError::Refused {
                code: reason.app_error_code(),
                reason: close.message,
            })
        }
        Ok(_) => {
            let message = "the host did not answer Hello with Welcome";
            conn.close(
                wire::code_varint(AppErrorCode::ProtocolViolation),
                message.as_bytes(),
            );
            Err(BridgeError::protocol(
                AppErrorCode::ProtocolViolation,
                message,
            ))
        }
        Err(ReadFail::Peer(code, message)) => {
            conn.close(wire::code_varint(code), wire::reason_bytes(&message));
            Err(BridgeError::Protocol { code, message })
        }
        Err(_) => {
            // The host closed the connection: read why.
            let err = conn.closed().await;
            Err(refused_from(&err).unwrap_or(BridgeError::Connection(err)))
        }
    }
}

/// Opens the per-connection streams and installs the link.
async fn attach(core: &Arc<Core>, est: Established) -> Result<Arc<Link>, BridgeError> {
    let (input, hci) = open_client_streams(core, &est.conn).await?;
    Ok(core.install_link(est.conn, est.send, est.reader, Some(input), Some(hci)))
}

/// Follows the current link; on network loss reconnects and resumes within
/// the resume window.
async fn supervise(core: Arc<Core>, inner: Arc<ClientInner>, mut link: Arc<Link>) {
    loop {
        let err = link.conn.closed().await;
        if core.is_ended() {
            return;
        }
        match classify(&err) {
            Loss::Local => return,
            Loss::Closed { code, reason } => {
                tracing::info!(session = %core.id, code = ?code, "the host closed the session: {reason}");
                return core.end(SessionEnd {
                    code,
                    reason,
                    by_peer: true,
                });
            }
            Loss::Transient => {}
        }
        if !inner.config.auto_resume {
            return core.end(SessionEnd {
                code: AppErrorCode::IdleTimeout,
                reason: format!("connection lost: {err}"),
                by_peer: false,
            });
        }
        tracing::info!(session = %core.id, "connection lost ({err}); resuming");
        core.stop_previous_link("connection lost").await;
        match reconnect(&core, &inner).await {
            Some(new_link) => link = new_link,
            None => return,
        }
    }
}

async fn reconnect(core: &Arc<Core>, inner: &ClientInner) -> Option<Arc<Link>> {
    let deadline = Instant::now() + core.resume_window;
    let mut backoff = Duration::from_millis(25);
    let token = lock(&core.welcome).resume_token.clone();
    loop {
        if core.is_ended() {
            return None;
        }
        if Instant::now() >= deadline {
            core.end(SessionEnd {
                code: AppErrorCode::ResumeExpired,
                reason: "could not reach the host within the resume window".into(),
                by_peer: false,
            });
            return None;
        }
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            resume_token: Some(token.clone()),
            enrollment_token: None,
            hci_rx_acked: Some(lock(&core.hci_rx).last_delivered()),
            ..core.hello.clone()
        };
        let attempt_deadline =
            deadline.min(Instant::now() + inner.config.transport.handshake_timeout);
        let result = tokio::time::timeout_at(attempt_deadline, handshake(inner, hello)).await;
        match result {
            Ok(Ok(est)) => {
                if !est.welcome.resumed {
                    core.end(SessionEnd {
                        code: AppErrorCode::ProtocolViolation,
                        reason: "the host answered a resume with a new session".into(),
                        by_peer: false,
                    });
                    return None;
                }
                let acked = lock(&core.hci_tx).on_ack(est.welcome.hci_rx_acked);
                if let Err(v) = acked {
                    est.conn.close(
                        wire::code_varint(AppErrorCode::ProtocolViolation),
                        wire::reason_bytes(&v.to_string()),
                    );
                    core.end(SessionEnd {
                        code: AppErrorCode::ProtocolViolation,
                        reason: v.to_string(),
                        by_peer: false,
                    });
                    return None;
                }
                lock(&core.hci_rx).reset_ack();
                let hci_rx_acked = est.welcome.hci_rx_acked;
                *lock(&core.welcome) = est.welcome.clone();
                match attach(core, est).await {
                    Ok(link) => {
                        tracing::info!(session = %core.id, hci_rx_acked, "session resumed");
                        return Some(link);
                    }
                    Err(e) => tracing::debug!(session = %core.id, "resume attach failed: {e}"),
                }
            }
            Ok(Err(BridgeError::Refused { code, reason })) => {
                tracing::warn!(session = %core.id, code = ?code, "the host refused the resume: {reason}");
                core.end(SessionEnd {
                    code,
                    reason,
                    by_peer: true,
                });
                return None;
            }
            Ok(Err(e @ BridgeError::PinMismatch { .. })) => {
                tracing::warn!(session = %core.id, "{e}");
                core.end(SessionEnd {
                    code: AppErrorCode::Unauthorized,
                    reason: e.to_string(),
                    by_peer: false,
                });
                return None;
            }
            Ok(Err(e)) => tracing::debug!(session = %core.id, "resume attempt failed: {e}"),
            Err(_) => tracing::debug!(session = %core.id, "resume attempt timed out"),
        }
        let wait = backoff.min(deadline.saturating_duration_since(Instant::now()));
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

/// The handset's session with the host. Cheap to clone; the session ends
/// when the last clone is dropped, when either side closes it, or when it
/// cannot be resumed within the resume window.
///
/// While the connection is down (and auto-resume is on), calls that need it
/// wait for the resume; HCI packets queue up and are delivered exactly once
/// after it. All `recv_*` methods are cancel safe.
#[derive(Clone)]
pub struct ClientSession {
    owner: Arc<Owner>,
    inner: Arc<ClientInner>,
}

impl fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSession")
            .field("id", &self.core().id)
            .finish_non_exhaustive()
    }
}

impl ClientSession {
    /// Connects to the host, authenticates (pinned host key, client
    /// certificate, optional enrollment token) and opens a new session.
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`BridgeError::Refused`] with the host's reason (unknown, revoked,
    /// token invalid/reused/expired, phone not found/busy, ...),
    /// [`BridgeError::PinMismatch`] if the host is not the pinned one,
    /// [`BridgeError::HandshakeTimeout`], socket and TLS errors.
    pub async fn connect(config: BridgeClientConfig) -> Result<Self, BridgeError> {
        let socket = std::net::UdpSocket::bind(config.local_bind())?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        let mut inner = Arc::new(ClientInner { endpoint, config });
        let mut hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            enrollment_token: inner.config.enrollment_token.clone(),
            resume_token: None,
            hci_rx_acked: None,
            ..inner.config.hello.clone()
        };
        let timeout = inner.config.transport.handshake_timeout;
        let mut hops = 0;
        let est = loop {
            let attempt = tokio::time::timeout(timeout, handshake(&inner, hello.clone()))
                .await
                .map_err(|_| BridgeError::HandshakeTimeout)?;
            let reason = match attempt {
                Err(BridgeError::Refused {
                    code: AppErrorCode::Redirect,
                    reason,
                }) => reason,
                other => break other?,
            };
            // The phone runs on another host of the fleet, which the host
            // this handset trusts vouched for over its pinned connection.
            if hops == MAX_REDIRECTS {
                return Err(BridgeError::protocol(
                    AppErrorCode::Redirect,
                    format!("more than {MAX_REDIRECTS} redirects; the last: {reason}"),
                ));
            }
            hops += 1;
            let to = crate::auth::Redirect::parse(&reason).ok_or_else(|| {
                BridgeError::protocol(
                    AppErrorCode::ProtocolViolation,
                    format!("a redirect without a target: {reason}"),
                )
            })?;
            let addr = tokio::net::lookup_host(&to.addr)
                .await?
                .next()
                .ok_or_else(|| {
                    BridgeError::Io(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("{} has no address", to.addr),
                    ))
                })?;
            tracing::info!(host = %to.host, %addr, "the phone runs on another host: following the redirect");
            let mut config = inner.config.clone();
            config.server_addr = addr;
            config.host_pin = to.pin;
            // The token was for the host that enrolled this handset.
            config.enrollment_token = None;
            hello.enrollment_token = None;
            inner = Arc::new(ClientInner {
                endpoint: inner.endpoint.clone(),
                config,
            });
        };
        if est.welcome.resumed {
            return Err(BridgeError::protocol(
                AppErrorCode::ProtocolViolation,
                "the host claims to resume a session that was never opened",
            ));
        }
        let window = Duration::from_millis(u64::from(est.welcome.resume_window_ms));
        let core = Core::new(
            Role::Client,
            est.welcome.session_id.clone(),
            hello,
            None,
            window,
            est.welcome.clone(),
        );
        let link = attach(&core, est).await?;
        tracing::info!(session = %core.id, phone = %lock(&core.welcome).phone_name, "session started");
        tokio::spawn(supervise(core.clone(), inner.clone(), link));
        Ok(Self {
            owner: Arc::new(Owner(core)),
            inner,
        })
    }

    fn core(&self) -> &Arc<Core> {
        &self.owner.0
    }

    /// The session id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.core().id
    }

    /// The latest `Welcome` (phone name, display, resume window, ...).
    #[must_use]
    pub fn welcome(&self) -> Welcome {
        lock(&self.core().welcome).clone()
    }

    /// True while a connection serves the session.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.core().is_connected()
    }

    /// Waits until the session is connected (returns at once if it is).
    ///
    /// # Errors
    ///
    /// [`BridgeError::SessionEnded`].
    pub async fn wait_connected(&self) -> Result<(), BridgeError> {
        self.core().wait_link().await.map(|_| ())
    }

    /// The local UDP address in use.
    ///
    /// # Errors
    ///
    /// If the socket is gone.
    pub fn local_addr(&self) -> Result<SocketAddr, BridgeError> {
        Ok(self.inner.endpoint.local_addr()?)
    }

    /// Moves the session to a new UDP socket (e.g. after the handset
    /// switched from Wi-Fi to mobile data). The connection migrates: no new
    /// handshake, streams continue.
    ///
    /// # Errors
    ///
    /// If the socket cannot be used.
    pub fn rebind(&self, socket: std::net::UdpSocket) -> Result<(), BridgeError> {
        self.inner.endpoint.rebind(socket)?;
        Ok(())
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> SessionStats {
        self.core().stats()
    }

    /// Resolves when the session is over, with why. Cancel safe.
    pub async fn ended(&self) -> SessionEnd {
        self.core().ended().await
    }

    /// Sends a control message (`KeyframeRequest`, `ClockPing`, `Stats`,
    /// `RadioState`, ...). Waits while disconnected.
    ///
    /// # Errors
    ///
    /// [`BridgeError::InvalidArgument`] for `Hello`/`Welcome`/`Close` or a
    /// message over 64 KiB; [`BridgeError::Disconnected`] if the connection
    /// died mid-write; [`BridgeError::SessionEnded`].
    pub async fn send_control(&self, msg: control_message::Msg) -> Result<(), BridgeError> {
        self.core().send_control(msg).await
    }

    /// The next control message from the host.
    ///
    /// # Errors
    ///
    /// [`BridgeError::SessionEnded`].
    pub async fn recv_control(&self) -> Result<ControlMessage, BridgeError> {
        self.core().recv_control().await
    }

    /// Sends sensor samples in one QUIC datagram. The bridge numbers them
    /// (per-sensor `seq`, datagram `seq`). Unreliable by design: while
    /// disconnected the samples are dropped (and counted).
    ///
    /// # Errors
    ///
    /// [`BridgeError::InvalidArgument`] for a kind not in
    /// `Hello.capabilities` or a datagram too large for the path;
    /// [`BridgeError::SessionEnded`].
    pub fn send_sensors(&self, samples: Vec<SensorSample>) -> Result<(), BridgeError> {
        self.core().send_sensors(samples)
    }

    /// Sends one microphone frame as a datagram (only when `Hello.audio`
    /// announced the microphone). Unreliable by design: dropped and counted
    /// while disconnected.
    ///
    /// # Errors
    ///
    /// [`BridgeError::InvalidArgument`] without the microphone in `Hello`
    /// or for a frame too large for a datagram; [`BridgeError::SessionEnded`].
    pub fn send_audio(&self, frame: AudioFrame) -> Result<(), BridgeError> {
        self.core().send_audio(frame)
    }

    /// The next frame of the phone's sound (only when `Hello.audio` asked
    /// for playback), in arrival order: lost and reordered frames are the
    /// jitter buffer's business.
    ///
    /// # Errors
    ///
    /// [`BridgeError::SessionEnded`].
    pub async fn recv_audio(&self) -> Result<AudioFrame, BridgeError> {
        self.core().recv_audio().await
    }

    /// Sends one input event (touch, key, location) on the ordered input
    /// stream; returns the seq the bridge gave it. Waits while disconnected.
    ///
    /// # Errors
    ///
    /// [`BridgeError::Disconnected`] if the connection died mid-write (the
    /// event may be lost), [`BridgeError::SessionEnded`].
    pub async fn send_input(&self, event: input_message::Event) -> Result<u64, BridgeError> {
        self.core().send_input(event).await
    }

    /// The next video frame, in order within its GOP; frames of a GOP older
    /// than the newest one started are skipped.
    ///
    /// # Errors
    ///
    /// [`BridgeError::SessionEnded`].
    pub async fn recv_video(&self) -> Result<VideoFrame, BridgeError> {
        self.core().recv_video().await
    }

    /// Queues an H4 packet from the radio for the phone. Delivered exactly
    /// once and in order, across resumes.
    ///
    /// # Errors
    ///
    /// [`BridgeError::SessionEnded`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled call has not queued the packet.
    pub async fn send_hci(&self, packet: H4Packet) -> Result<(), BridgeError> {
        self.core().send_hci(packet).await
    }

    /// The next H4 packet for the radio (exactly once, in order).
    ///
    /// # Errors
    ///
    /// [`BridgeError::SessionEnded`].
    pub async fn recv_hci(&self) -> Result<H4Packet, BridgeError> {
        self.core().recv_hci().await
    }

    /// Ends the session: sends `Close` and closes the connection. The host
    /// ends its side at once (no resume window).
    pub async fn close(&self, reason: CloseReason, message: &str) {
        self.core().close(reason, message).await;
    }
}
