//! The host side: [`BridgeServer`] accepts handsets, authorizes them and
//! hands [`ServerSession`]s to the host application.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bt_raw::H4Packet;
use sensor_proto::bridge::{
    AppErrorCode, AudioFrame, CloseReason, ControlMessage, Hello, InputMessage, PROTOCOL_VERSION,
    SensorSample, VideoStreamHeader, Welcome, control_message,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::auth::{AuthRequest, Authorized, Authorizer, Refusal};
use crate::config::TransportSettings;
use crate::identity::{Fingerprint, HostIdentity, Pin};
use crate::limits::{AdmissionLimits, Gate, Pass, RateLimitedLog};
use crate::session::{
    Core, GopWriter, Loss, Owner, Role, SessionEnd, SessionStats, classify, lock,
};
use crate::util::{hex_encode, random_bytes};
use crate::web::serve::WebContext;
use crate::web::{WebCore, WebSettings, serve_web};
use crate::wire::{self, FrameReader, ReadFail};
use crate::{BridgeError, tls};
use quinn::VarInt;

/// Default resume window: how long a session whose connection died waits
/// for the handset to come back.
pub const DEFAULT_RESUME_WINDOW: Duration = Duration::from_secs(10);

/// Configuration of a [`BridgeServer`].
#[derive(Clone)]
#[non_exhaustive]
pub struct BridgeServerConfig {
    /// The host's key pair and certificate (chain).
    pub identity: HostIdentity,
    /// Who may open sessions.
    pub authorizer: Arc<dyn Authorizer>,
    /// How long a disconnected session may be resumed.
    pub resume_window: Duration,
    /// QUIC timing and windows.
    pub transport: TransportSettings,
    /// `Welcome.host_version`.
    pub host_version: String,
    /// Connection caps, in total and per source, before and after
    /// admission.
    pub limits: AdmissionLimits,
    /// Browser handsets: with these the endpoint also speaks HTTP/3 and
    /// WebTransport (ALPN `h3`) on the same port ([`crate::web`]).
    pub web: Option<WebSettings>,
}

impl BridgeServerConfig {
    /// A configuration with default transport settings and a 10 s resume
    /// window.
    #[must_use]
    pub fn new(identity: HostIdentity, authorizer: Arc<dyn Authorizer>) -> Self {
        Self {
            identity,
            authorizer,
            resume_window: DEFAULT_RESUME_WINDOW,
            transport: TransportSettings::default(),
            host_version: env!("CARGO_PKG_VERSION").to_owned(),
            limits: AdmissionLimits::default(),
            web: None,
        }
    }
}

impl fmt::Debug for BridgeServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeServerConfig")
            .field("identity", &self.identity)
            .field("resume_window", &self.resume_window)
            .field("transport", &self.transport)
            .field("limits", &self.limits)
            .field("web", &self.web.is_some())
            .finish_non_exhaustive()
    }
}

struct ServerInner {
    endpoint: quinn::Endpoint,
    config: BridgeServerConfig,
    /// Live sessions by resume token.
    sessions: Mutex<HashMap<[u8; 32], Weak<Core>>>,
    accepted: mpsc::Sender<ServerSession>,
    /// Unadmitted connections, counted against the limits.
    gate: Arc<Gate>,
    /// What browser connections need.
    web: Arc<WebContext>,
}

/// The host's QUIC endpoint for handsets.
///
/// Dropping it (or [`BridgeServer::close`]) shuts every session down with
/// `SHUTDOWN`.
pub struct BridgeServer {
    inner: Arc<ServerInner>,
    accepted: tokio::sync::Mutex<mpsc::Receiver<ServerSession>>,
    accept_task: JoinHandle<()>,
    /// Rotates the WebTransport certificates (browser handsets on).
    rotation_task: Option<JoinHandle<()>>,
}

