//! The crate's one error type.

use sensor_proto::ProtoError;
use sensor_proto::bridge::AppErrorCode;

use crate::identity::Fingerprint;
use crate::session::SessionEnd;

/// Everything that can go wrong in `device-bridge`.
///
/// Use [`BridgeError::app_error_code`] to show a handset user *why* the host
/// refused or ended a session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// A QUIC connection could not be started (bad address, endpoint closed).
    #[error("cannot start the connection: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The QUIC connection failed while it was being set up.
    #[error("connection failed: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The session's connection is down right now (the session may still be
    /// resumed: retry after [`crate::ClientSession::wait_connected`], or
    /// simply later).
    #[error("the session is not connected right now")]
    Disconnected,
    /// The video GOP this writer belongs to was superseded by a newer one
    /// (its stream was reset). Start writing the newer GOP instead.
    #[error("video GOP {gop_id} was superseded by a newer GOP")]
    GopSuperseded {
        /// The superseded GOP.
        gop_id: u64,
    },
    /// The TLS + Hello/Welcome handshake did not finish in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// A key, certificate or PEM file is unusable.
    #[error("identity: {0}")]
    Identity(String),
    /// The caller passed something the protocol cannot carry.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// I/O on the local system (socket, identity files).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The host's public key is not the pinned one: the handset is talking
    /// to the wrong host (or to an attacker). Never retry silently.
    #[error("host key pin mismatch: expected {expected}, host presented {actual}")]
    PinMismatch {
        /// The pin the handset learned at enrollment.
        expected: Fingerprint,
        /// The SPKI fingerprint the host presented.
        actual: Fingerprint,
    },
    /// The peer broke the bridge protocol (detected locally).
    #[error("protocol error ({code:?}): {message}")]
    Protocol {
        /// The code the connection is closed with.
        code: AppErrorCode,
        /// What was wrong.
        message: String,
    },
    /// The host refused the handset during the handshake (unknown or revoked
    /// handset, bad enrollment token, phone not available, ...). `reason` is
    /// human-readable and meant for the handset's user.
    #[error("refused by the host ({code:?}): {reason}")]
    Refused {
        /// Why, as a stable code.
        code: AppErrorCode,
        /// Why, for humans.
        reason: String,
    },
    /// The session is over (closed by either side, or not resumed within
    /// its resume window).
    #[error("session ended: {0}")]
    SessionEnded(SessionEnd),
    /// TLS configuration failed.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// The enrollment token has expired.
    #[error("enrollment token expired")]
    TokenExpired,
    /// The enrollment token is not one this host issued (bad format or MAC).
    #[error("enrollment token invalid")]
    TokenInvalid,
    /// Bytes from the wire could not be framed or decoded.
    #[error("wire: {0}")]
    Wire(#[from] ProtoError),
}

impl BridgeError {
    /// The application error code that best describes this error, e.g. to
    /// pick a message for the handset's user.
    #[must_use]
    pub fn app_error_code(&self) -> AppErrorCode {
        match self {
            Self::Protocol { code, .. } | Self::Refused { code, .. } => *code,
            Self::SessionEnded(end) => end.code,
            Self::TokenExpired => AppErrorCode::TokenExpired,
            Self::TokenInvalid => AppErrorCode::TokenInvalid,
            Self::Wire(e) => e.app_error_code(),
            Self::PinMismatch { .. } => AppErrorCode::Unauthorized,
            Self::Connection(quinn::ConnectionError::TimedOut) | Self::HandshakeTimeout => {
                AppErrorCode::IdleTimeout
            }
            Self::Connect(_)
            | Self::Connection(_)
            | Self::Disconnected
            | Self::GopSuperseded { .. }
            | Self::Identity(_)
            | Self::InvalidArgument(_)
            | Self::Io(_)
            | Self::Tls(_) => AppErrorCode::InternalError,
        }
    }

    pub(crate) fn protocol(code: AppErrorCode, message: impl Into<String>) -> Self {
        Self::Protocol {
            code,
            message: message.into(),
        }
    }
}
