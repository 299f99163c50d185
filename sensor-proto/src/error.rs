//! The crate's error type.

use crate::bridge::AppErrorCode;

/// Errors from decoding wire data (framing, messages, H4 packets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// A length-delimited message announced (or would need) more bytes than
    /// allowed.
    #[error("message of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Announced or encoded length of the message body, bytes.
        len: u64,
        /// The limit, bytes.
        max: usize,
    },
    /// The varint length prefix is longer than 10 bytes or overflows u64.
    #[error("invalid varint length prefix")]
    InvalidLengthPrefix,
    /// The message body is not a valid protobuf encoding of the expected
    /// message.
    #[error("malformed message: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The stream ended in the middle of a message.
    #[error("stream ended inside a message ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes left over that do not form a whole message.
        buffered: usize,
    },
    /// Bytes are not a valid H4 packet.
    #[error("bad H4 packet: {0}")]
    BadH4(&'static str),
    /// A handset name breaks the naming rule ([`crate::names`]).
    #[error("handset name refused: {0}")]
    BadName(&'static str),
}

impl ProtoError {
    /// The QUIC application error code to close the connection (or reset
    /// the stream) with when this error is fatal.
    #[must_use]
    pub fn app_error_code(&self) -> AppErrorCode {
        match self {
            Self::TooLarge { .. } => AppErrorCode::MessageTooLarge,
            Self::InvalidLengthPrefix | Self::Malformed(_) | Self::Truncated { .. } => {
                AppErrorCode::MalformedMessage
            }
            Self::BadH4(_) => AppErrorCode::BadH4,
            Self::BadName(_) => AppErrorCode::MalformedMessage,
        }
    }
}