impl fmt::Debug for BridgeServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeServer")
            .field("local_addr", &self.inner.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl BridgeServer {
    /// Binds a UDP socket at `addr` and starts accepting handsets. Must be
    /// called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// Socket or TLS configuration errors.
    pub fn bind(addr: SocketAddr, config: BridgeServerConfig) -> Result<Self, BridgeError> {
        Self::with_socket(std::net::UdpSocket::bind(addr)?, config)
    }

    /// Starts accepting handsets on an already bound socket.
    ///
    /// # Errors
    ///
    /// Socket or TLS configuration errors.
    pub fn with_socket(
        socket: std::net::UdpSocket,
        config: BridgeServerConfig,
    ) -> Result<Self, BridgeError> {
        let server_config = tls::server_config(
            &config.identity,
            &config.transport,
            config.web.as_ref().map(|w| w.certs.clone()),
        )?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        let (tx, rx) = mpsc::channel(64);
        let web = Arc::new(WebContext {
            authorizer: config.authorizer.clone(),
            host_version: config.host_version.clone(),
            connection_window: config.transport.connection_window,
            accepted: tx.clone(),
            origins: config
                .web
                .as_ref()
                .map(|w| w.origins.clone())
                .unwrap_or_default(),
            live: Mutex::new(Vec::new()),
        });
        let inner = Arc::new(ServerInner {
            endpoint,
            web,
            gate: Gate::new(config.limits.clone()),
            config,
            sessions: Mutex::new(HashMap::new()),
            accepted: tx,
        });
        let accept_task = tokio::spawn(accept_loop(inner.clone()));
        let rotation_task = inner
            .config
            .web
            .as_ref()
            .map(|w| tokio::spawn(rotate_hourly(w.certs.clone())));
        tracing::info!(addr = ?inner.endpoint.local_addr().ok(), pin = %inner.config.identity.pin(), "bridge server listening");
        Ok(Self {
            inner,
            accepted: tokio::sync::Mutex::new(rx),
            accept_task,
            rotation_task,
        })
    }

    /// Connections refused at an [`AdmissionLimits`] limit so far.
    #[must_use]
    pub fn refused_connections(&self) -> u64 {
        self.inner.gate.refused()
    }

    /// The local UDP address.
    ///
    /// # Errors
    ///
    /// If the socket is gone.
    pub fn local_addr(&self) -> Result<SocketAddr, BridgeError> {
        Ok(self.inner.endpoint.local_addr()?)
    }

    /// The pin handsets must use for this host.
    #[must_use]
    pub fn pin(&self) -> Pin {
        self.inner.config.identity.pin()
    }

    /// The next new session (resumed sessions are not yielded again: they
    /// continue in the `ServerSession` the host already has). `None` once
    /// the server is closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn accept(&self) -> Option<ServerSession> {
        self.accepted.lock().await.recv().await
    }

    /// Number of live sessions (connected or waiting for a resume; browser
    /// sessions included).
    #[must_use]
    pub fn session_count(&self) -> usize {
        let native = lock(&self.inner.sessions)
            .values()
            .filter(|w| w.strong_count() > 0)
            .count();
        native + self.inner.web.live_count()
    }

    /// Ends every session with `SHUTDOWN` and stops accepting.
    pub fn close(&self, message: &str) {
        self.accept_task.abort();
        if let Some(t) = &self.rotation_task {
            t.abort();
        }
        let sessions: Vec<Arc<Core>> = lock(&self.inner.sessions)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for core in sessions {
            core.end(SessionEnd {
                code: AppErrorCode::Shutdown,
                reason: message.to_owned(),
                by_peer: false,
            });
        }
        self.inner.web.end_all(message);
        self.inner.endpoint.close(
            wire::code_varint(AppErrorCode::Shutdown),
            message.as_bytes(),
        );
    }
}

impl Drop for BridgeServer {
    fn drop(&mut self) {
        self.close("host shutting down");
    }
}

/// Rotates the WebTransport certificates when due, checking hourly, on the
/// blocking pool (key generation and a file write).
async fn rotate_hourly(certs: Arc<crate::web::WebCertificates>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let c = certs.clone();
        match tokio::task::spawn_blocking(move || c.rotate_if_due(std::time::SystemTime::now()))
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "could not rotate the WebTransport certificates");
            }
            Err(e) => tracing::error!(error = %e, "the certificate rotation task failed"),
        }
    }
}

async fn accept_loop(inner: Arc<ServerInner>) {
    while let Some(incoming) = inner.endpoint.accept().await {
        let open = inner.endpoint.open_connections();
        match inner.gate.enter(incoming.remote_address().ip(), open) {
            Ok(pass) => {
                tokio::spawn(handle_incoming(inner.clone(), incoming, pass));
            }
            // Before any TLS work: the cheapest answer there is.
            Err(_) => incoming.refuse(),
        }
    }
}

