//! Key redaction: the one place that knows which bytes of which HCI packet are
//! secret.
//!
//! LE and BR/EDR link encryption runs in the controller, so the host hands it
//! keys in clear (see `bluetooth.md` §7). These bytes must never reach a log or
//! a capture file unless a user asks for it explicitly. Redaction zeroes them
//! and keeps every length, so a redacted capture still decodes.
//!
//! Covered:
//! - commands: `LE_Enable_Encryption` (LTK), `LE_Long_Term_Key_Request_Reply`
//!   (LTK), `LE_Encrypt` (key), `Link_Key_Request_Reply` (link key),
//!   `PIN_Code_Request_Reply` (PIN), `User_Passkey_Request_Reply` (passkey),
//!   `Remote_OOB_Data_Request_Reply` and `Remote_OOB_Extended_Data_Request_Reply`
//!   (OOB hash and randomizer), `Write_Stored_Link_Key` (link keys),
//!   `LE_Add_Device_To_Resolving_List` (IRKs);
//! - events: `Link_Key_Notification`, `Return_Link_Keys`, LE `Generate DHKey
//!   Complete` (the Diffie-Hellman key), and the Command Complete returns of
//!   `Read_Local_OOB_Data`, `Read_Local_OOB_Extended_Data` (OOB hash and
//!   randomizer), `LE_Encrypt` (its output is the STK in legacy pairing) and
//!   `LE_Rand` (hosts draw LTKs, EDIV and Rand from it);
//! - SMP key distribution PDUs (LTK, IRK, CSRK) in ACL data, which the
//!   controller delivers to the host decrypted. A PDU may be split across ACL
//!   fragments; only a [`Redactor`], which follows each link's fragments,
//!   finds the key bytes in a continuation. Without one (a single packet, as
//!   in a log line) a continuation fragment's payload is zeroed whole, since it
//!   could be the rest of a key.

use std::collections::HashMap;
use std::ops::Range;

use crate::packet::{Direction, Opcode, events, opcodes};
use crate::{H4Packet, PacketType};

/// Offset of command parameters in H4 bytes (type, opcode 2, length 1).
const CMD_PARAMS: usize = 4;
/// Offset of event parameters in H4 bytes (type, code, length).
const EVT_PARAMS: usize = 3;
/// Offset of a Command Complete's return parameters after its status byte
/// (event parameters: `Num_HCI_Command_Packets` 1, opcode 2, status 1).
const COMPLETE_RETURN: usize = EVT_PARAMS + 4;
/// Offset of ACL data in H4 bytes (type, handle 2, length 2).
const ACL_DATA: usize = 5;
/// L2CAP fixed channel of the Security Manager on LE.
const SMP_CID: u16 = 0x0006;
/// SMP PDUs whose 16 bytes after the code are a key: Encryption Information
/// (LTK), Identity Information (IRK), Signing Information (CSRK).
const SMP_KEY_CODES: [u8; 3] = [0x06, 0x08, 0x0A];
/// Where those key bytes sit in the L2CAP frame (length 2, CID 2, code 1).
const SMP_KEY: Range<usize> = 5..21;

const USER_PASSKEY_REQUEST_REPLY: Opcode = Opcode(0x042E);
const REMOTE_OOB_DATA_REQUEST_REPLY: Opcode = Opcode(0x0430);
const REMOTE_OOB_EXTENDED_DATA_REQUEST_REPLY: Opcode = Opcode(0x0445);
const READ_LOCAL_OOB_DATA: Opcode = Opcode(0x0C57);
const READ_LOCAL_OOB_EXTENDED_DATA: Opcode = Opcode(0x0C7D);
const LE_RAND: Opcode = Opcode(0x2018);
/// LE Meta subevent: `LE Generate DHKey Complete` (status 1, DHKey 32).
const LE_GENERATE_DHKEY_COMPLETE: u8 = 0x09;

