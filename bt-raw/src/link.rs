//! What a relay between a host stack and a radio must remember to fail
//! cleanly when the radio disappears: the commands waiting for a reply, the
//! open connections (and whether they are encrypted), and the names peers
//! advertised. Sans-IO: feed it every packet in both directions.
//!
//! When the radio is lost, [`LinkTracker::radio_lost`] returns the events a
//! well-behaved controller would have produced so that the host stack fails
//! fast instead of waiting for replies that will never come: one refusal of
//! the right kind for every outstanding command (Android aborts on a
//! mismatched or missing reply), a Disconnection Complete for every open
//! connection, and a Hardware Error.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::h4::{H4Packet, PacketType};
use crate::packet::{Command, Event, Opcode, events, status};
use crate::policy::{hardware_error, refusal};

/// Most names remembered from advertising reports (oldest forgotten first).
const MAX_NAMES: usize = 256;

/// Most outstanding commands tracked (stacks keep one or a few in flight).
const MAX_OUTSTANDING: usize = 64;

/// Disconnection reason used when the radio is gone: Connection Timeout.
pub const REASON_CONNECTION_TIMEOUT: u8 = 0x08;

/// Hardware Error code sent when the radio is gone.
pub const HARDWARE_ERROR_RADIO_LOST: u8 = 0x01;

/// An open connection.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Connection {
    /// Connection handle (12 bits).
    pub handle: u16,
    /// Peer address as transmitted (little-endian byte order).
    pub address: [u8; 6],
    /// Whether the link is encrypted.
    pub encrypted: bool,
}

impl Connection {
    /// The peer address in the usual `AA:BB:CC:DD:EE:FF` notation.
    pub fn address_string(&self) -> String {
        format_address(&self.address)
    }
}

/// A change in the set of connections, reported by
/// [`LinkTracker::on_controller_packet`].
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum LinkChange {
    /// A connection was established.
    Connected(Connection),
    /// Encryption was switched on or off.
    Encryption {
        /// Connection handle.
        handle: u16,
        /// New state.
        encrypted: bool,
    },
    /// A connection ended.
    Disconnected {
        /// Connection handle.
        handle: u16,
        /// HCI reason code.
        reason: u8,
    },
}

/// Tracks outstanding commands, connections and advertised names.
#[derive(Debug, Default)]
pub struct LinkTracker {
    outstanding: VecDeque<Opcode>,
    connections: BTreeMap<u16, Connection>,
    names: HashMap<[u8; 6], String>,
    name_order: VecDeque<[u8; 6]>,
}

