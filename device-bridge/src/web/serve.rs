//! One browser connection: HTTP/3, the WebTransport CONNECT, the key proof,
//! admission, then the session's reader tasks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use bytes::{Buf as _, Bytes, BytesMut};
use http::{Method, Response, StatusCode};
use sensor_proto::bridge::{
    AppErrorCode, ControlMessage, Hello, InputMessage, PROTOCOL_VERSION, PhoneDisplay, Welcome,
};
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::sync::watch;
use tokio::time::Instant;

use super::protocol::{self, Action, Down, MAX_LINE, Up};
use super::{Counters, WebCore};
use crate::auth::{AuthRequest, Authorizer, Refusal};
use crate::identity::Fingerprint;
use crate::limits::RateLimitedLog;
use crate::sensors::{LatestWins, SampleVerdict};
use crate::server::ServerSession;
use crate::session::Inbox;
use crate::session::bump;
use crate::session::{SessionEnd, lock};
use crate::util::{hex_encode, random_bytes, unix_nanos};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// DER prefix of an ECDSA P-256 SubjectPublicKeyInfo with an uncompressed
/// point (what WebCrypto exports): the 65-byte point follows.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// What the server hands a browser connection.
pub(crate) struct WebContext {
    pub(crate) authorizer: Arc<dyn Authorizer>,
    pub(crate) host_version: String,
    pub(crate) connection_window: u32,
    pub(crate) accepted: tokio::sync::mpsc::Sender<ServerSession>,
    /// Origins a session may come from.
    pub(crate) origins: Vec<String>,
    /// The admitted browser sessions, for the count and for shutdown.
    pub(crate) live: std::sync::Mutex<Vec<std::sync::Weak<WebCore>>>,
}

impl WebContext {
    pub(crate) fn live_count(&self) -> usize {
        let mut live = lock(&self.live);
        live.retain(|w| w.upgrade().is_some_and(|c| c.is_connected()));
        live.len()
    }

    /// Ends every browser session with `SHUTDOWN`.
    pub(crate) fn end_all(&self, message: &str) {
        let cores: Vec<Arc<WebCore>> = lock(&self.live)
            .drain(..)
            .filter_map(|w| w.upgrade())
            .collect();
        for core in cores {
            core.end(SessionEnd {
                code: AppErrorCode::Shutdown,
                reason: message.to_owned(),
                by_peer: false,
            });
        }
    }
}

/// Reads `\n`-delimited lines of at most [`MAX_LINE`] bytes.
pub(crate) struct Lines<R> {
    r: R,
    buf: BytesMut,
    /// How much of `buf` is known to hold no newline.
    scanned: usize,
}

impl<R: AsyncRead + Unpin> Lines<R> {
    pub(crate) fn new(r: R) -> Self {
        Self {
            r,
            buf: BytesMut::new(),
            scanned: 0,
        }
    }

    /// The next line without its `\n`; `Ok(None)` at a clean end.
    pub(crate) async fn next(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            if let Some(at) = self.buf[self.scanned..].iter().position(|b| *b == b'\n') {
                let i = self.scanned + at;
                self.scanned = 0;
                let mut line = self.buf.split_to(i + 1);
                line.truncate(i);
                return Ok(Some(line.freeze()));
            }
            self.scanned = self.buf.len();
            if self.buf.len() > MAX_LINE {
                return Err(format!("a control line is longer than {MAX_LINE} bytes"));
            }
            match self.r.read_buf(&mut self.buf).await {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) => return Err("the control stream ended mid-line".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("control stream: {e}")),
            }
        }
    }
}

fn refuse_conn(conn: &quinn::Connection, code: AppErrorCode, message: &str) {
    // Anyone can cause a refusal: at most a few lines a second.
    static LOG: RateLimitedLog = RateLimitedLog::new(std::time::Duration::from_millis(200));
    if let Some(suppressed) = LOG.allow() {
        tracing::info!(remote = %conn.remote_address(), code = ?code, suppressed, "refusing browser handset: {message}");
    }
    conn.close(
        crate::wire::code_varint(code),
        crate::wire::reason_bytes(message),
    );
}

/// Serves one connection that chose ALPN `h3` until its session is admitted
/// (then the session's own tasks take over) or refused.
pub(crate) async fn serve_web(conn: quinn::Connection, deadline: Instant, cx: Arc<WebContext>) {
    match tokio::time::timeout_at(deadline, handshake(conn.clone(), &cx)).await {
        Ok(Ok(core)) => {
            lock(&cx.live).push(Arc::downgrade(&core));
            // Handing the session to the host app may wait; the handshake
            // deadline is over by then.
            let _ = cx.accepted.send(ServerSession::web(core)).await;
        }
        Ok(Err((code, message))) => refuse_conn(&conn, code, &message),
        Err(_) => refuse_conn(
            &conn,
            AppErrorCode::ProtocolViolation,
            "no WebTransport session and proof within the handshake timeout",
        ),
    }
}

