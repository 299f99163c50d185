//! H4 (UART transport) framing: a sans-IO decoder/encoder pair.
//!
//! Each H4 packet is one packet-type byte followed by the HCI packet
//! (Core v5.4, Vol 4, Part A, §2; headers in Vol 4, Part E, §5.4). The
//! [`H4Decoder`] accepts arbitrary chunks of a byte stream, validates every
//! length field and maximum size, and recovers from garbage the way netsim's
//! H4 reader does: it drops bytes until the next `HCI_Reset` command
//! (`01 03 0C 00`), because a restarting guest may emit junk. Everything it
//! drops is counted and reported, never silently lost.

use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::Error;

/// The H4 packet-type byte (the first byte of every H4 packet).
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
#[repr(u8)]
pub enum PacketType {
    /// HCI command, host → controller.
    Command = 0x01,
    /// ACL data, both directions.
    Acl = 0x02,
    /// SCO data, both directions.
    Sco = 0x03,
    /// HCI event, controller → host.
    Event = 0x04,
    /// ISO data, both directions.
    Iso = 0x05,
}

impl PacketType {
    /// Maps an H4 type byte to a packet type.
    ///
    /// # Errors
    /// [`Error::UnknownPacketType`] for anything but 0x01..=0x05.
    pub fn from_byte(b: u8) -> Result<Self, Error> {
        Ok(match b {
            0x01 => Self::Command,
            0x02 => Self::Acl,
            0x03 => Self::Sco,
            0x04 => Self::Event,
            0x05 => Self::Iso,
            other => return Err(Error::UnknownPacketType(other)),
        })
    }

    /// The H4 type byte.
    pub fn byte(self) -> u8 {
        self as u8
    }

    /// Length of the HCI header that follows the type byte.
    pub fn header_len(self) -> usize {
        match self {
            Self::Command | Self::Sco => 3,
            Self::Acl | Self::Iso => 4,
            Self::Event => 2,
        }
    }

    /// Reads the payload length from a complete header (without the type byte).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when an ISO header sets its reserved length bits.
    fn payload_len(self, header: &[u8]) -> Result<usize, Error> {
        Ok(match self {
            Self::Command | Self::Sco => usize::from(header[2]),
            Self::Event => usize::from(header[1]),
            Self::Acl => usize::from(u16::from_le_bytes([header[2], header[3]])),
            Self::Iso => {
                let raw = u16::from_le_bytes([header[2], header[3]]);
                if raw & 0xC000 != 0 {
                    // Bits 14-15 are RFU: a set bit means the stream is corrupt.
                    return Err(Error::LengthMismatch {
                        kind: self,
                        declared: usize::from(raw),
                        actual: usize::from(raw & 0x3FFF),
                    });
                }
                usize::from(raw)
            }
        })
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Command => "command",
            Self::Acl => "ACL",
            Self::Sco => "SCO",
            Self::Event => "event",
            Self::Iso => "ISO",
        })
    }
}

/// Maximum payload sizes the decoder accepts, per packet type.
///
/// Commands, events and SCO are capped at 255 by their one-byte length field.
/// ACL and ISO length fields allow more than any real controller buffer, so
/// they are capped here to bound memory per peer.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Limits {
    /// Largest accepted ACL payload (bytes after the 4-byte header).
    pub max_acl: usize,
    /// Largest accepted ISO payload (the 14-bit length field allows 16383).
    pub max_iso: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_acl: 4096,
            max_iso: 16383,
        }
    }
}

impl Limits {
    fn max_for(&self, kind: PacketType) -> usize {
        match kind {
            PacketType::Command | PacketType::Event | PacketType::Sco => 255,
            PacketType::Acl => self.max_acl,
            PacketType::Iso => self.max_iso,
        }
    }
}

/// One validated H4 packet: the type byte, the HCI header and the payload,
/// with lengths that agree. Cheap to clone.
///
/// `Debug` prints a redacted hex dump, so a packet in a log never leaks a key.
#[derive(Clone, Eq, Hash, PartialEq)]
pub struct H4Packet {
    bytes: Bytes,
}

