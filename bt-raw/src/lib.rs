//! # bt-raw: vphone's HCI core
//!
//! Everything vphone knows about the Host Controller Interface lives here, so the
//! relay code elsewhere only moves opaque [`H4Packet`]s around:
//!
//! * [`h4`]: the H4 (UART) framing as a sans-IO decoder/encoder pair. It handles
//!   partial reads, validates every length field, enforces maximum sizes and
//!   recovers from garbage the way netsim does (skip to the next `HCI_Reset`).
//! * [`packet`]: zero-copy typed views of commands, events, ACL, SCO and ISO
//!   packets (Core v5.4, Vol 4, Part E, §5.4).
//! * [`policy`]: which host→controller commands may reach a lent radio, and the
//!   exact refusal event a host stack expects when one may not.
//! * [`flow`]: flow-control accounting (command credits, ACL/LE/ISO buffers,
//!   Number_Of_Completed_Packets, Disconnection Complete).
//! * [`redact`]: the one place that knows which bytes of which packet are keys.
//! * [`link`]: what a relay remembers to fail cleanly when the radio is gone
//!   (outstanding commands, open connections, advertised names).
//! * [`btsnoop`]: a btsnoop (datalink 1002) writer that Wireshark opens, with
//!   key redaction on by default.
//! * `transport` (feature `transport`, on by default): radio transports behind
//!   one trait: H4 over TCP and Unix sockets and Linux `HCI_CHANNEL_USER`.
//!
//! The core modules are sans-IO: no sockets, no tokio, no clock. Callers pass
//! bytes and timestamps in and take packets and events out.

pub mod btsnoop;
mod error;
pub mod flow;
pub mod h4;
pub mod link;
pub mod packet;
pub mod policy;
pub mod redact;
#[cfg(feature = "transport")]
pub mod transport;

pub use error::Error;
pub use h4::{H4Decoder, H4Packet, PacketType};
pub use packet::{ConnectionHandle, Direction, Opcode};
pub use policy::{Policy, Verdict};