type Fail = (AppErrorCode, String);

fn violation(msg: impl Into<String>) -> Fail {
    (AppErrorCode::ProtocolViolation, msg.into())
}

async fn handshake(conn: quinn::Connection, cx: &WebContext) -> Result<Arc<WebCore>, Fail> {
    let mut h3_conn: h3::server::Connection<h3_quinn::Connection, Bytes> = h3::server::builder()
        .enable_webtransport(true)
        .enable_extended_connect(true)
        .enable_datagram(true)
        .max_webtransport_sessions(1)
        .send_grease(true)
        .build(h3_quinn::Connection::new(conn.clone()))
        .await
        .map_err(|e| violation(format!("HTTP/3: {e}")))?;
    // Plain HTTP/3 requests get a short answer; the first WebTransport
    // CONNECT becomes the session.
    let (request, stream) = loop {
        let resolver = match h3_conn.accept().await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(violation("the browser closed before a session")),
            Err(e) => return Err(violation(format!("HTTP/3: {e}"))),
        };
        let (request, mut stream) = resolver
            .resolve_request()
            .await
            .map_err(|e| violation(format!("HTTP/3 request: {e}")))?;
        let wt = request.method() == Method::CONNECT
            && request.extensions().get::<h3::ext::Protocol>()
                == Some(&h3::ext::Protocol::WEB_TRANSPORT);
        if wt {
            // Only the host's own page may open a session: another site
            // could otherwise make its visitors' browsers knock here.
            let origin = request
                .headers()
                .get("origin")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let why = if request.uri().path() != super::WT_PATH {
                Some(format!("no WebTransport at {}", request.uri().path()))
            } else if !cx.origins.contains(&origin) {
                Some(format!(
                    "sessions from the origin {origin:?} are not accepted"
                ))
            } else {
                None
            };
            if let Some(why) = why {
                let answer = Response::builder()
                    .status(StatusCode::FORBIDDEN)
                    .body(())
                    .unwrap_or_default();
                let _ = stream.send_response(answer).await;
                let _ = stream.finish().await;
                return Err((AppErrorCode::Unauthorized, why));
            }
            break (request, stream);
        }
        let answer = Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header("content-type", "text/plain")
            .body(())
            .unwrap_or_default();
        let _ = stream.send_response(answer).await;
        let _ = stream
            .send_data(Bytes::from_static(
                b"vphone: this port speaks WebTransport to browser handsets; open the host's page over HTTPS\n",
            ))
            .await;
        let _ = stream.finish().await;
    };
    let session = h3_webtransport::server::WebTransportSession::accept(request, stream, h3_conn)
        .await
        .map_err(|e| violation(format!("WebTransport: {e}")))?;
    let (send, recv) = loop {
        match session.accept_bi().await {
            Ok(Some(h3_webtransport::server::AcceptedBi::BidiStream(_, s))) => {
                use h3::quic::BidiStream as _;
                break s.split();
            }
            Ok(Some(h3_webtransport::server::AcceptedBi::Request(..))) => {}
            Ok(None) => return Err(violation("the page closed before its control stream")),
            Err(e) => return Err(violation(format!("WebTransport: {e}"))),
        }
    };
    let mut lines = Lines::new(recv);
    let mut send = send;
    // From here on a refusal is told on the control stream first, so the
    // page can say why (a QUIC close alone reaches a page without reason).
    let (handset, mut bridge_hello, granted) =
        match prove_and_admit(&conn, cx, &mut send, &mut lines).await {
            Ok(x) => x,
            Err((code, message)) => {
                let closed = Down::Closed {
                    code: protocol::code_name(code),
                    message: message.clone(),
                };
                let told = tokio::time::timeout(
                    std::time::Duration::from_millis(200),
                    write_down(&mut send, &closed),
                );
                if matches!(told.await, Ok(Ok(()))) {
                    let _ =
                        tokio::time::timeout(std::time::Duration::from_millis(300), conn.closed())
                            .await;
                }
                return Err((code, message));
            }
        };
    let remote = conn.remote_address();
    if let Some(name) = &granted.handset_name {
        bridge_hello.handset_name.clone_from(name);
    }
    bridge_hello.enrollment_token = None;
    conn.set_receive_window(quinn::VarInt::from_u32(cx.connection_window));
    let id =
        hex_encode(&random_bytes::<8>().map_err(|e| (AppErrorCode::InternalError, e.to_string()))?);
    let display: PhoneDisplay = granted.display;
    let welcome = Welcome {
        session_id: id.clone(),
        resume_token: Vec::new().into(),
        resume_window_ms: 0,
        phone_name: granted.phone_name.clone(),
        display: Some(display),
        resumed: false,
        hci_rx_acked: 0,
        protocol_version: PROTOCOL_VERSION,
        host_version: cx.host_version.clone(),
    };
    write_down(
        &mut send,
        &Down::Welcome {
            session: id.clone(),
            phone: granted.phone_name.clone(),
            width: display.width_px,
            height: display.height_px,
            handset: bridge_hello.handset_name.clone(),
            host_version: cx.host_version.clone(),
        },
    )
    .await?;
    let allowed: Vec<_> = bridge_hello
        .capabilities
        .iter()
        .filter_map(|c| sensor_proto::bridge::SensorKind::try_from(c.kind).ok())
        .collect();
    let (ended, _) = watch::channel(None);
    let audio_out = session.datagram_sender();
    let core = Arc::new(WebCore {
        id,
        hello: bridge_hello,
        welcome,
        handset,
        conn: conn.clone(),
        wt: session,
        control_tx: tokio::sync::Mutex::new(send),
        control_in: Inbox::new(super::INBOX),
        sensors_in: Inbox::new(super::INBOX),
        input_in: Inbox::new(super::INBOX),
        ended,
        counters: Counters::default(),
        stale: AtomicU64::new(0),
        frame_seq: AtomicU64::new(0),
        gop_seq: AtomicU64::new(0),
        current_gop: std::sync::Mutex::new(None),
        tasks: std::sync::Mutex::new(Vec::new()),
        audio_out: std::sync::Mutex::new(audio_out),
    });
    tracing::info!(session = %core.id, handset = %handset, phone = %granted.phone_name, %remote, "browser session started");
    let tasks = vec![
        tokio::spawn(control_reader(core.clone(), lines)),
        tokio::spawn(datagram_reader(core.clone(), LatestWins::new(allowed))),
        tokio::spawn(uni_drain(core.clone())),
        tokio::spawn(watch_conn(core.clone())),
    ];
    lock(&core.tasks).extend(tasks);
    Ok(core)
}