fn refuse(
    conn: &quinn::Connection,
    handset: Option<Fingerprint>,
    code: AppErrorCode,
    message: &str,
) {
    // Anyone can cause a refusal: at most a few lines a second.
    static LOG: RateLimitedLog = RateLimitedLog::new(Duration::from_millis(200));
    if let Some(suppressed) = LOG.allow() {
        tracing::warn!(
            remote = %conn.remote_address(),
            handset = ?handset,
            code = ?code,
            suppressed,
            "refusing handset: {message}"
        );
    }
    conn.close(wire::code_varint(code), wire::reason_bytes(message));
}

async fn read_hello(
    conn: &quinn::Connection,
) -> Result<(quinn::SendStream, FrameReader, Hello), (AppErrorCode, String)> {
    let (send, recv) = conn.accept_bi().await.map_err(|e| {
        (
            AppErrorCode::ProtocolViolation,
            format!("no control stream: {e}"),
        )
    })?;
    let mut reader = FrameReader::new(recv);
    let msg = match reader.next::<ControlMessage>().await {
        Ok(Some(msg)) => msg,
        Ok(None) => {
            return Err((
                AppErrorCode::ProtocolViolation,
                "control stream ended before Hello".into(),
            ));
        }
        Err(ReadFail::Peer(code, msg)) => return Err((code, format!("control: {msg}"))),
        Err(other) => {
            return Err((
                AppErrorCode::ProtocolViolation,
                format!("control stream failed before Hello: {other:?}"),
            ));
        }
    };
    match msg.msg {
        Some(control_message::Msg::Hello(hello)) => Ok((send, reader, hello)),
        _ => Err((
            AppErrorCode::ProtocolViolation,
            "the first control message must be Hello".into(),
        )),
    }
}

/// Takes one connection from its first packet to admission. `_pass` holds
/// its place among the unadmitted until this returns; TLS and `Hello`
/// together get one `handshake_timeout`.
async fn handle_incoming(inner: Arc<ServerInner>, incoming: quinn::Incoming, _pass: Pass) {
    let remote = incoming.remote_address();
    let deadline = tokio::time::Instant::now() + inner.config.transport.handshake_timeout;
    let conn = match tokio::time::timeout_at(deadline, async { incoming.accept()?.await }).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::info!(%remote, "handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::info!(%remote, "handshake timed out");
            return;
        }
    };
    if tls::negotiated_alpn(&conn).as_deref() == Some(tls::ALPN_H3) {
        return serve_web(conn, deadline, inner.web.clone()).await;
    }
    let Some(handset) = tls::peer_fingerprint(&conn) else {
        return refuse(
            &conn,
            None,
            AppErrorCode::Unauthorized,
            "no usable client certificate",
        );
    };
    let (send, reader, hello) = match tokio::time::timeout_at(deadline, read_hello(&conn)).await {
        Ok(Ok(x)) => x,
        Ok(Err((code, message))) => return refuse(&conn, Some(handset), code, &message),
        Err(_) => {
            return refuse(
                &conn,
                Some(handset),
                AppErrorCode::ProtocolViolation,
                "no Hello within the handshake timeout",
            );
        }
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        return refuse(
            &conn,
            Some(handset),
            AppErrorCode::VersionUnsupported,
            &format!(
                "protocol version {} is not supported (this host speaks {PROTOCOL_VERSION})",
                hello.protocol_version
            ),
        );
    }
    if hello.resume_token.is_some() {
        resume(inner, conn, handset, hello, send, reader).await;
    } else {
        new_session(inner, conn, handset, hello, send, reader).await;
    }
}

/// Opens an admitted connection's receive window to its full size.
fn admitted(inner: &ServerInner, conn: &quinn::Connection) {
    conn.set_receive_window(VarInt::from_u32(inner.config.transport.connection_window));
}

