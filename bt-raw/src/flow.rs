//! Flow-control accounting between a host stack and a controller
//! (Core v5.4, Vol 4, Part E, §4.1 and §7.7.19).
//!
//! [`FlowControl`] watches both directions of an HCI link and keeps the
//! credits a host may use: command credits from `Num_HCI_Command_Packets`,
//! BR/EDR ACL buffers from `Read_Buffer_Size`, LE buffers from
//! `LE_Read_Buffer_Size` v1 and v2 (LE shares the BR/EDR pool when the
//! controller reports 0), ISO buffers from v2, credits returned per handle by
//! Number Of Completed Packets, and everything a handle held released on
//! Disconnection Complete. A relay uses it to check that it never pushes more
//! into the controller than the controller advertised, and to make sure no
//! credit leaks when packets are lost or duplicated.

use std::collections::HashMap;

use crate::packet::{Command, ConnectionHandle, Event, events, opcodes};
use crate::{Error, H4Packet, PacketType};

/// Which buffer pool a connection's data uses.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Pool {
    /// BR/EDR ACL buffers (also LE when the controller has no LE pool).
    Acl,
    /// LE ACL buffers.
    Le,
    /// ISO buffers.
    Iso,
}

/// One buffer pool.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct Buffers {
    /// Largest data payload per packet.
    pub mtu: u16,
    /// Packets the controller can hold.
    pub total: u16,
    /// Packets sent and not yet completed.
    pub in_flight: u16,
}

impl Buffers {
    /// Packets that may still be sent.
    pub fn available(&self) -> u16 {
        self.total.saturating_sub(self.in_flight)
    }
}

/// Counters of oddities seen on the link.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct FlowStats {
    /// Credits returned by Number Of Completed Packets beyond what was in flight.
    pub over_returned: u64,
    /// Completed-packet reports for handles the accountant never saw.
    pub unknown_handles: u64,
}

/// Flow-control accountant for one host↔controller link. Sans-IO.
#[derive(Clone, Debug)]
pub struct FlowControl {
    command_credits: u8,
    pools: HashMap<Pool, Buffers>,
    handles: HashMap<ConnectionHandle, (Pool, u16)>,
    stats: FlowStats,
}

impl Default for FlowControl {
    fn default() -> Self {
        Self::new()
    }
}

impl FlowControl {
    /// A fresh accountant: one command credit (what a host may assume after
    /// power-on), no data buffers known yet.
    pub fn new() -> Self {
        Self {
            command_credits: 1,
            pools: HashMap::new(),
            handles: HashMap::new(),
            stats: FlowStats::default(),
        }
    }

    /// Commands the host may send now.
    pub fn command_credits(&self) -> u8 {
        self.command_credits
    }

    /// The buffers of one pool, once the controller has reported them.
    pub fn buffers(&self, pool: Pool) -> Option<Buffers> {
        self.pools.get(&pool).copied()
    }

    /// Packets in flight on one handle.
    pub fn in_flight(&self, handle: ConnectionHandle) -> u16 {
        self.handles.get(&handle).map_or(0, |h| h.1)
    }

    /// Oddities seen so far.
    pub fn stats(&self) -> FlowStats {
        self.stats
    }

    /// The pool a handle's data goes to.
    pub fn pool_of(&self, handle: ConnectionHandle, kind: PacketType) -> Pool {
        if kind == PacketType::Iso {
            return Pool::Iso;
        }
        let pool = self.handles.get(&handle).map_or(
            // Unknown handle: LE if only an LE pool exists.
            if self.pools.contains_key(&Pool::Acl) || !self.pools.contains_key(&Pool::Le) {
                Pool::Acl
            } else {
                Pool::Le
            },
            |h| h.0,
        );
        self.effective(pool)
    }

    fn effective(&self, pool: Pool) -> Pool {
        // LE shares the BR/EDR pool when the controller reports no LE buffers.
        if pool == Pool::Le && self.pools.get(&Pool::Le).is_none_or(|b| b.total == 0) {
            Pool::Acl
        } else {
            pool
        }
    }

    /// Whether `packet` (host → controller) may be sent now without exceeding
    /// what the controller advertised. Data sent before the buffer sizes are
    /// known is not limited.
    pub fn can_send(&self, packet: &H4Packet) -> bool {
        match packet.kind() {
            PacketType::Command => self.command_credits > 0 || needs_no_credit(packet),
            PacketType::Acl | PacketType::Iso => {
                let handle = data_handle(packet);
                let pool = self.pool_of(handle, packet.kind());
                self.pools.get(&pool).is_none_or(|b| b.available() > 0)
            }
            _ => true,
        }
    }