/// The page's `hello`, the key proof and the host's access check.
async fn prove_and_admit<W, R>(
    conn: &quinn::Connection,
    cx: &WebContext,
    send: &mut W,
    lines: &mut Lines<R>,
) -> Result<(Fingerprint, Hello, crate::auth::Authorized), Fail>
where
    W: tokio::io::AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let Up::Hello(hello) = next_up(lines).await? else {
        return Err(violation("the first control message must be hello"));
    };
    let spki = B64
        .decode(hello.spki.as_bytes())
        .map_err(|_| violation("hello.spki is not base64"))?;
    if spki.len() != P256_SPKI_PREFIX.len() + 65
        || spki[..P256_SPKI_PREFIX.len()] != P256_SPKI_PREFIX
    {
        return Err((
            AppErrorCode::Unauthorized,
            "hello.spki must be an ECDSA P-256 public key".into(),
        ));
    }
    let bridge_hello = protocol::to_hello(&hello)?;
    let nonce: [u8; 32] =
        random_bytes().map_err(|e| (AppErrorCode::InternalError, e.to_string()))?;
    write_down(
        send,
        &Down::Challenge {
            nonce: B64.encode(nonce),
        },
    )
    .await?;
    let sig = match next_up(lines).await? {
        Up::Proof { sig } => B64
            .decode(sig.as_bytes())
            .map_err(|_| violation("proof.sig is not base64"))?,
        _ => return Err(violation("the second control message must be proof")),
    };
    let mut signed = protocol::PROOF_CONTEXT.to_vec();
    signed.extend_from_slice(&nonce);
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        &spki[P256_SPKI_PREFIX.len()..],
    )
    .verify(&signed, &sig)
    .map_err(|_| {
        (
            AppErrorCode::Unauthorized,
            "the page's proof does not match its key".to_owned(),
        )
    })?;
    let handset = Fingerprint::of_spki(&spki);
    let remote = conn.remote_address();
    let authorizer = cx.authorizer.clone();
    let h2 = bridge_hello.clone();
    let granted = tokio::task::spawn_blocking(move || {
        authorizer.authorize(&AuthRequest {
            handset,
            hello: &h2,
            remote,
            resuming: None,
        })
    })
    .await
    .unwrap_or_else(|_| {
        Err(Refusal::new(
            AppErrorCode::InternalError,
            "the host's access check failed",
        ))
    })
    .map_err(|r| (r.code, r.message))?;
    Ok((handset, bridge_hello, granted))
}

