//! The crate's one error type.

use crate::PacketType;
use crate::packet::Opcode;

/// Everything that can go wrong in bt-raw.
///
/// Errors caused by a peer (bad bytes) are values, never panics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A btsnoop file is not what it claims to be.
    #[error("bad btsnoop file: {0}")]
    BadSnoop(&'static str),
    /// An I/O error on a radio transport or a capture file.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The length field of a packet disagrees with the bytes present.
    #[error("{kind} packet length field says {declared} bytes but {actual} are present")]
    LengthMismatch {
        /// The packet type.
        kind: PacketType,
        /// What the header declares.
        declared: usize,
        /// What is actually there.
        actual: usize,
    },
    /// A packet is larger than this decoder accepts.
    #[error("{kind} packet of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The packet type.
        kind: PacketType,
        /// Its payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A packet is shorter than its header.
    #[error("{kind} packet truncated: {len} bytes, header needs {need}")]
    Truncated {
        /// The packet type.
        kind: PacketType,
        /// Bytes present.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The first byte is not an H4 packet type.
    #[error("unknown H4 packet type 0x{0:02x}")]
    UnknownPacketType(u8),
    /// An empty buffer where a packet was expected.
    #[error("empty H4 packet")]
    Empty,
    /// A packet was well framed but is not of the kind a view expects.
    #[error("expected a {expected} packet, got {actual}")]
    WrongKind {
        /// What the view wanted.
        expected: &'static str,
        /// What the packet is.
        actual: PacketType,
    },
    /// A policy file could not be read or understood.
    #[error("invalid HCI policy: {0}")]
    Policy(String),
    /// A radio was given a spec string it does not understand.
    #[error("invalid radio spec {spec:?}: {reason}")]
    RadioSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The radio transport is closed.
    #[error("radio transport closed")]
    Closed,
    /// Linux refused to open the HCI user channel.
    #[error("cannot open HCI user channel on hci{index}: {reason}")]
    UserChannel {
        /// The adapter index.
        index: u16,
        /// A human explanation of the OS error and what to do.
        reason: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The host sent more than the controller has credits for.
    #[error("flow control violated: {0}")]
    FlowControl(String),
    /// A command was refused by policy (used by relays that report denials).
    #[error("command {0} denied by policy")]
    Denied(Opcode),
}

impl Error {
    /// Wraps an I/O error with a short description of what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