/// Byte ranges (into the H4 bytes, type byte first) that hold keys, for one
/// packet seen alone. An ACL continuation fragment's whole payload counts:
/// alone, nothing says it is not the rest of an SMP key PDU.
pub fn key_ranges(h4: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    match h4.first() {
        Some(0x01) | Some(0x04) => fixed_key_ranges(h4, &mut out),
        Some(0x02) if h4.len() > ACL_DATA => {
            if is_start_fragment(h4) {
                if let Some(r) = L2capHead::default().feed(&h4[ACL_DATA..]) {
                    out.push(ACL_DATA + r.start..ACL_DATA + r.end);
                }
            } else {
                out.push(ACL_DATA..h4.len());
            }
        }
        _ => {}
    }
    clip(out, h4.len())
}

/// Ranges in commands and events, which never span packets.
fn fixed_key_ranges(h4: &[u8], out: &mut Vec<Range<usize>>) {
    match h4[0] {
        0x01 if h4.len() >= CMD_PARAMS => {
            let op = Opcode(u16::from_le_bytes([h4[1], h4[2]]));
            let p = CMD_PARAMS;
            match op {
                opcodes::LE_ENABLE_ENCRYPTION => out.push(p + 12..p + 28),
                opcodes::LE_LTK_REQUEST_REPLY => out.push(p + 2..p + 18),
                opcodes::LE_ENCRYPT => out.push(p..p + 16),
                opcodes::LINK_KEY_REQUEST_REPLY => out.push(p + 6..p + 22),
                opcodes::PIN_CODE_REQUEST_REPLY => out.push(p + 7..p + 23),
                opcodes::LE_ADD_DEVICE_TO_RESOLVING_LIST => out.push(p + 7..p + 39),
                opcodes::WRITE_STORED_LINK_KEY => key_list(h4, p, out),
                USER_PASSKEY_REQUEST_REPLY => out.push(p + 6..p + 10),
                REMOTE_OOB_DATA_REQUEST_REPLY => out.push(p + 6..p + 38),
                REMOTE_OOB_EXTENDED_DATA_REQUEST_REPLY => out.push(p + 6..p + 70),
                _ => {}
            }
        }
        0x04 if h4.len() >= EVT_PARAMS => match h4[1] {
            events::LINK_KEY_NOTIFICATION => out.push(EVT_PARAMS + 6..EVT_PARAMS + 22),
            events::RETURN_LINK_KEYS => key_list(h4, EVT_PARAMS, out),
            events::LE_META if h4.get(EVT_PARAMS) == Some(&LE_GENERATE_DHKEY_COMPLETE) => {
                out.push(EVT_PARAMS + 2..EVT_PARAMS + 34);
            }
            events::COMMAND_COMPLETE if h4.len() >= EVT_PARAMS + 3 => {
                let op = Opcode(u16::from_le_bytes([h4[EVT_PARAMS + 1], h4[EVT_PARAMS + 2]]));
                let r = COMPLETE_RETURN;
                match op {
                    READ_LOCAL_OOB_DATA => out.push(r..r + 32),
                    READ_LOCAL_OOB_EXTENDED_DATA => out.push(r..r + 64),
                    opcodes::LE_ENCRYPT => out.push(r..r + 16),
                    LE_RAND => out.push(r..r + 8),
                    _ => {}
                }
            }
            _ => {}
        },
        _ => {}
    }
}

/// Keeps the ranges that fall inside a packet of `len` bytes, cut to fit.
fn clip(ranges: Vec<Range<usize>>, len: usize) -> Vec<Range<usize>> {
    ranges
        .into_iter()
        .filter_map(|r| {
            let end = r.end.min(len);
            (r.start < end).then_some(r.start..end)
        })
        .collect()
}

/// An ACL packet whose packet-boundary flag starts an L2CAP frame.
fn is_start_fragment(h4: &[u8]) -> bool {
    let pb = (h4[2] >> 4) & 0b11;
    pb == 0b00 || pb == 0b10
}