impl LinkTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a packet the host stack sent towards the radio.
    pub fn on_host_packet(&mut self, packet: &H4Packet) {
        if let Ok(cmd) = Command::new(packet) {
            if self.outstanding.len() == MAX_OUTSTANDING {
                self.outstanding.pop_front();
            }
            self.outstanding.push_back(cmd.opcode());
        }
    }

    /// Records a packet the radio sent towards the host stack; returns the
    /// connection change it reports, if any.
    pub fn on_controller_packet(&mut self, packet: &H4Packet) -> Option<LinkChange> {
        let ev = Event::new(packet).ok()?;
        if let Some(op) = ev
            .command_complete()
            .map(|c| c.opcode)
            .or_else(|| ev.command_status().map(|s| s.opcode))
        {
            self.answered(op);
            return None;
        }
        let p = ev.params();
        match ev.code() {
            events::CONNECTION_COMPLETE => {
                // Status, handle(2), BD_ADDR(6), link type, encryption.
                let (st, handle) = (*p.first()?, handle_at(p, 1)?);
                let address = addr_at(p, 3)?;
                let encrypted = p.get(10).is_some_and(|e| *e != 0);
                (st == status::SUCCESS).then(|| self.connected(handle, address, encrypted))
            }
            events::DISCONNECTION_COMPLETE => {
                let (st, handle, reason) = (*p.first()?, handle_at(p, 1)?, *p.get(3)?);
                if st != status::SUCCESS {
                    return None;
                }
                self.connections.remove(&handle)?;
                Some(LinkChange::Disconnected { handle, reason })
            }
            events::ENCRYPTION_CHANGE | events::ENCRYPTION_CHANGE_V2 => {
                let (st, handle, on) = (*p.first()?, handle_at(p, 1)?, *p.get(3)? != 0);
                if st != status::SUCCESS {
                    return None;
                }
                self.connections.get_mut(&handle)?.encrypted = on;
                Some(LinkChange::Encryption {
                    handle,
                    encrypted: on,
                })
            }
            events::LE_META => self.on_le_meta(p),
            _ => None,
        }
    }

    fn on_le_meta(&mut self, p: &[u8]) -> Option<LinkChange> {
        match *p.first()? {
            events::LE_CONNECTION_COMPLETE
            | events::LE_ENHANCED_CONNECTION_COMPLETE
            | events::LE_ENHANCED_CONNECTION_COMPLETE_V2 => {
                // Subevent, status, handle(2), role, peer address type, peer address(6).
                let (st, handle) = (*p.get(1)?, handle_at(p, 2)?);
                let address = addr_at(p, 6)?;
                (st == status::SUCCESS).then(|| self.connected(handle, address, false))
            }
            LE_ADVERTISING_REPORT => {
                self.legacy_reports(p);
                None
            }
            LE_EXTENDED_ADVERTISING_REPORT => {
                self.extended_reports(p);
                None
            }
            _ => None,
        }
    }

    fn connected(&mut self, handle: u16, address: [u8; 6], encrypted: bool) -> LinkChange {
        let c = Connection {
            handle,
            address,
            encrypted,
        };
        self.connections.insert(handle, c.clone());
        LinkChange::Connected(c)
    }

    fn answered(&mut self, op: Opcode) {
        if let Some(i) = self.outstanding.iter().position(|o| *o == op) {
            self.outstanding.remove(i);
        }
    }

    /// Legacy reports: subevent, count, then per report: event type,
    /// address type, address(6), data length, data, RSSI.
    fn legacy_reports(&mut self, p: &[u8]) {
        let Some(&n) = p.get(1) else { return };
        let mut at = 2;
        for _ in 0..n {
            let (Some(addr), Some(&len)) = (addr_at(p, at + 2), p.get(at + 8)) else {
                return;
            };
            let data_at = at + 9;
            let Some(data) = p.get(data_at..data_at + usize::from(len)) else {
                return;
            };
            self.learn_name(addr, data);
            at = data_at + usize::from(len) + 1;
        }
    }

    /// Extended reports: subevent, count, then per report 24 fixed bytes
    /// (event type(2), address type, address(6), PHYs, SID, TX power, RSSI,
    /// interval(2), direct address type and address(7), data length) and the
    /// data.
    fn extended_reports(&mut self, p: &[u8]) {
        let Some(&n) = p.get(1) else { return };
        let mut at = 2;
        for _ in 0..n {
            let (Some(addr), Some(&len)) = (addr_at(p, at + 3), p.get(at + 23)) else {
                return;
            };
            let data_at = at + 24;
            let Some(data) = p.get(data_at..data_at + usize::from(len)) else {
                return;
            };
            self.learn_name(addr, data);
            at = data_at + usize::from(len);
        }
    }

    fn learn_name(&mut self, addr: [u8; 6], data: &[u8]) {
        let Some(name) = advertised_name(data) else {
            return;
        };
        if self.names.insert(addr, name).is_none() {
            self.name_order.push_back(addr);
            if self.name_order.len() > MAX_NAMES
                && let Some(old) = self.name_order.pop_front()
            {
                self.names.remove(&old);
            }
        }
    }

    /// Commands sent and not answered yet, oldest first.
    pub fn outstanding(&self) -> impl Iterator<Item = Opcode> + '_ {
        self.outstanding.iter().copied()
    }

    /// The open connections, by handle.
    pub fn connections(&self) -> impl Iterator<Item = &Connection> {
        self.connections.values()
    }

    /// The name a peer advertised, if one was seen.
    pub fn name_of(&self, address: &[u8; 6]) -> Option<&str> {
        self.names.get(address).map(String::as_str)
    }

    /// Forgets everything (a new stack or a new radio).
    pub fn clear(&mut self) {
        self.outstanding.clear();
        self.connections.clear();
    }

    /// The radio is gone: returns the events to give the host stack (in
    /// order: a refusal with Hardware Failure for every outstanding command,
    /// a Disconnection Complete for every open connection, one Hardware
    /// Error) and forgets the commands and connections.
    pub fn radio_lost(&mut self) -> Vec<H4Packet> {
        let mut out: Vec<H4Packet> = self
            .outstanding
            .drain(..)
            .map(|op| refusal(op, status::HARDWARE_FAILURE))
            .collect();
        out.extend(
            std::mem::take(&mut self.connections)
                .into_keys()
                .map(|h| disconnection_complete(h, REASON_CONNECTION_TIMEOUT)),
        );
        out.push(hardware_error(HARDWARE_ERROR_RADIO_LOST));
        out
    }
}

/// LE Advertising Report subevent.
const LE_ADVERTISING_REPORT: u8 = 0x02;
/// LE Extended Advertising Report subevent.
const LE_EXTENDED_ADVERTISING_REPORT: u8 = 0x0D;