impl H4Packet {
    /// Validates that `bytes` hold exactly one H4 packet (type byte first).
    ///
    /// # Errors
    /// Unknown type, truncated header, or a length field that disagrees with
    /// the bytes present, or a payload above [`Limits::default`].
    pub fn parse(bytes: impl Into<Bytes>) -> Result<Self, Error> {
        Self::parse_with(bytes, &Limits::default())
    }

    /// Like [`H4Packet::parse`] with explicit limits.
    ///
    /// # Errors
    /// As [`H4Packet::parse`].
    pub fn parse_with(bytes: impl Into<Bytes>, limits: &Limits) -> Result<Self, Error> {
        let bytes = bytes.into();
        let (&first, rest) = bytes.split_first().ok_or(Error::Empty)?;
        let kind = PacketType::from_byte(first)?;
        let need = kind.header_len();
        if rest.len() < need {
            return Err(Error::Truncated {
                kind,
                len: rest.len(),
                need,
            });
        }
        let declared = kind.payload_len(rest)?;
        let max = limits.max_for(kind);
        if declared > max {
            return Err(Error::TooLarge {
                kind,
                len: declared,
                max,
            });
        }
        let actual = rest.len() - need;
        if declared != actual {
            return Err(Error::LengthMismatch {
                kind,
                declared,
                actual,
            });
        }
        Ok(Self { bytes })
    }

    /// Builds a packet from a type and the HCI bytes after the type byte
    /// (the form netsim's `HCIPacket` and Linux sockets without H4 use).
    ///
    /// # Errors
    /// As [`H4Packet::parse`].
    pub fn from_parts(kind: PacketType, body: &[u8]) -> Result<Self, Error> {
        let mut v = Vec::with_capacity(body.len() + 1);
        v.push(kind.byte());
        v.extend_from_slice(body);
        Self::parse(v)
    }

    /// An HCI command: `opcode` (16 bits, little-endian on the wire) and its
    /// parameters.
    ///
    /// # Errors
    /// [`Error`] when `params` is longer than 255 bytes.
    pub fn command(opcode: u16, params: &[u8]) -> Result<Self, Error> {
        let len = u8::try_from(params.len()).map_err(|_| Error::TooLarge {
            kind: PacketType::Command,
            len: params.len(),
            max: 255,
        })?;
        let mut v = Vec::with_capacity(4 + params.len());
        v.push(PacketType::Command.byte());
        v.extend_from_slice(&opcode.to_le_bytes());
        v.push(len);
        v.extend_from_slice(params);
        Self::parse(v)
    }

    /// The packet type.
    pub fn kind(&self) -> PacketType {
        // Invariant: construction validated the first byte.
        match self.bytes[0] {
            0x01 => PacketType::Command,
            0x02 => PacketType::Acl,
            0x03 => PacketType::Sco,
            0x04 => PacketType::Event,
            _ => PacketType::Iso,
        }
    }

    /// The whole H4 packet, type byte first.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The HCI packet without the H4 type byte.
    pub fn body(&self) -> &[u8] {
        &self.bytes[1..]
    }

    /// The payload after the HCI header (command/event parameters, ACL data...).
    pub fn payload(&self) -> &[u8] {
        &self.bytes[1 + self.kind().header_len()..]
    }

    /// Length of the whole H4 packet in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a packet has at least its type byte and header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Consumes the packet, returning its bytes (type byte first).
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

impl fmt::Debug for H4Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = crate::redact::redacted(self);
        let shown = &redacted[..redacted.len().min(48)];
        write!(f, "H4Packet({} {}B ", self.kind(), self.len())?;
        for b in shown {
            write!(f, "{b:02x}")?;
        }
        if shown.len() < redacted.len() {
            f.write_str("…")?;
        }
        f.write_str(")")
    }
}