/// `Num_Keys` followed by (BD_ADDR 6, key 16) entries.
fn key_list(h4: &[u8], params: usize, out: &mut Vec<Range<usize>>) {
    let Some(&n) = h4.get(params) else { return };
    for i in 0..usize::from(n) {
        let key = params + 1 + i * 22 + 6;
        out.push(key..key + 16);
    }
}

/// What one link has shown of the L2CAP frame it is sending: how far in it
/// is, and the frame's first bytes (length, CID, SMP code) as they arrive.
#[derive(Clone, Debug, Default)]
struct L2capHead {
    /// Bytes of the frame seen so far, header included.
    pos: usize,
    /// The frame's first [`SMP_KEY`]`.start` bytes, as far as seen.
    head: [u8; SMP_KEY.start],
}

impl L2capHead {
    /// Feeds the next fragment's data; returns the range of `data` that holds
    /// key bytes, if any.
    fn feed(&mut self, data: &[u8]) -> Option<Range<usize>> {
        let start = self.pos;
        for (i, &b) in data
            .iter()
            .enumerate()
            .take(SMP_KEY.start.saturating_sub(start))
        {
            self.head[start + i] = b;
        }
        self.pos = start.saturating_add(data.len());
        let seen_head = self.pos >= SMP_KEY.start;
        let cid = u16::from_le_bytes([self.head[2], self.head[3]]);
        if !seen_head || cid != SMP_CID || !SMP_KEY_CODES.contains(&self.head[4]) {
            return None;
        }
        // The key's frame offsets that fall in this fragment, as data offsets.
        let from = SMP_KEY.start.max(start);
        let to = SMP_KEY.end.min(self.pos);
        (from < to).then(|| from - start..to - start)
    }

    /// Whether the whole frame (header length + 4) has been seen.
    fn complete(&self) -> bool {
        self.pos >= 4
            && self.pos >= 4 + usize::from(u16::from_le_bytes([self.head[0], self.head[1]]))
    }
}

/// Redaction across a stream of packets: follows each link's ACL fragments
/// per direction, so an SMP key split across fragments is found and zeroed
/// in every fragment that holds a byte of it. A continuation whose start this
/// redactor did not see (a capture begun mid-frame, packets lost before it)
/// is zeroed whole. Holds at most one small entry per link and direction.
#[derive(Debug, Default)]
pub struct Redactor {
    frames: HashMap<(Direction, u16), L2capHead>,
}

impl Redactor {
    /// A redactor that has seen nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Zeroes every key byte of the next packet travelling `dir`, in place.
    /// Returns how many bytes were zeroed.
    pub fn redact_in_place(&mut self, dir: Direction, h4: &mut [u8]) -> usize {
        if h4.first() != Some(&0x02) {
            return zero(h4, key_ranges(h4));
        }
        if h4.len() < ACL_DATA {
            return 0;
        }
        let handle = u16::from_le_bytes([h4[1], h4[2]]) & 0x0FFF;
        let key = (dir, handle);
        let len = usize::from(u16::from_le_bytes([h4[3], h4[4]]));
        let end = (ACL_DATA + len).min(h4.len());
        if is_start_fragment(h4) {
            self.frames.insert(key, L2capHead::default());
        }
        let Some(frame) = self.frames.get_mut(&key) else {
            return zero(h4, Some(ACL_DATA..end));
        };
        let ranges = frame
            .feed(&h4[ACL_DATA..end])
            .map(|r| ACL_DATA + r.start..ACL_DATA + r.end);
        if frame.complete() {
            self.frames.remove(&key);
        }
        zero(h4, ranges)
    }

    /// A redacted copy of a packet travelling `dir`, with the number of bytes
    /// zeroed.
    pub fn redacted(&mut self, dir: Direction, packet: &H4Packet) -> (Vec<u8>, usize) {
        let mut v = packet.as_bytes().to_vec();
        let n = self.redact_in_place(dir, &mut v);
        (v, n)
    }
}