/// Consults the authorizer on the runtime's blocking pool: an authorizer
/// may touch storage (the host's is SQLite), and connection tasks run on
/// the latency runtime, where a slow look-up (or a flood of strangers
/// causing them) must not hold up live sessions.
async fn authorize(
    inner: &ServerInner,
    handset: Fingerprint,
    hello: &Hello,
    remote: SocketAddr,
    resuming: Option<&str>,
) -> Result<Authorized, Refusal> {
    let authorizer = inner.config.authorizer.clone();
    let hello = hello.clone();
    let resuming = resuming.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        authorizer.authorize(&AuthRequest {
            handset,
            hello: &hello,
            remote,
            resuming: resuming.as_deref(),
        })
    })
    .await
    .unwrap_or_else(|e| {
        tracing::error!(error = %e, "the authorizer failed");
        Err(Refusal::new(
            AppErrorCode::InternalError,
            "the host's access check failed",
        ))
    })
}

fn welcome_bytes(welcome: &Welcome) -> Result<bytes::Bytes, BridgeError> {
    wire::frame(&ControlMessage {
        msg: Some(control_message::Msg::Welcome(welcome.clone())),
    })
}

async fn new_session(
    inner: Arc<ServerInner>,
    conn: quinn::Connection,
    handset: Fingerprint,
    mut hello: Hello,
    mut send: quinn::SendStream,
    reader: FrameReader,
) {
    let granted = match authorize(&inner, handset, &hello, conn.remote_address(), None).await {
        Ok(granted) => granted,
        Err(refusal) => return refuse(&conn, Some(handset), refusal.code, &refusal.message),
    };
    if let Some(name) = &granted.handset_name {
        hello.handset_name.clone_from(name);
    }
    admitted(&inner, &conn);
    let (id, token) = match (random_bytes::<8>(), random_bytes::<32>()) {
        (Ok(id), Ok(token)) => (hex_encode(&id), token),
        _ => {
            return refuse(
                &conn,
                Some(handset),
                AppErrorCode::InternalError,
                "no randomness",
            );
        }
    };
    let window = inner.config.resume_window;
    let welcome = Welcome {
        session_id: id.clone(),
        resume_token: token.to_vec().into(),
        resume_window_ms: u32::try_from(window.as_millis()).unwrap_or(u32::MAX),
        phone_name: granted.phone_name.clone(),
        display: Some(granted.display),
        resumed: false,
        hci_rx_acked: 0,
        protocol_version: PROTOCOL_VERSION,
        host_version: inner.config.host_version.clone(),
    };
    let Ok(bytes) = welcome_bytes(&welcome) else {
        return refuse(
            &conn,
            Some(handset),
            AppErrorCode::InternalError,
            "Welcome too large",
        );
    };
    if wire::write(&mut send, bytes).await.is_err() {
        return;
    }
    let core = Core::new(Role::Server, id, hello, Some(handset), window, welcome);
    lock(&inner.sessions).insert(token, Arc::downgrade(&core));
    let weak_inner = Arc::downgrade(&inner);
    core.set_on_end(Box::new(move || {
        if let Some(inner) = weak_inner.upgrade() {
            lock(&inner.sessions).remove(&token);
        }
    }));
    let link = core.install_link(conn, send, reader, None, None);
    tracing::info!(session = %core.id, handset = %handset, phone = %granted.phone_name, remote = %link.conn.remote_address(), "session started");
    tokio::spawn(watch_link(core.clone(), link));
    let session = ServerSession::quic(core);
    // If the host app is gone, dropping the session ends it.
    let _ = inner.accepted.send(session).await;
}

