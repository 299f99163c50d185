//! `device-bridge`: the handset <-> host session of vphone, over ONE QUIC
//! connection (quinn 0.11, rustls 0.23 with the ring provider, TLS 1.3,
//! ALPN `vphone/1`).
//!
//! The host (`cloud-host`) runs a [`BridgeServer`] and gets one
//! [`ServerSession`] per handset; the handset (`mobile-client`) opens a
//! [`ClientSession`]. Both session handles survive network trouble: the
//! connection migrates when the handset's address changes, and when it dies
//! the handset reconnects and *resumes* the same session.
//!
//! # Channels
//!
//! | Channel | QUIC primitive | Direction | Content | API |
//! |---|---|---|---|---|
//! | control | first bidi stream (opened by the handset) | both | length-delimited `ControlMessage`: `Hello`/`Welcome`, clock sync, `ActiveSensors`, `VideoConfig`, `Stats`, `RadioState`, `Close` | `send_control` / `recv_control` |
//! | sensors | datagrams | handset -> host | one `Datagram` (`batch`) per datagram; per-sensor seq, **latest wins** ([`LatestWins`]) | [`ClientSession::send_sensors`] / [`ServerSession::recv_sensor`] |
//! | audio | datagrams | both, only as `Hello.audio` asked | one `Datagram` (`audio`: one Opus `AudioFrame`); a lost or late frame is concealed, never retransmitted | `send_audio` / `recv_audio` |
//! | input | uni stream, kind byte `INPUT` | handset -> host | length-delimited `InputMessage`, reliable and ordered | [`ClientSession::send_input`] / [`ServerSession::recv_input`] |
//! | video | one uni stream per GOP, kind byte `VIDEO` | host -> handset | `VideoStreamHeader`, then per frame a `VideoFrameHeader` + payload; a newer GOP resets an unfinished older one | [`ServerSession::start_gop`] + [`GopWriter`] / [`ClientSession::recv_video`] |
//! | hci | bidi stream (opened by the handset), kind byte `HCI` | both | length-delimited `HciMessage`: numbered `HciPacket`s and cumulative `HciAck`s | `send_hci` / `recv_hci` |
//!
//! Every stream except control starts with one `StreamKind` byte. A stream
//! of a kind that must not come from that peer (e.g. a video stream from
//! the handset, a bidirectional input stream) closes the session with
//! `WRONG_STREAM_DIRECTION`; an unknown kind byte with
//! `PROTOCOL_VIOLATION`. Every length-delimited message is limited to
//! 64 KiB (`MESSAGE_TOO_LARGE`); undecodable protobuf gives
//! `MALFORMED_MESSAGE`; an H4 packet whose length fields disagree with its
//! size gives `BAD_H4`; a sensor sample of a kind the handset did not
//! advertise in `Hello.capabilities` gives `UNKNOWN_SENSOR`. Each such close
//! logs one `warn` line naming the cause; other sessions are unaffected,
//! and no peer input can make the bridge panic.
//!
//! # Authentication and authorization
//!
//! * **Host identity**: a key pair and self-signed certificate created on
//!   first start in the host's data dir ([`HostIdentity::load_or_create`];
//!   an operator-provided chain works too, [`HostIdentity::from_pem`]). The
//!   handset *pins* the SHA-256 of the host certificate's
//!   SubjectPublicKeyInfo ([`Pin`], [`HostIdentity::pin`]), learned at
//!   enrollment; no web PKI. A wrong host yields
//!   [`BridgeError::PinMismatch`].
//! * **Handset identity**: the handset's own key pair and self-signed
//!   certificate ([`HandsetIdentity`]), sent as the TLS client certificate
//!   (mutual TLS, required). The host knows handsets by its SPKI
//!   [`Fingerprint`].
//! * **Enrollment**: the operator mints a single-use, expiring token
//!   ([`TokenKey`], HMAC-SHA256); the handset sends it once in
//!   `Hello.enrollment_token` together with its certificate; the host's
//!   [`Authorizer`] records the fingerprint and the token's id. Afterwards
//!   the certificate alone suffices.
//! * **Admission**: after the TLS handshake the host reads `Hello` (with a
//!   timeout) and asks its [`Authorizer`]. A refusal (unknown, revoked or
//!   expired handset, bad/reused/expired token, phone not found, ...) is
//!   sent as CONNECTION_CLOSE with the `AppErrorCode` and a human-readable
//!   reason; the client returns it as [`BridgeError::Refused`]. No session
//!   state exists for a refused handset. [`MemoryAuthorizer`] is an
//!   in-memory implementation for tests and demos.
//!
//! # Resume protocol
//!
//! `Welcome` carries a `session_id`, a secret `resume_token` and the resume
//! window (default 10 s, [`BridgeServerConfig::resume_window`]). When the
//! connection dies (idle timeout: keep-alive 1 s, idle 4 s by default,
//! [`TransportSettings`]), the host keeps the session *detached* for the
//! window; the handset reconnects (new TLS handshake, same certificate) and
//! sends `Hello{resume_token, hci_rx_acked}`. The host checks that the
//! token belongs to that certificate and that the handset is still allowed,
//! stops whatever is left of the old connection, and answers
//! `Welcome{resumed: true, hci_rx_acked}`. The session object the host app
//! holds simply continues: the phone stays attached.
//!
//! HCI is exactly-once across resumes ([`hci`]): each direction numbers its
//! packets from 1 for the whole session and keeps them until the peer's
//! cumulative `HciAck`; on resume each side drops what the other reports as
//! received and replays the rest in order, and receivers drop any seq they
//! already delivered. Input continues with its seq (the host drops
//! duplicates; an event cut off mid-write may be lost); sensors are lossy by
//! design; video restarts with a new GOP.
//!
//! If the handset does not come back within the window the host ends the
//! session with `RESUME_EXPIRED` ([`ServerSession::ended`] resolves) so the
//! host app can clean up; a handset that tries later is refused with
//! `RESUME_EXPIRED`. A deliberate close (either side's `close`, or an
//! application error code) ends the session at once, without resume.
//!
//! # Migration
//!
//! [`ClientSession::rebind`] moves the handset to a new UDP socket; QUIC
//! connection migration keeps the same connection, streams and session,
//! without a new handshake.
//!
//! # Browser handsets
//!
//! With [`BridgeServerConfig::web`] set, the same endpoint also speaks HTTP/3
//! and WebTransport (ALPN `h3`) to browsers; an admitted browser is a
//! [`ServerSession`] too ([`ServerSession::is_browser`]). See [`web`].
//!
//! # Sans-IO cores
//!
//! [`hci::HciSender`]/[`hci::HciReceiver`] (sequencing, acks, replay) and
//! [`LatestWins`] (sensor filter) are plain structs without I/O, unit-tested
//! on their own; the async driver around them lives in the session module.