    /// Accounts one host → controller packet.
    ///
    /// # Errors
    /// [`Error::FlowControl`] when the host exceeded its credits; the packet is
    /// still accounted, so the caller decides what to do.
    pub fn on_host_packet(&mut self, packet: &H4Packet) -> Result<(), Error> {
        match packet.kind() {
            PacketType::Command if needs_no_credit(packet) => Ok(()),
            PacketType::Command => {
                if self.command_credits == 0 {
                    return Err(Error::FlowControl(format!(
                        "command {} sent with no command credits",
                        Command::new(packet)
                            .map(|c| c.opcode().to_string())
                            .unwrap_or_default()
                    )));
                }
                self.command_credits -= 1;
                Ok(())
            }
            PacketType::Acl | PacketType::Iso => {
                let handle = data_handle(packet);
                let pool = self.pool_of(handle, packet.kind());
                let entry = self.handles.entry(handle).or_insert((pool, 0));
                entry.1 = entry.1.saturating_add(1);
                let Some(b) = self.pools.get_mut(&pool) else {
                    return Ok(());
                };
                let over = b.in_flight >= b.total;
                b.in_flight = b.in_flight.saturating_add(1);
                if over {
                    return Err(Error::FlowControl(format!(
                        "{:?} buffers exhausted ({} of {}) on handle {handle}",
                        pool, b.in_flight, b.total
                    )));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Accounts one controller → host packet (credits come back in events).
    pub fn on_controller_packet(&mut self, packet: &H4Packet) {
        let Ok(ev) = Event::new(packet) else { return };
        if let Some(n) = ev.command_credits() {
            self.command_credits = n;
        }
        if let Some(cc) = ev.command_complete() {
            self.on_command_complete(cc.opcode, cc.return_params);
        }
        if let Some(done) = ev.completed_packets() {
            for (handle, count) in done {
                self.complete(handle, count);
            }
        }
        let p = ev.params();
        match ev.code() {
            events::CONNECTION_COMPLETE if p.first() == Some(&0) && p.len() >= 3 => {
                self.open(handle_at(p, 1), Pool::Acl);
            }
            events::DISCONNECTION_COMPLETE if p.first() == Some(&0) && p.len() >= 3 => {
                self.release(handle_at(p, 1));
            }
            events::LE_META => match ev.le_subevent() {
                Some(
                    events::LE_CONNECTION_COMPLETE
                    | events::LE_ENHANCED_CONNECTION_COMPLETE
                    | events::LE_ENHANCED_CONNECTION_COMPLETE_V2,
                ) if p.len() >= 4 && p[1] == 0 => {
                    self.open(handle_at(p, 2), Pool::Le);
                }
                Some(events::LE_CIS_ESTABLISHED) if p.len() >= 4 && p[1] == 0 => {
                    self.open(handle_at(p, 2), Pool::Iso);
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn on_command_complete(&mut self, op: crate::Opcode, r: &[u8]) {
        if r.first() != Some(&0) {
            return;
        }
        let le16 = |at: usize| r.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let set =
            |pools: &mut HashMap<Pool, Buffers>, pool, mtu: Option<u16>, total: Option<u16>| {
                if let (Some(mtu), Some(total)) = (mtu, total) {
                    let b = pools.entry(pool).or_default();
                    b.mtu = mtu;
                    b.total = total;
                }
            };
        match op {
            opcodes::RESET => {
                self.handles.clear();
                for b in self.pools.values_mut() {
                    b.in_flight = 0;
                }
            }
            // Status, ACL_Data_Packet_Length u16, SCO len u8, Total_Num_ACL u16, Total SCO u16.
            opcodes::READ_BUFFER_SIZE => set(&mut self.pools, Pool::Acl, le16(1), le16(4)),
            // Status, LE_ACL_Data_Packet_Length u16, Total_Num_LE_ACL u8.
            opcodes::LE_READ_BUFFER_SIZE => {
                set(
                    &mut self.pools,
                    Pool::Le,
                    le16(1),
                    r.get(3).map(|&n| u16::from(n)),
                );
            }
            // ... then ISO_Data_Packet_Length u16, Total_Num_ISO u8.
            opcodes::LE_READ_BUFFER_SIZE_V2 => {
                set(
                    &mut self.pools,
                    Pool::Le,
                    le16(1),
                    r.get(3).map(|&n| u16::from(n)),
                );
                set(
                    &mut self.pools,
                    Pool::Iso,
                    le16(4),
                    r.get(6).map(|&n| u16::from(n)),
                );
            }
            _ => {}
        }
    }

    fn open(&mut self, handle: ConnectionHandle, pool: Pool) {
        let pool = self.effective(pool);
        // Packets already counted under a guessed pool move with the handle.
        if let Some((old, n)) = self.handles.insert(handle, (pool, 0))
            && n > 0
        {
            if let Some(b) = self.pools.get_mut(&old) {
                b.in_flight = b.in_flight.saturating_sub(n);
            }
            if let Some(b) = self.pools.get_mut(&pool) {
                b.in_flight = b.in_flight.saturating_add(n);
            }
            self.handles.insert(handle, (pool, n));
        }
    }

    fn complete(&mut self, handle: ConnectionHandle, count: u16) {
        let Some(h) = self.handles.get_mut(&handle) else {
            self.stats.unknown_handles += 1;
            return;
        };
        let n = count.min(h.1);
        if count > h.1 {
            self.stats.over_returned += u64::from(count - h.1);
        }
        h.1 -= n;
        if let Some(b) = self.pools.get_mut(&h.0) {
            b.in_flight = b.in_flight.saturating_sub(n);
        }
    }

    fn release(&mut self, handle: ConnectionHandle) {
        if let Some((pool, n)) = self.handles.remove(&handle)
            && let Some(b) = self.pools.get_mut(&pool)
        {
            b.in_flight = b.in_flight.saturating_sub(n);
        }
    }
}

fn handle_at(p: &[u8], at: usize) -> ConnectionHandle {
    ConnectionHandle(u16::from_le_bytes([p[at], p[at + 1]]) & 0x0FFF)
}

fn data_handle(packet: &H4Packet) -> ConnectionHandle {
    let b = packet.body();
    ConnectionHandle(u16::from_le_bytes([b[0], b[1]]) & 0x0FFF)
}

/// Host_Number_Of_Completed_Packets may be sent without command credits and
/// gets no Command Complete (Core v5.4, Vol 4, Part E, §7.3.40): charging it
/// a credit would leak that credit for good.
fn needs_no_credit(packet: &H4Packet) -> bool {
    Command::new(packet).is_ok_and(|c| c.opcode() == opcodes::HOST_NUMBER_OF_COMPLETED_PACKETS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(raw: &[u8]) -> H4Packet {
        H4Packet::parse(raw.to_vec()).unwrap()
    }

    fn acl(handle: u16) -> H4Packet {
        let [lo, hi] = (handle | 0x2000).to_le_bytes();
        p(&[0x02, lo, hi, 0x01, 0x00, 0xEE])
    }

    fn nocp(pairs: &[(u16, u16)]) -> H4Packet {
        let mut v = vec![0x04, 0x13, (1 + 4 * pairs.len()) as u8, pairs.len() as u8];
        for (h, n) in pairs {
            v.extend_from_slice(&h.to_le_bytes());
            v.extend_from_slice(&n.to_le_bytes());
        }
        p(&v)
    }

    fn le_conn(handle: u16) -> H4Packet {
        let [lo, hi] = handle.to_le_bytes();
        let mut v = vec![0x04, 0x3E, 19, 0x01, 0x00, lo, hi];
        v.resize(3 + 19, 0);
        p(&v)
    }

    /// LE_Read_Buffer_Size: LE ACL 27 bytes x 2 packets.
    fn le_buffers(total: u8) -> H4Packet {
        p(&[0x04, 0x0E, 0x07, 0x01, 0x02, 0x20, 0x00, 27, 0x00, total])
    }

    #[test]
    fn host_number_of_completed_packets_takes_no_command_credit() {
        let mut f = FlowControl::new();
        // One credit, then HNOCP (handle 0x0040, 1 packet): no reply will come.
        f.on_controller_packet(&p(&[0x04, 0x0E, 0x04, 0x01, 0x00, 0x00, 0x00]));
        let hnocp = p(&[0x01, 0x35, 0x0C, 0x05, 0x01, 0x40, 0x00, 0x01, 0x00]);
        assert!(f.can_send(&hnocp));
        f.on_host_packet(&hnocp).unwrap();
        assert_eq!(f.command_credits(), 1, "the credit is still there");
        f.on_host_packet(&p(&[0x01, 0x03, 0x0C, 0x00])).unwrap();
        assert_eq!(f.command_credits(), 0);
        assert!(f.can_send(&hnocp), "allowed even with no credits");
        f.on_host_packet(&hnocp).unwrap();
    }

    #[test]
    fn command_credits_follow_complete_and_status() {
        let mut f = FlowControl::new();
        let reset = p(&[0x01, 0x03, 0x0C, 0x00]);
        assert!(f.can_send(&reset));
        f.on_host_packet(&reset).unwrap();
        assert!(!f.can_send(&reset));
        assert!(f.on_host_packet(&reset).is_err());
        f.on_controller_packet(&p(&[0x04, 0x0E, 0x04, 0x05, 0x03, 0x0C, 0x00]));
        assert_eq!(f.command_credits(), 5);
        f.on_controller_packet(&p(&[0x04, 0x0F, 0x04, 0x00, 0x00, 0x0D, 0x20]));
        assert_eq!(f.command_credits(), 0);
    }

    #[test]
    fn le_buffers_limit_and_nocp_returns_per_handle() {
        let mut f = FlowControl::new();
        f.on_controller_packet(&le_buffers(2));
        assert_eq!(
            f.buffers(Pool::Le),
            Some(Buffers {
                mtu: 27,
                total: 2,
                in_flight: 0
            })
        );
        f.on_controller_packet(&le_conn(0x40));
        f.on_controller_packet(&le_conn(0x41));
        f.on_host_packet(&acl(0x40)).unwrap();
        f.on_host_packet(&acl(0x41)).unwrap();
        assert!(!f.can_send(&acl(0x40)));
        assert!(f.on_host_packet(&acl(0x40)).is_err());
        f.on_controller_packet(&nocp(&[(0x40, 2)]));
        assert_eq!(f.in_flight(ConnectionHandle(0x40)), 0);
        assert_eq!(f.buffers(Pool::Le).unwrap().in_flight, 1);
        assert!(f.can_send(&acl(0x40)));
    }

    #[test]
    fn le_shares_acl_pool_when_controller_reports_zero() {
        let mut f = FlowControl::new();
        // Read_Buffer_Size: ACL 1021 x 3.
        f.on_controller_packet(&p(&[
            0x04, 0x0E, 0x0B, 0x01, 0x05, 0x10, 0x00, 0xFD, 0x03, 0x40, 0x03, 0x00, 0x00, 0x00,
        ]));
        f.on_controller_packet(&le_buffers(0));
        f.on_controller_packet(&le_conn(0x01));
        assert_eq!(f.pool_of(ConnectionHandle(1), PacketType::Acl), Pool::Acl);
        for _ in 0..3 {
            f.on_host_packet(&acl(0x01)).unwrap();
        }
        assert!(!f.can_send(&acl(0x01)));
        assert_eq!(f.buffers(Pool::Acl).unwrap().total, 3);
    }

    #[test]
    fn le_read_buffer_size_v2_sets_iso_pool() {
        let mut f = FlowControl::new();
        f.on_controller_packet(&p(&[
            0x04, 0x0E, 0x0A, 0x01, 0x60, 0x20, 0x00, 0xFB, 0x00, 8, 0x20, 0x01, 4,
        ]));
        assert_eq!(f.buffers(Pool::Le).unwrap().total, 8);
        assert_eq!(
            f.buffers(Pool::Iso),
            Some(Buffers {
                mtu: 288,
                total: 4,
                in_flight: 0
            })
        );
    }

    #[test]
    fn disconnection_releases_credits() {
        let mut f = FlowControl::new();
        f.on_controller_packet(&le_buffers(2));
        f.on_controller_packet(&le_conn(0x40));
        f.on_host_packet(&acl(0x40)).unwrap();
        f.on_host_packet(&acl(0x40)).unwrap();
        assert!(!f.can_send(&acl(0x40)));
        f.on_controller_packet(&p(&[0x04, 0x05, 0x04, 0x00, 0x40, 0x00, 0x13]));
        assert_eq!(f.buffers(Pool::Le).unwrap().in_flight, 0);
        assert_eq!(f.in_flight(ConnectionHandle(0x40)), 0);
        // A late NOCP for the gone handle does not inflate credits.
        f.on_controller_packet(&nocp(&[(0x40, 2)]));
        assert_eq!(f.buffers(Pool::Le).unwrap().available(), 2);
        assert_eq!(f.stats().unknown_handles, 1);
    }

    #[test]
    fn duplicated_nocp_does_not_inflate_credits() {
        let mut f = FlowControl::new();
        f.on_controller_packet(&le_buffers(2));
        f.on_controller_packet(&le_conn(0x40));
        f.on_host_packet(&acl(0x40)).unwrap();
        f.on_controller_packet(&nocp(&[(0x40, 1)]));
        f.on_controller_packet(&nocp(&[(0x40, 1)]));
        assert_eq!(f.buffers(Pool::Le).unwrap().available(), 2);
        assert_eq!(f.stats().over_returned, 1);
    }

    #[test]
    fn reset_clears_in_flight() {
        let mut f = FlowControl::new();
        f.on_controller_packet(&le_buffers(2));
        f.on_controller_packet(&le_conn(0x40));
        f.on_host_packet(&acl(0x40)).unwrap();
        f.on_controller_packet(&p(&[0x04, 0x0E, 0x04, 0x01, 0x03, 0x0C, 0x00]));
        assert_eq!(f.buffers(Pool::Le).unwrap().in_flight, 0);
    }
}