fn zero(h4: &mut [u8], ranges: impl IntoIterator<Item = Range<usize>>) -> usize {
    let mut n = 0;
    for r in ranges {
        let end = r.end.min(h4.len());
        if r.start < end {
            n += end - r.start;
            h4[r.start..end].fill(0);
        }
    }
    n
}

/// Zeroes every key byte of one H4 packet seen alone, in place (see
/// [`key_ranges`]). Returns how many bytes were zeroed.
pub fn redact_in_place(h4: &mut [u8]) -> usize {
    let ranges = key_ranges(h4);
    zero(h4, ranges)
}

/// A redacted copy of one packet's H4 bytes, the packet seen alone.
pub fn redacted(packet: &H4Packet) -> Vec<u8> {
    let mut v = packet.as_bytes().to_vec();
    redact_in_place(&mut v);
    v
}

/// True when the packet, seen alone, holds bytes redaction would zero.
pub fn carries_keys(packet: &H4Packet) -> bool {
    !key_ranges(packet.as_bytes()).is_empty()
}

/// Whether a packet type can carry keys at all (a cheap pre-check for hot paths).
pub fn may_carry_keys(kind: PacketType) -> bool {
    matches!(
        kind,
        PacketType::Command | PacketType::Event | PacketType::Acl
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(op: u16, params: &[u8]) -> Vec<u8> {
        H4Packet::command(op, params).unwrap().as_bytes().to_vec()
    }

    #[test]
    fn le_enable_encryption_ltk_is_zeroed_and_rest_kept() {
        let mut params = vec![0x40, 0x00];
        params.extend_from_slice(&[0xAB; 8]); // random
        params.extend_from_slice(&[0xCD, 0xEF]); // ediv
        params.extend_from_slice(&[0x5A; 16]); // LTK
        let mut raw = cmd(0x2019, &params);
        let before = raw.clone();
        assert_eq!(redact_in_place(&mut raw), 16);
        assert_eq!(&raw[..16], &before[..16]);
        assert!(raw[16..].iter().all(|&b| b == 0));
        assert_eq!(raw.len(), before.len());
    }

    #[test]
    fn every_key_bearing_packet_is_covered() {
        // (packet, key bytes, the filler byte used for the key material only)
        let cases: Vec<(Vec<u8>, usize, u8)> = vec![
            (
                cmd(0x201A, &[[0x40, 0x00].as_slice(), &[0x11; 16]].concat()),
                16,
                0x11,
            ),
            (
                cmd(0x2017, &[[0x22; 16].as_slice(), &[0x01; 16]].concat()),
                16,
                0x22,
            ),
            (
                cmd(0x040B, &[[0x01; 6].as_slice(), &[0x33; 16]].concat()),
                16,
                0x33,
            ),
            (
                cmd(0x040D, &[[0x01; 6].as_slice(), &[4], &[0x44; 16]].concat()),
                16,
                0x44,
            ),
            (
                cmd(
                    0x2027,
                    &[[0x00].as_slice(), &[0x01; 6], &[0x55; 32]].concat(),
                ),
                32,
                0x55,
            ),
            (
                cmd(
                    0x0C11,
                    &[
                        [2u8].as_slice(),
                        &[0x01; 6],
                        &[0x66; 16],
                        &[0x02; 6],
                        &[0x66; 16],
                    ]
                    .concat(),
                ),
                32,
                0x66,
            ),
            (
                [
                    [0x04, 0x18, 23].as_slice(),
                    &[0x01; 6],
                    &[0x88; 16],
                    &[0x04],
                ]
                .concat(),
                16,
                0x88,
            ),
            (
                [[0x04, 0x15, 23].as_slice(), &[1], &[0x01; 6], &[0x99; 16]].concat(),
                16,
                0x99,
            ),
            // User_Passkey_Request_Reply: the passkey.
            (
                cmd(0x042E, &[[0x01; 6].as_slice(), &[0x77; 4]].concat()),
                4,
                0x77,
            ),
            // Remote_OOB_Data_Request_Reply: C and R.
            (
                cmd(0x0430, &[[0x01; 6].as_slice(), &[0x7A; 32]].concat()),
                32,
                0x7A,
            ),
            // Remote_OOB_Extended_Data_Request_Reply: C and R for P-192 and P-256.
            (
                cmd(0x0445, &[[0x01; 6].as_slice(), &[0x7B; 64]].concat()),
                64,
                0x7B,
            ),
            // Command Complete of Read_Local_OOB_Data and its extended form.
            (
                [
                    [0x04, 0x0E, 36, 0x01, 0x57, 0x0C, 0x00].as_slice(),
                    &[0x7C; 32],
                ]
                .concat(),
                32,
                0x7C,
            ),
            (
                [
                    [0x04, 0x0E, 68, 0x01, 0x7D, 0x0C, 0x00].as_slice(),
                    &[0x6D; 64],
                ]
                .concat(),
                64,
                0x6D,
            ),
            // Command Complete of LE_Encrypt (the STK in legacy pairing) and LE_Rand.
            (
                [
                    [0x04, 0x0E, 20, 0x01, 0x17, 0x20, 0x00].as_slice(),
                    &[0x7E; 16],
                ]
                .concat(),
                16,
                0x7E,
            ),
            (
                [
                    [0x04, 0x0E, 12, 0x01, 0x18, 0x20, 0x00].as_slice(),
                    &[0x7F; 8],
                ]
                .concat(),
                8,
                0x7F,
            ),
            // LE Generate DHKey Complete: the DHKey.
            (
                [[0x04, 0x3E, 34, 0x09, 0x00].as_slice(), &[0x8A; 32]].concat(),
                32,
                0x8A,
            ),
            // SMP Encryption Information over ACL, handle 0x40, start fragment.
            (
                [
                    [0x02, 0x40, 0x20, 21, 0x00, 17, 0x00, 0x06, 0x00, 0x06].as_slice(),
                    &[0xAA; 16],
                ]
                .concat(),
                16,
                0xAA,
            ),
        ];
        for (mut raw, n, filler) in cases {
            let p = H4Packet::parse(raw.clone()).expect("valid test packet");
            assert!(carries_keys(&p), "{raw:02x?}");
            assert_eq!(redact_in_place(&mut raw), n, "{raw:02x?}");
            assert!(!raw.contains(&filler), "key byte survived: {raw:02x?}");
        }
    }

    #[test]
    fn ordinary_packets_are_untouched() {
        let p = H4Packet::parse(vec![0x01, 0x03, 0x0C, 0x00]).unwrap();
        assert!(!carries_keys(&p));
        assert_eq!(redacted(&p), p.as_bytes());
        // ATT over ACL (CID 4) is not SMP.
        let raw = [
            [0x02, 0x40, 0x20, 21, 0x00, 17, 0x00, 0x04, 0x00, 0x06].as_slice(),
            &[0xAA; 16],
        ]
        .concat();
        assert!(key_ranges(&raw).is_empty());
    }

    #[test]
    fn a_continuation_seen_alone_is_zeroed_whole() {
        // Nothing says this is not the rest of an SMP key PDU.
        let raw = [[0x02, 0x40, 0x10, 8, 0x00].as_slice(), &[0xAA; 8]].concat();
        assert_eq!(key_ranges(&raw), vec![5..13]);
        let p = H4Packet::parse(raw).unwrap();
        assert!(!redacted(&p).contains(&0xAA));
        assert!(!format!("{p:?}").contains("aa"), "{p:?}");
    }

    /// ACL packet on `handle` with the packet-boundary flag `pb`.
    fn acl(handle: u16, pb: u8, data: &[u8]) -> Vec<u8> {
        let hf = handle | (u16::from(pb) << 12);
        let mut v = vec![0x02];
        v.extend_from_slice(&hf.to_le_bytes());
        v.extend_from_slice(&(data.len() as u16).to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    /// An L2CAP frame (length, CID, payload).
    fn l2cap(cid: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u16).to_le_bytes().to_vec();
        v.extend_from_slice(&cid.to_le_bytes());
        v.extend_from_slice(payload);
        v
    }

    /// Splits a frame into ACL fragments at the given frame offsets.
    fn fragments(handle: u16, frame: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain([frame.len()].iter()) {
            let pb = if from == 0 { 0b10 } else { 0b01 };
            out.push(acl(handle, pb, &frame[from..to]));
            from = to;
        }
        out
    }

    #[test]
    fn an_smp_key_split_across_fragments_is_zeroed_in_each() {
        for code in SMP_KEY_CODES {
            let frame = l2cap(SMP_CID, &[[code].as_slice(), &[0xAA; 16]].concat());
            // Cut in the header, after the code, inside the key, one byte each.
            for cuts in [
                vec![2],
                vec![5],
                vec![9],
                vec![3, 5, 6, 14],
                (1..21).collect(),
            ] {
                let mut r = Redactor::new();
                let mut zeroed = 0;
                for mut f in fragments(0x40, &frame, &cuts) {
                    zeroed += r.redact_in_place(Direction::ControllerToHost, &mut f);
                    assert!(
                        !f[5..].contains(&0xAA),
                        "code {code:#x} cuts {cuts:?}: {f:02x?}"
                    );
                }
                assert_eq!(zeroed, 16, "code {code:#x} cuts {cuts:?}");
                assert!(r.frames.is_empty(), "a finished frame is forgotten");
            }
        }
    }

    #[test]
    fn the_redactor_leaves_other_channels_and_links_alone() {
        let mut r = Redactor::new();
        // An ATT frame split in two on link 0x40, interleaved with an SMP key
        // on link 0x41 and the other direction of link 0x40.
        let att = l2cap(
            0x0004,
            &[[0x1B, 0x03, 0x00].as_slice(), &[0x5A; 30]].concat(),
        );
        let smp = l2cap(SMP_CID, &[[0x06].as_slice(), &[0xAA; 16]].concat());
        let [a1, a2]: [Vec<u8>; 2] = fragments(0x40, &att, &[10]).try_into().unwrap();
        let [s1, s2]: [Vec<u8>; 2] = fragments(0x41, &smp, &[7]).try_into().unwrap();
        let [t1, t2]: [Vec<u8>; 2] = fragments(0x40, &smp, &[7]).try_into().unwrap();
        let up = Direction::HostToController;
        let down = Direction::ControllerToHost;
        for (dir, mut f, keys) in [
            (down, a1, 0),
            (down, s1, 2),
            (up, t1, 2),
            (down, a2, 0),
            (down, s2, 14),
            (up, t2, 14),
        ] {
            let before = f.clone();
            assert_eq!(r.redact_in_place(dir, &mut f), keys, "{before:02x?}");
            if keys == 0 {
                assert_eq!(f, before);
            } else {
                assert!(!f.contains(&0xAA));
            }
        }
        // A continuation whose start was never seen is zeroed whole.
        let mut stray = acl(0x42, 0b01, &[0x5A; 12]);
        assert_eq!(r.redact_in_place(down, &mut stray), 12);
    }

    #[test]
    fn truncated_key_packets_do_not_panic() {
        for raw in [
            vec![0x01, 0x19, 0x20],
            vec![0x01, 0x19, 0x20, 3, 1, 2, 3],
            vec![0x04, 0x15, 1, 200],
            vec![0x02, 0x40, 0x20, 1, 0],
        ] {
            let mut r = raw.clone();
            redact_in_place(&mut r);
        }
    }
}