async fn next_up<R: AsyncRead + Unpin>(lines: &mut Lines<R>) -> Result<Up, Fail> {
    let line = lines
        .next()
        .await
        .map_err(violation)?
        .ok_or_else(|| violation("the control stream ended"))?;
    protocol::decode_line(&line)
}

async fn write_down<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, msg: &Down) -> Result<(), Fail> {
    use tokio::io::AsyncWriteExt as _;
    let mut line =
        serde_json::to_vec(msg).map_err(|e| (AppErrorCode::InternalError, e.to_string()))?;
    line.push(b'\n');
    w.write_all(&line)
        .await
        .map_err(|e| violation(format!("control stream: {e}")))
}

fn fail(core: &WebCore, code: AppErrorCode, message: String) {
    tracing::warn!(session = %core.id, code = ?code, "closing the browser session: {message}");
    core.end(SessionEnd {
        code,
        reason: message,
        by_peer: false,
    });
}

async fn control_reader<R: AsyncRead + Unpin>(core: Arc<WebCore>, mut lines: Lines<R>) {
    let mut input_seq = 0u64;
    loop {
        let action = match next_up(&mut lines)
            .await
            .and_then(protocol::after_admission)
        {
            Ok(a) => a,
            Err((code, message)) => {
                if core.conn.close_reason().is_some() {
                    return;
                }
                return fail(&core, code, message);
            }
        };
        bump(&core.counters.control_received);
        match action {
            Action::Ping { id, c } => {
                let r = unix_nanos();
                let pong = Down::Pong {
                    id,
                    c,
                    r,
                    s: unix_nanos(),
                };
                // Answered here, as the bridge answers a native ClockPing.
                let _ = core.send_down(&pong).await;
            }
            Action::Control(msg) => {
                let _ = core
                    .control_in
                    .tx
                    .try_send(ControlMessage { msg: Some(msg) });
            }
            Action::Input(event) => {
                input_seq += 1;
                let msg = InputMessage {
                    seq: input_seq,
                    event: Some(event),
                };
                bump(&core.counters.input_received);
                // Input is reliable: wait for room rather than drop.
                if core.input_in.tx.send(msg).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn datagram_reader(core: Arc<WebCore>, mut filter: LatestWins) {
    let mut reader = core.wt.datagram_reader();
    loop {
        let Ok(datagram) = reader.read_datagram().await else {
            return;
        };
        let samples = match protocol::decode_sensors(datagram.into_payload().chunk()) {
            Ok(s) => s,
            Err((code, message)) => return fail(&core, code, message),
        };
        for sample in samples {
            match filter.check(&sample) {
                Err(unknown) => {
                    return fail(
                        &core,
                        AppErrorCode::UnknownSensor,
                        format!("{unknown} (not in hello.sensors)"),
                    );
                }
                Ok(SampleVerdict::Apply) => {
                    if core.sensors_in.tx.try_send(sample).is_ok() {
                        bump(&core.counters.sensors_received);
                    } else {
                        bump(&core.counters.sensors_dropped);
                    }
                }
                Ok(_) => {
                    core.stale.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// A page sends nothing on unidirectional streams; accepting them keeps
/// the HTTP/3 connection's own streams served.
async fn uni_drain(core: Arc<WebCore>) {
    while let Ok(Some((_, mut stream))) = core.wt.accept_uni().await {
        let core = core.clone();
        tokio::spawn(async move {
            let mut sink = [0u8; 1024];
            let mut total = 0usize;
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
                total += n;
                if total > 64 * 1024 {
                    return fail(
                        &core,
                        AppErrorCode::WrongStreamDirection,
                        "the page sent data on a unidirectional stream".into(),
                    );
                }
            }
        });
    }
}

async fn watch_conn(core: Arc<WebCore>) {
    let err = core.conn.closed().await;
    let end = match &err {
        quinn::ConnectionError::ApplicationClosed(c) => SessionEnd {
            code: AppErrorCode::from_code(c.error_code.into_inner())
                .unwrap_or(AppErrorCode::NoError),
            reason: format!("the page closed the session: {err}"),
            by_peer: true,
        },
        // Whoever closed it locally ended the session already.
        quinn::ConnectionError::LocallyClosed => return,
        quinn::ConnectionError::TimedOut => SessionEnd {
            code: AppErrorCode::IdleTimeout,
            reason: "the page went silent (idle timeout)".into(),
            by_peer: false,
        },
        _ => SessionEnd {
            code: AppErrorCode::NoError,
            reason: format!("connection lost: {err}"),
            by_peer: false,
        },
    };
    core.end(end);
}