async fn resume(
    inner: Arc<ServerInner>,
    conn: quinn::Connection,
    handset: Fingerprint,
    hello: Hello,
    mut send: quinn::SendStream,
    reader: FrameReader,
) {
    let token: Option<[u8; 32]> = hello
        .resume_token
        .as_deref()
        .and_then(|t| <[u8; 32]>::try_from(t).ok());
    let core = token
        .and_then(|t| lock(&inner.sessions).get(&t).and_then(Weak::upgrade))
        .filter(|c| c.handset == Some(handset) && !c.is_ended());
    let Some(core) = core else {
        return refuse(
            &conn,
            Some(handset),
            AppErrorCode::ResumeExpired,
            "unknown or expired resume token",
        );
    };
    if let Err(refusal) = authorize(
        &inner,
        handset,
        &hello,
        conn.remote_address(),
        Some(&core.id),
    )
    .await
    {
        refuse(&conn, Some(handset), refusal.code, &refusal.message);
        core.end(SessionEnd {
            code: refusal.code,
            reason: refusal.message,
            by_peer: false,
        });
        return;
    }
    admitted(&inner, &conn);
    let _attach = core.attach.lock().await;
    core.stop_previous_link("superseded by a resumed connection")
        .await;
    let peer_received = hello.hci_rx_acked.unwrap_or(0);
    let acked = lock(&core.hci_tx).on_ack(peer_received);
    if let Err(v) = acked {
        refuse(
            &conn,
            Some(handset),
            AppErrorCode::ProtocolViolation,
            &v.to_string(),
        );
        core.end(SessionEnd {
            code: AppErrorCode::ProtocolViolation,
            reason: v.to_string(),
            by_peer: false,
        });
        return;
    }
    let delivered = {
        let mut rx = lock(&core.hci_rx);
        rx.reset_ack();
        rx.last_delivered()
    };
    let welcome = {
        let mut w = lock(&core.welcome);
        w.resumed = true;
        w.hci_rx_acked = delivered;
        w.clone()
    };
    let generation = core.generation();
    let written = match welcome_bytes(&welcome) {
        Ok(bytes) => wire::write(&mut send, bytes).await.is_ok(),
        Err(_) => false,
    };
    if !written {
        // The new connection failed at once: keep waiting for another try.
        tokio::spawn(expire_after_window(core.clone(), generation));
        return;
    }
    let link = core.install_link(conn, send, reader, None, None);
    tracing::info!(session = %core.id, remote = %link.conn.remote_address(), hci_rx_acked = delivered, peer_received, "session resumed");
    tokio::spawn(watch_link(core.clone(), link));
}

/// Ends the session if no new link was installed within the resume window.
async fn expire_after_window(core: Arc<Core>, generation: u64) {
    tokio::time::sleep(core.resume_window).await;
    if core.generation() == generation && !core.is_connected() && !core.is_ended() {
        core.end(SessionEnd {
            code: AppErrorCode::ResumeExpired,
            reason: "the handset did not come back within the resume window".into(),
            by_peer: false,
        });
    }
}

/// Follows one link until it closes, then detaches (network loss) or ends
/// (deliberate close) the session.
async fn watch_link(core: Arc<Core>, link: Arc<crate::session::Link>) {
    let err = link.conn.closed().await;
    if core.is_ended() || core.generation() != link.generation {
        return;
    }
    match classify(&err) {
        Loss::Transient => {
            if core.detach(link.generation) {
                tracing::info!(session = %core.id, window = ?core.resume_window, "connection lost ({err}); waiting for the handset to resume");
                expire_after_window(core, link.generation).await;
            }
        }
        Loss::Closed { code, reason } => core.end(SessionEnd {
            code,
            reason,
            by_peer: true,
        }),
        Loss::Local => {}
    }
}

/// One handset session on the host. Survives reconnects of the handset
/// within the resume window. Cheap to clone; the session ends when the last
/// clone is dropped, when either side closes it, or when the resume window
/// passes.
///
/// All `recv_*` methods are cancel safe; they return
/// [`BridgeError::SessionEnded`] once the session is over and its queue is
/// empty. Messages queued while disconnected wait for the resume.
#[derive(Clone, Debug)]
pub struct ServerSession {
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    /// A native handset on `vphone/1`.
    Quic(Arc<Owner>),
    /// A browser on WebTransport ([`crate::web`]).
    Web(Arc<WebOwner>),
}

/// Ends a browser session when its last handle goes.
#[derive(Debug)]
pub(crate) struct WebOwner(Arc<WebCore>);

impl Drop for WebOwner {
    fn drop(&mut self) {
        self.0.end(SessionEnd {
            code: AppErrorCode::NoError,
            reason: "the session handle was dropped".into(),
            by_peer: false,
        });
    }
}

impl ServerSession {
    fn quic(core: Arc<Core>) -> Self {
        Self {
            kind: Kind::Quic(Arc::new(Owner(core))),
        }
    }

    pub(crate) fn web(core: Arc<WebCore>) -> Self {
        Self {
            kind: Kind::Web(Arc::new(WebOwner(core))),
        }
    }

    /// True for a browser handset (WebTransport): sound to it, but no
    /// microphone, clipboard, radio or resume.
    #[must_use]
    pub fn is_browser(&self) -> bool {
        matches!(self.kind, Kind::Web(_))
    }