mod auth;
mod client;
pub mod clock;
mod config;
mod error;
pub mod hci;
mod identity;
mod limits;
mod priority;
mod sensors;
mod server;
mod session;
pub mod stats;
pub mod tls;
mod token;
mod util;
pub mod web;
mod wire;

pub use auth::{
    AuthRequest, Authorized, Authorizer, HandsetRecord, MemoryAuthorizer, Redirect, Refusal,
};
pub use client::{BridgeClientConfig, ClientSession};
pub use config::TransportSettings;
pub use error::BridgeError;
pub use identity::{Fingerprint, HandsetIdentity, HostIdentity, Pin};
pub use limits::AdmissionLimits;
pub use priority::{
    BULK_NICE, LATENCY_RT_PRIORITY, LatencyPriority, bulk_thread_priority,
    latency_priority_outcome, latency_thread_priority,
};
pub use sensors::{LatestWins, SampleVerdict, UnknownSensor};
pub use server::{
    BridgeServer, BridgeServerConfig, DEFAULT_RESUME_WINDOW, PathInfo, ServerSession,
};
pub use session::{GopWriter, SessionEnd, SessionStats, VideoFrame};
pub use token::{TokenId, TokenKey, VerifiedToken};
pub use util::random_token;

/// Re-exported wire types used in this crate's API.
pub use sensor_proto::bridge as proto;