/// A Disconnection Complete event (success) for `handle` with `reason`.
pub fn disconnection_complete(handle: u16, reason: u8) -> H4Packet {
    let [lo, hi] = (handle & 0x0FFF).to_le_bytes();
    H4Packet::from_parts(
        PacketType::Event,
        &[
            events::DISCONNECTION_COMPLETE,
            4,
            status::SUCCESS,
            lo,
            hi,
            reason,
        ],
    )
    .unwrap_or_else(|_| unreachable!("disconnection complete is well formed"))
}

/// An HCI_Disconnect command for `handle` with `reason` (e.g. 0x13, remote
/// user terminated): what a relay sends to clean up connections a lost host
/// stack left open in a controller.
pub fn disconnect_command(handle: u16, reason: u8) -> H4Packet {
    let [lo, hi] = (handle & 0x0FFF).to_le_bytes();
    H4Packet::command(crate::packet::opcodes::DISCONNECT.0, &[lo, hi, reason])
        .unwrap_or_else(|_| unreachable!("disconnect is well formed"))
}

/// The command a Command Complete or Command Status event answers.
pub fn answers(packet: &H4Packet) -> Option<Opcode> {
    let ev = Event::new(packet).ok()?;
    ev.command_complete()
        .map(|c| c.opcode)
        .or_else(|| ev.command_status().map(|s| s.opcode))
}

/// The handle a Disconnection Complete event reports (any status).
pub fn disconnected_handle(packet: &H4Packet) -> Option<u16> {
    let ev = Event::new(packet).ok()?;
    (ev.code() == events::DISCONNECTION_COMPLETE)
        .then(|| handle_at(ev.params(), 1))
        .flatten()
}