    /// The session id (`Welcome.session_id`).
    #[must_use]
    pub fn id(&self) -> &str {
        match &self.kind {
            Kind::Quic(o) => &o.0.id,
            Kind::Web(w) => w.0.id(),
        }
    }

    /// The handset's certificate fingerprint (a browser's: its key's).
    #[must_use]
    pub fn handset(&self) -> Fingerprint {
        match &self.kind {
            // Always set on the host side.
            Kind::Quic(o) => {
                o.0.handset
                    .unwrap_or_else(|| Fingerprint::from_bytes([0; 32]))
            }
            Kind::Web(w) => w.0.handset(),
        }
    }

    /// The handset's `Hello` (capabilities, screen, name; without tokens).
    #[must_use]
    pub fn hello(&self) -> &Hello {
        match &self.kind {
            Kind::Quic(o) => &o.0.hello,
            Kind::Web(w) => w.0.hello(),
        }
    }

    /// The `Welcome` sent to the handset (phone name, display, ...).
    #[must_use]
    pub fn welcome(&self) -> Welcome {
        match &self.kind {
            Kind::Quic(o) => lock(&o.0.welcome).clone(),
            Kind::Web(w) => w.0.welcome(),
        }
    }

    /// The handset's current address (changes on migration), `None` while
    /// disconnected.
    #[must_use]
    pub fn remote_address(&self) -> Option<SocketAddr> {
        match &self.kind {
            Kind::Quic(o) => o.0.current_link().map(|l| l.conn.remote_address()),
            Kind::Web(w) => w.0.remote_address(),
        }
    }