/// The HCI_Reset command as H4 bytes: the resynchronisation marker.
pub const HCI_RESET: [u8; 4] = [0x01, 0x03, 0x0C, 0x00];

/// What the decoder produced.
#[derive(Debug, Eq, PartialEq)]
pub enum Decoded {
    /// A complete, validated packet.
    Packet(H4Packet),
    /// Bytes were dropped while resynchronising.
    Discarded {
        /// How many bytes were dropped.
        bytes: usize,
        /// Why resynchronisation started.
        reason: String,
    },
}

/// Counters of what the decoder has seen.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct DecoderStats {
    /// Packets decoded.
    pub packets: u64,
    /// Bytes dropped while resynchronising.
    pub discarded_bytes: u64,
    /// Times the decoder lost framing and started to resynchronise.
    pub resyncs: u64,
}

/// Sans-IO H4 stream decoder.
///
/// Feed it bytes with [`H4Decoder::push`] in any chunking, then drain it with
/// [`H4Decoder::poll`] until it returns `None`.
#[derive(Debug, Default)]
pub struct H4Decoder {
    buf: BytesMut,
    limits: Limits,
    resync: Option<String>,
    stats: DecoderStats,
}

impl H4Decoder {
    /// A decoder with default [`Limits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder with explicit limits.
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered but not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// What the decoder has seen so far.
    pub fn stats(&self) -> DecoderStats {
        self.stats
    }

    /// Returns the next packet or discard report, or `None` when more bytes
    /// are needed.
    pub fn poll(&mut self) -> Option<Decoded> {
        if let Some(reason) = self.resync.clone() {
            let dropped = self.skip_to_reset();
            if dropped > 0 {
                return Some(Decoded::Discarded {
                    bytes: dropped,
                    reason,
                });
            }
            if self.resync.is_some() {
                return None;
            }
        }
        let &first = self.buf.first()?;
        let kind = match PacketType::from_byte(first) {
            Ok(k) => k,
            Err(e) => return Some(self.lose_framing(e)),
        };
        let need = 1 + kind.header_len();
        if self.buf.len() < need {
            return None;
        }
        let declared = match kind.payload_len(&self.buf[1..need]) {
            Ok(n) => n,
            Err(e) => return Some(self.lose_framing(e)),
        };
        let max = self.limits.max_for(kind);
        if declared > max {
            return Some(self.lose_framing(Error::TooLarge {
                kind,
                len: declared,
                max,
            }));
        }
        if self.buf.len() < need + declared {
            return None;
        }
        let bytes = self.buf.split_to(need + declared).freeze();
        self.stats.packets += 1;
        Some(Decoded::Packet(H4Packet { bytes }))
    }

    fn lose_framing(&mut self, why: Error) -> Decoded {
        self.stats.resyncs += 1;
        self.resync = Some(why.to_string());
        // The byte that broke framing is garbage by definition: drop at least it,
        // so a Reset marker is only trusted at a later position.
        let _ = self.buf.split_to(1);
        self.stats.discarded_bytes += 1;
        let more = self.skip_to_reset();
        Decoded::Discarded {
            bytes: 1 + more,
            reason: why.to_string(),
        }
    }

    /// Drops bytes up to the next HCI_Reset marker (leaving the marker), and
    /// leaves resync mode when it is found. Returns the number dropped.
    fn skip_to_reset(&mut self) -> usize {
        let found = self
            .buf
            .windows(HCI_RESET.len())
            .position(|w| w == HCI_RESET);
        let drop = match found {
            Some(at) => {
                self.resync = None;
                at
            }
            // Keep a tail that could be the start of the marker.
            None => self.buf.len().saturating_sub(HCI_RESET.len() - 1),
        };
        let _ = self.buf.split_to(drop);
        self.stats.discarded_bytes += drop as u64;
        drop
    }
}

/// H4 encoder: appends packets to an output buffer.
///
/// An [`H4Packet`] is already in wire form, so encoding is a copy; the type
/// exists so transports are written against a decoder/encoder pair.
#[derive(Clone, Copy, Debug, Default)]
pub struct H4Encoder;