/// `AA:BB:CC:DD:EE:FF` for an address in transmission (little-endian) order.
pub fn format_address(addr: &[u8; 6]) -> String {
    addr.iter()
        .rev()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The complete (0x09) or shortened (0x08) local name in advertising data.
pub fn advertised_name(data: &[u8]) -> Option<String> {
    let mut rest = data;
    let mut short = None;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if len == 0 || tail.len() < len {
            break;
        }
        let (ad_type, value) = (tail[0], &tail[1..len]);
        match ad_type {
            0x09 => return Some(String::from_utf8_lossy(value).into_owned()),
            0x08 => short = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
        rest = &tail[len..];
    }
    short
}

fn handle_at(p: &[u8], at: usize) -> Option<u16> {
    let b = p.get(at..at + 2)?;
    Some(u16::from_le_bytes([b[0], b[1]]) & 0x0FFF)
}

fn addr_at(p: &[u8], at: usize) -> Option<[u8; 6]> {
    p.get(at..at + 6)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(bytes: &[u8]) -> H4Packet {
        H4Packet::parse(bytes.to_vec()).unwrap()
    }

    const ADDR: [u8; 6] = [0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6];

    fn le_conn_complete(handle: u16) -> H4Packet {
        let [lo, hi] = handle.to_le_bytes();
        let mut p = vec![0x04, 0x3E, 19, 0x01, 0x00, lo, hi, 0x00, 0x00];
        p.extend_from_slice(&ADDR);
        p.extend_from_slice(&[0x18, 0, 0, 0, 0x48, 0, 0]);
        pkt(&p)
    }

    #[test]
    fn commands_are_outstanding_until_answered() {
        let mut t = LinkTracker::new();
        t.on_host_packet(&pkt(&[0x01, 0x03, 0x0C, 0x00]));
        t.on_host_packet(&pkt(&[0x01, 0x0D, 0x20, 0x00]));
        assert_eq!(
            t.outstanding().collect::<Vec<_>>(),
            vec![Opcode(0x0C03), Opcode(0x200D)]
        );
        // Command Status for LE_Create_Connection.
        t.on_controller_packet(&pkt(&[0x04, 0x0F, 0x04, 0x00, 0x01, 0x0D, 0x20]));
        assert_eq!(t.outstanding().collect::<Vec<_>>(), vec![Opcode(0x0C03)]);
        t.on_controller_packet(&pkt(&[0x04, 0x0E, 0x04, 0x01, 0x03, 0x0C, 0x00]));
        assert_eq!(t.outstanding().count(), 0);
    }

    #[test]
    fn connections_encryption_and_names_are_tracked() {
        let mut t = LinkTracker::new();
        // Legacy advertising report from ADDR with flags and the name "Enc".
        let mut adv = vec![0x04, 0x3E, 0, 0x02, 0x01, 0x00, 0x01];
        adv.extend_from_slice(&ADDR);
        let data = [0x02, 0x01, 0x06, 0x04, 0x09, b'E', b'n', b'c'];
        adv.push(data.len() as u8);
        adv.extend_from_slice(&data);
        adv.push(0xC0);
        adv[2] = (adv.len() - 3) as u8;
        assert_eq!(t.on_controller_packet(&pkt(&adv)), None);
        assert_eq!(t.name_of(&ADDR), Some("Enc"));

        let ch = t.on_controller_packet(&le_conn_complete(0x0040));
        let Some(LinkChange::Connected(c)) = ch else {
            panic!("{ch:?}")
        };
        assert_eq!(
            (c.handle, c.address_string().as_str()),
            (0x40, "F6:F5:F4:F3:F2:F1")
        );
        let enc = pkt(&[0x04, 0x08, 0x04, 0x00, 0x40, 0x00, 0x01]);
        assert_eq!(
            t.on_controller_packet(&enc),
            Some(LinkChange::Encryption {
                handle: 0x40,
                encrypted: true
            })
        );
        assert!(t.connections().next().unwrap().encrypted);
        let disc = disconnection_complete(0x40, 0x13);
        assert_eq!(
            t.on_controller_packet(&disc),
            Some(LinkChange::Disconnected {
                handle: 0x40,
                reason: 0x13
            })
        );
        assert_eq!(t.connections().count(), 0);
    }

    #[test]
    fn extended_reports_give_names() {
        let mut t = LinkTracker::new();
        let data = [0x05, 0x09, b'P', b'e', b'r', b'i'];
        let mut p = vec![0x04, 0x3E, 0, 0x0D, 0x01, 0x13, 0x00, 0x01];
        p.extend_from_slice(&ADDR);
        p.extend_from_slice(&[1, 0, 0xFF, 0x7F, 0xC0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        p.push(data.len() as u8);
        p.extend_from_slice(&data);
        p[2] = (p.len() - 3) as u8;
        t.on_controller_packet(&pkt(&p));
        assert_eq!(t.name_of(&ADDR), Some("Peri"));
    }

    #[test]
    fn truncated_events_are_ignored_without_panicking() {
        let mut t = LinkTracker::new();
        for bytes in [
            &[0x04, 0x3E, 0x02, 0x02, 0x05][..],
            &[0x04, 0x3E, 0x03, 0x0D, 0x02, 0x13],
            &[0x04, 0x3E, 0x03, 0x01, 0x00, 0x40],
            &[0x04, 0x05, 0x01, 0x00],
            &[0x04, 0x08, 0x02, 0x00, 0x40],
        ] {
            assert_eq!(t.on_controller_packet(&pkt(bytes)), None);
        }
    }

    #[test]
    fn radio_lost_refuses_disconnects_and_reports_hardware_error() {
        let mut t = LinkTracker::new();
        t.on_controller_packet(&le_conn_complete(0x0041));
        t.on_host_packet(&pkt(&[0x01, 0x16, 0x20, 0x02, 0x41, 0x00]));
        t.on_host_packet(&pkt(&[0x01, 0x03, 0x0C, 0x00]));
        let out = t.radio_lost();
        let bytes: Vec<&[u8]> = out.iter().map(H4Packet::as_bytes).collect();
        assert_eq!(
            bytes,
            vec![
                // LE_Read_Remote_Features is answered with Command Status.
                &[0x04, 0x0F, 0x04, 0x03, 0x01, 0x16, 0x20][..],
                &[0x04, 0x0E, 0x04, 0x01, 0x03, 0x0C, 0x03],
                &[0x04, 0x05, 0x04, 0x00, 0x41, 0x00, 0x08],
                &[0x04, 0x10, 0x01, 0x01],
            ]
        );
        assert_eq!(t.outstanding().count(), 0);
        assert_eq!(t.connections().count(), 0);
        assert_eq!(t.radio_lost().len(), 1, "only the hardware error again");
    }

    #[test]
    fn cleanup_helpers_build_and_recognise_packets() {
        let d = disconnect_command(0x0041, 0x13);
        assert_eq!(d.as_bytes(), &[0x01, 0x06, 0x04, 0x03, 0x41, 0x00, 0x13]);
        let st = pkt(&[0x04, 0x0F, 0x04, 0x00, 0x01, 0x06, 0x04]);
        assert_eq!(answers(&st), Some(crate::packet::opcodes::DISCONNECT));
        assert_eq!(answers(&d), None);
        assert_eq!(
            disconnected_handle(&disconnection_complete(0x41, 0x16)),
            Some(0x41)
        );
        assert_eq!(disconnected_handle(&st), None);
    }

    #[test]
    fn names_are_bounded() {
        let mut t = LinkTracker::new();
        for i in 0..(MAX_NAMES as u32 + 10) {
            let b = i.to_le_bytes();
            t.learn_name([b[0], b[1], 0, 0, 0, 0], &[0x02, 0x09, b'x']);
        }
        assert_eq!(t.names.len(), MAX_NAMES);
    }
}