    /// True while a connection serves the session.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        match &self.kind {
            Kind::Quic(o) => o.0.is_connected(),
            Kind::Web(w) => w.0.is_connected(),
        }
    }

    /// What the current connection's sender knows of its path, for pacing
    /// video to what the path carries; `None` while disconnected.
    #[must_use]
    pub fn path(&self) -> Option<PathInfo> {
        match &self.kind {
            Kind::Quic(o) => o.0.current_link().map(|l| PathInfo::of(&l.conn)),
            Kind::Web(w) => w.0.path(),
        }
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> SessionStats {
        match &self.kind {
            Kind::Quic(o) => o.0.stats(),
            Kind::Web(w) => w.0.stats(),
        }
    }

    /// Resolves when the session is over, with why. Cancel safe.
    pub async fn ended(&self) -> SessionEnd {
        match &self.kind {
            Kind::Quic(o) => o.0.ended().await,
            Kind::Web(w) => w.0.ended().await,
        }
    }

    /// Sends a control message to the handset (`ActiveSensors`,
    /// `VideoConfig`, `Stats`, `RadioState`, ...). Waits while the session
    /// is disconnected. A browser takes `ActiveSensors` and `VideoConfig`;
    /// the rest is skipped for it.
    ///
    /// # Errors
    ///
    /// [`BridgeError::InvalidArgument`] for `Hello`/`Welcome`/`Close`/`Pong`
    /// (the bridge sends those) or a message over 64 KiB;
    /// [`BridgeError::Disconnected`] if the connection died mid-write;
    /// [`BridgeError::SessionEnded`].
    pub async fn send_control(&self, msg: control_message::Msg) -> Result<(), BridgeError> {
        match &self.kind {
            Kind::Quic(o) => o.0.send_control(msg).await,
            Kind::Web(w) => w.0.send_control(msg).await,
        }
    }

    /// The next control message from the handset (`ClockPing` is answered
    /// by the bridge and not returned).
    ///
    /// # Errors
    ///
    /// [`BridgeError::SessionEnded`].
    pub async fn recv_control(&self) -> Result<ControlMessage, BridgeError> {
        match &self.kind {
            Kind::Quic(o) => o.0.recv_control().await,
            Kind::Web(w) => w.0.recv_control().await,
        }
    }

    /// The next applied sensor sample (stale samples are already dropped).
    ///
    /// # Errors
    ///
    /// [`BridgeError::SessionEnded`].
    pub async fn recv_sensor(&self) -> Result<SensorSample, BridgeError> {
        match &self.kind {
            Kind::Quic(o) => o.0.recv_sensor().await,
            Kind::Web(w) => w.0.recv_sensor().await,
        }
    }

    /// Sends one frame of the phone's sound as a datagram (only to a
    /// handset whose `Hello.audio` asked for playback). Dropped and counted
    /// while disconnected or when the send buffer is full.
    ///
    /// # Errors
    ///
    /// [`BridgeError::InvalidArgument`] when the handset did not ask for
    /// sound or the frame is too large;
    /// [`BridgeError::SessionEnded`].
    pub fn send_audio(&self, frame: AudioFrame) -> Result<(), BridgeError> {
        match &self.kind {
            Kind::Quic(o) => o.0.send_audio(frame),
            Kind::Web(w) => w.0.send_audio(frame),
        }
    }

    /// The next frame of the handset's microphone, in arrival order (a
    /// browser sends none: this waits for the end).
    ///
    /// # Errors
    ///
    /// [`BridgeError::SessionEnded`].
    pub async fn recv_audio(&self) -> Result<AudioFrame, BridgeError> {
        match &self.kind {
            Kind::Quic(o) => o.0.recv_audio().await,
            Kind::Web(w) => w.0.never().await,
        }
    }

    /// The next input event, in the order the handset sent them (duplicates
    /// across a resume are dropped by seq).
    ///
    /// # Errors
    ///
    /// [`BridgeError::SessionEnded`].
    pub async fn recv_input(&self) -> Result<InputMessage, BridgeError> {
        match &self.kind {
            Kind::Quic(o) => o.0.recv_input().await,
            Kind::Web(w) => w.0.recv_input().await,
        }
    }

    /// Starts a new video GOP stream with `header` (its `gop_id` is
    /// assigned by the bridge). Any previous GOP stream still unfinished or
    /// undelivered is reset.
    ///
    /// # Errors
    ///
    /// [`BridgeError::Disconnected`], [`BridgeError::SessionEnded`].
    pub async fn start_gop(&self, header: VideoStreamHeader) -> Result<GopWriter, BridgeError> {
        match &self.kind {
            Kind::Quic(o) => o.0.start_gop(header).await.map(GopWriter::quic),
            Kind::Web(w) => w.0.start_gop(header).await.map(GopWriter::web),
        }
    }

    /// Queues an H4 packet for the handset's radio. Delivered exactly once
    /// and in order, across resumes. Waits while the queue is full.
    ///
    /// # Errors
    ///
    /// [`BridgeError::SessionEnded`]; [`BridgeError::InvalidArgument`] for
    /// a browser (it has no radio to lend).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled call has not queued the packet.
    pub async fn send_hci(&self, packet: H4Packet) -> Result<(), BridgeError> {
        match &self.kind {
            Kind::Quic(o) => o.0.send_hci(packet).await,
            Kind::Web(_) => Err(BridgeError::InvalidArgument(
                "a browser handset has no radio to lend".into(),
            )),
        }
    }

    /// The next H4 packet from the handset's radio (exactly once, in order;
    /// a browser has none: this waits for the end).
    ///
    /// # Errors
    ///
    /// [`BridgeError::SessionEnded`].
    pub async fn recv_hci(&self) -> Result<H4Packet, BridgeError> {
        match &self.kind {
            Kind::Quic(o) => o.0.recv_hci().await,
            Kind::Web(w) => w.0.never().await,
        }
    }

    /// Ends the session: sends `Close` and closes the connection with the
    /// reason's error code. The handset will not resume.
    pub async fn close(&self, reason: CloseReason, message: &str) {
        match &self.kind {
            Kind::Quic(o) => o.0.close(reason, message).await,
            Kind::Web(w) => w.0.close(reason, message).await,
        }
    }
}

/// The sender's view of a connection's path ([`ServerSession::path`]).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct PathInfo {
    /// Identifies the connection (a resume starts a new one, with its
    /// counters from zero).
    pub connection: usize,
    /// UDP payload bytes sent on this connection so far: what left the
    /// host, as opposed to what waits in the connection's send buffer.
    pub wire_bytes: u64,
    /// The smoothed round-trip time.
    pub rtt: Duration,
}

impl PathInfo {
    pub(crate) fn of(conn: &quinn::Connection) -> Self {
        let s = conn.stats();
        Self {
            connection: conn.stable_id(),
            wire_bytes: s.udp_tx.bytes,
            rtt: s.path.rtt,
        }
    }
}
