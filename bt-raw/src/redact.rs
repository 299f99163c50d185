//! Key redaction: the one place that knows which bytes of which HCI packet are
//! secret.
//!
//! LE and BR/EDR link encryption runs in the controller, so the host hands it
//! keys in clear (see `bluetooth.md` §7). These bytes must never reach a log or
//! a capture file unless a user asks for it explicitly. Redaction zeroes them
//! and keeps every length, so a redacted capture still decodes.
//!
//! Covered: `LE_Enable_Encryption` (LTK), `LE_Long_Term_Key_Request_Reply`
//! (LTK), `LE_Encrypt` (key), `Link_Key_Request_Reply` (link key),
//! `PIN_Code_Request_Reply` (PIN), `Write_Stored_Link_Key` (link keys),
//! `LE_Add_Device_To_Resolving_List` (IRKs), the `Link_Key_Notification` and
//! `Return_Link_Keys` events, and SMP key distribution PDUs (LTK, IRK, CSRK) in
//! ACL data, which the controller delivers to the host decrypted.

use std::ops::Range;

use crate::packet::{Opcode, events, opcodes};
use crate::{H4Packet, PacketType};

/// Offset of command parameters in H4 bytes (type, opcode 2, length 1).
const CMD_PARAMS: usize = 4;
/// Offset of event parameters in H4 bytes (type, code, length).
const EVT_PARAMS: usize = 3;
/// Offset of ACL data in H4 bytes (type, handle 2, length 2).
const ACL_DATA: usize = 5;
/// L2CAP fixed channel of the Security Manager on LE.
const SMP_CID: u16 = 0x0006;

/// Byte ranges (into the H4 bytes, type byte first) that hold keys.
pub fn key_ranges(h4: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let Some(&t) = h4.first() else {
        return out;
    };
    match t {
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
                opcodes::WRITE_STORED_LINK_KEY => key_list(h4, p, &mut out),
                _ => {}
            }
        }
        0x04 if h4.len() >= EVT_PARAMS => match h4[1] {
            events::LINK_KEY_NOTIFICATION => out.push(EVT_PARAMS + 6..EVT_PARAMS + 22),
            events::RETURN_LINK_KEYS => key_list(h4, EVT_PARAMS, &mut out),
            _ => {}
        },
        0x02 if h4.len() >= ACL_DATA + 5 => {
            let pb = (h4[2] >> 4) & 0b11;
            let cid = u16::from_le_bytes([h4[ACL_DATA + 2], h4[ACL_DATA + 3]]);
            // Only start fragments carry the L2CAP header.
            if (pb == 0b00 || pb == 0b10) && cid == SMP_CID {
                let code = h4[ACL_DATA + 4];
                // Encryption Information (LTK), Identity Information (IRK),
                // Signing Information (CSRK): 16 bytes after the code.
                if matches!(code, 0x06 | 0x08 | 0x0A) {
                    out.push(ACL_DATA + 5..ACL_DATA + 21);
                }
            }
        }
        _ => {}
    }
    out.iter()
        .filter_map(|r| {
            let end = r.end.min(h4.len());
            (r.start < end).then_some(r.start..end)
        })
        .collect()
}

/// `Num_Keys` followed by (BD_ADDR 6, key 16) entries.
fn key_list(h4: &[u8], params: usize, out: &mut Vec<Range<usize>>) {
    let Some(&n) = h4.get(params) else { return };
    for i in 0..usize::from(n) {
        let key = params + 1 + i * 22 + 6;
        out.push(key..key + 16);
    }
}

/// Zeroes every key byte of an H4 packet in place. Returns how many bytes
/// were zeroed.
pub fn redact_in_place(h4: &mut [u8]) -> usize {
    let mut n = 0;
    for r in key_ranges(h4) {
        n += r.len();
        h4[r].fill(0);
    }
    n
}

/// A redacted copy of a packet's H4 bytes.
pub fn redacted(packet: &H4Packet) -> Vec<u8> {
    let mut v = packet.as_bytes().to_vec();
    redact_in_place(&mut v);
    v
}

/// True when the packet carries key material that redaction would zero.
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
        // Continuation fragment: no L2CAP header to interpret.
        let raw = [
            [0x02, 0x40, 0x10, 21, 0x00, 17, 0x00, 0x06, 0x00, 0x06].as_slice(),
            &[0xAA; 16],
        ]
        .concat();
        assert!(key_ranges(&raw).is_empty());
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