impl H4Encoder {
    /// Appends `packet`'s H4 bytes to `dst`.
    pub fn encode(&self, packet: &H4Packet, dst: &mut Vec<u8>) {
        dst.extend_from_slice(packet.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn drain(d: &mut H4Decoder) -> (Vec<H4Packet>, usize) {
        let mut pkts = Vec::new();
        let mut dropped = 0;
        while let Some(x) = d.poll() {
            match x {
                Decoded::Packet(p) => pkts.push(p),
                Decoded::Discarded { bytes, .. } => dropped += bytes,
            }
        }
        (pkts, dropped)
    }

    const CMD: &[u8] = &[0x01, 0x03, 0x0C, 0x00];
    const EVT: &[u8] = &[0x04, 0x0E, 0x04, 0x01, 0x03, 0x0C, 0x00];
    const ACL: &[u8] = &[0x02, 0x40, 0x20, 0x03, 0x00, 0xAA, 0xBB, 0xCC];
    const SCO: &[u8] = &[0x03, 0x01, 0x00, 0x02, 0x11, 0x22];
    const ISO: &[u8] = &[0x05, 0x60, 0x20, 0x02, 0x00, 0x01, 0x02];

    #[test]
    fn parse_each_packet_type() {
        for (raw, kind, payload) in [
            (CMD, PacketType::Command, 0),
            (EVT, PacketType::Event, 4),
            (ACL, PacketType::Acl, 3),
            (SCO, PacketType::Sco, 2),
            (ISO, PacketType::Iso, 2),
        ] {
            let p = H4Packet::parse(raw.to_vec()).unwrap();
            assert_eq!(p.kind(), kind);
            assert_eq!(p.payload().len(), payload);
            assert_eq!(p.as_bytes(), raw);
            assert_eq!(p.body(), &raw[1..]);
        }
    }

    #[test]
    fn parse_rejects_wrong_lengths() {
        assert!(matches!(
            H4Packet::parse(vec![0x04, 0x0E, 0x05, 0x01]),
            Err(Error::LengthMismatch {
                declared: 5,
                actual: 1,
                ..
            })
        ));
        assert!(matches!(
            H4Packet::parse(vec![0x02, 0x01]),
            Err(Error::Truncated { need: 4, .. })
        ));
        assert!(matches!(
            H4Packet::parse(vec![0x09]),
            Err(Error::UnknownPacketType(9))
        ));
        assert!(matches!(H4Packet::parse(Vec::new()), Err(Error::Empty)));
        let mut big = vec![0x02, 0x01, 0x00, 0x01, 0x20];
        big.resize(5 + 0x2001, 0);
        assert!(matches!(
            H4Packet::parse(big),
            Err(Error::TooLarge {
                len: 0x2001,
                max: 4096,
                ..
            })
        ));
        assert!(matches!(
            H4Packet::parse(vec![0x05, 0x01, 0x00, 0x00, 0x40]),
            Err(Error::LengthMismatch { .. })
        ));
    }

    #[test]
    fn decoder_handles_byte_by_byte_input() {
        let stream: Vec<u8> = [CMD, EVT, ACL, SCO, ISO].concat();
        let mut d = H4Decoder::new();
        let mut got = Vec::new();
        for b in &stream {
            d.push(std::slice::from_ref(b));
            let (p, dropped) = drain(&mut d);
            assert_eq!(dropped, 0);
            got.extend(p);
        }
        assert_eq!(got.len(), 5);
        assert_eq!(got[2].as_bytes(), ACL);
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.stats().packets, 5);
    }

    #[test]
    fn decoder_skips_garbage_to_next_reset() {
        let mut d = H4Decoder::new();
        d.push(&[0xFF, 0x13, 0x37, 0x02, 0x42]);
        d.push(CMD);
        d.push(EVT);
        let (pkts, dropped) = drain(&mut d);
        assert_eq!(dropped, 5);
        assert_eq!(pkts.len(), 2);
        assert_eq!(pkts[0].as_bytes(), CMD);
        assert_eq!(d.stats().resyncs, 1);
        assert_eq!(d.stats().discarded_bytes, 5);
    }

    #[test]
    fn decoder_drops_everything_until_a_reset_arrives() {
        let mut d = H4Decoder::new();
        d.push(&[0x09, 0x04, 0x0E, 0x04, 0x01, 0x01, 0x10, 0x00]);
        // The valid-looking event after the garbage is still dropped: framing is
        // only trusted again at an HCI_Reset.
        let (pkts, dropped) = drain(&mut d);
        assert!(pkts.is_empty());
        assert_eq!(dropped + d.buffered(), 8);
        // A Reset split across pushes is still found.
        d.push(&[0x01, 0x03]);
        d.push(&[0x0C, 0x00]);
        let (pkts, _) = drain(&mut d);
        assert_eq!(pkts.len(), 1);
        assert_eq!(pkts[0].as_bytes(), CMD);
    }

    #[test]
    fn decoder_resyncs_on_oversized_acl() {
        let mut d = H4Decoder::with_limits(Limits {
            max_acl: 27,
            max_iso: 100,
        });
        d.push(&[0x02, 0x01, 0x00, 0xFF, 0x00]);
        d.push(CMD);
        let (pkts, dropped) = drain(&mut d);
        assert_eq!(pkts.len(), 1);
        assert_eq!(dropped, 5);
    }

    #[test]
    fn debug_output_redacts_keys() {
        // LE_Long_Term_Key_Request_Reply: handle 0x0040, LTK = 0x11 * 16.
        let mut raw = vec![0x01, 0x1A, 0x20, 18, 0x40, 0x00];
        raw.extend_from_slice(&[0x11; 16]);
        let p = H4Packet::parse(raw).unwrap();
        let s = format!("{p:?}");
        assert!(!s.contains("1111"), "{s}");
        assert!(s.contains("011a2012400000000000"), "{s}");
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)) {
            let mut d = H4Decoder::new();
            let total: usize = chunks.iter().map(Vec::len).sum();
            let mut out = 0usize;
            for c in &chunks {
                d.push(c);
                while let Some(x) = d.poll() {
                    out += match x {
                        Decoded::Packet(p) => p.len(),
                        Decoded::Discarded { bytes, .. } => bytes,
                    };
                }
            }
            // Conservation: every byte is a packet byte, dropped, or still buffered.
            prop_assert_eq!(out + d.buffered(), total);
            for c in &chunks {
                let _ = H4Packet::parse(c.clone());
            }
        }

        #[test]
        fn encode_decode_round_trip(pkts in proptest::collection::vec((1u8..=5, proptest::collection::vec(any::<u8>(), 0..200)), 0..20)) {
            let mut wire = Vec::new();
            let mut want = Vec::new();
            for (t, payload) in pkts {
                let kind = PacketType::from_byte(t).unwrap();
                let mut raw = vec![t];
                let n = payload.len();
                match kind {
                    PacketType::Command => raw.extend_from_slice(&[0x01, 0x10, n as u8]),
                    PacketType::Event => raw.extend_from_slice(&[0x0E, n as u8]),
                    PacketType::Sco => raw.extend_from_slice(&[0x01, 0x00, n as u8]),
                    PacketType::Acl | PacketType::Iso => {
                        raw.extend_from_slice(&[0x01, 0x00]);
                        raw.extend_from_slice(&(n as u16).to_le_bytes());
                    }
                }
                raw.extend_from_slice(&payload);
                let p = H4Packet::parse(raw).unwrap();
                H4Encoder.encode(&p, &mut wire);
                want.push(p);
            }
            let mut d = H4Decoder::new();
            d.push(&wire);
            let (got, dropped) = drain(&mut d);
            prop_assert_eq!(dropped, 0);
            prop_assert_eq!(got, want);
        }
    }
}
