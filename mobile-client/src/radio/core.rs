//! The sans-IO part of lending the radio: the policy, flow-control
//! accounting and the credit queue ([`RelayCore`]), the relay's counters and
//! the capture record. No I/O, no clock: the driver in the parent module
//! feeds it packets and carries out its outputs.

use std::collections::VecDeque;

use bt_raw::btsnoop::{Direction, SnoopWriter};
use bt_raw::flow::FlowControl;
use bt_raw::packet::{Command, ConnectionHandle, opcodes};
use bt_raw::policy::{Policy, Verdict};
use bt_raw::{H4Packet, PacketType};

use super::DEFAULT_QUEUE_LIMIT;

/// Counters of a radio relay. All zero (and `spec` empty) before lending.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct RadioStats {
    /// The radio lent, as given (`tcp:127.0.0.1:9002`, `hci:0`, ...).
    pub spec: String,
    /// Packets received from the phone's stack (all kinds, denied included).
    pub packets_from_phone: u64,
    /// Packets written to the radio.
    pub packets_to_radio: u64,
    /// Bytes written to the radio (H4, type byte included).
    pub bytes_to_radio: u64,
    /// Packets read from the radio (all sent up unchanged).
    pub packets_from_radio: u64,
    /// Bytes read from the radio.
    pub bytes_from_radio: u64,
    /// Commands the policy denied (answered locally, never sent).
    pub denied_commands: u64,
    /// Packets that had to wait for controller credits before being sent.
    pub queued_for_credits: u64,
    /// Packets waiting for credits right now.
    pub queue_len: u64,
    /// Most packets that waited at once.
    pub queue_peak: u64,
    /// Held packets dropped because the stack sent `HCI_Reset`.
    pub dropped_on_reset: u64,
    /// Packets from the phone that a controller must never get (events),
    /// dropped.
    pub dropped_invalid: u64,
    /// Records written to the `--snoop` capture.
    pub snoop_records: u64,
    /// `RadioState` messages sent to the host.
    pub radio_state_messages: u64,
    /// Why the relay stopped early (radio closed or failed), if it did.
    pub error: Option<String>,
    /// Whether the radio answered the `HCI_Reset` sent when lending ended
    /// (`tcp:`, `tcp-listen:` and `unix:` radios; an `hci:N` adapter goes
    /// back to the kernel, which closes it).
    pub reset_on_release: bool,
}

/// What the core wants done with a packet.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum RelayOutput {
    /// Write it to the radio (a controller-facing packet: captured as sent).
    ToRadio(H4Packet),
    /// Send it up to the phone's stack; it came from the radio (captured as
    /// received).
    ToPhone(H4Packet),
    /// Send it up to the phone's stack; it is the local refusal of a denied
    /// command (never captured: the radio never saw that exchange).
    Refusal(H4Packet),
}

impl RelayOutput {
    /// The btsnoop direction this output is recorded with, `None` for
    /// packets the controller never saw.
    #[must_use]
    pub fn snoop_direction(&self) -> Option<Direction> {
        match self {
            Self::ToRadio(_) => Some(Direction::HostToController),
            Self::ToPhone(_) => Some(Direction::ControllerToHost),
            Self::Refusal(_) => None,
        }
    }

    /// The packet.
    #[must_use]
    pub fn packet(&self) -> &H4Packet {
        match self {
            Self::ToRadio(p) | Self::ToPhone(p) | Self::Refusal(p) => p,
        }
    }
}

/// Writes `output` to a capture if it is controller-facing; returns whether
/// it did. The one place that decides what a handset capture contains.
///
/// # Errors
/// [`bt_raw::Error::Io`] from the writer.
pub fn record<W: std::io::Write>(
    snoop: &mut SnoopWriter<W>,
    output: &RelayOutput,
    unix_us: i64,
) -> Result<bool, bt_raw::Error> {
    match output.snoop_direction() {
        Some(dir) => snoop.write(dir, output.packet(), unix_us).map(|()| true),
        None => Ok(false),
    }
}

/// The sans-IO relay: policy, flow-control accounting and the credit queue.
///
/// Feed it packets from the phone ([`RelayCore::from_phone`]) and from the
/// radio ([`RelayCore::from_radio`]); drain [`RelayCore::poll_output`] after
/// each call and carry the outputs out in order.
#[derive(Debug)]
pub struct RelayCore {
    policy: Policy,
    flow: FlowControl,
    commands: VecDeque<H4Packet>,
    data: VecDeque<H4Packet>,
    limit: usize,
    out: VecDeque<RelayOutput>,
    stats: RadioStats,
}

impl RelayCore {
    /// A core with `policy` and the default queue bound.
    #[must_use]
    pub fn new(policy: Policy) -> Self {
        Self::with_queue_limit(policy, DEFAULT_QUEUE_LIMIT)
    }

    /// A core whose credit queue holds at most `limit` packets before
    /// [`RelayCore::can_accept`] turns false.
    #[must_use]
    pub fn with_queue_limit(policy: Policy, limit: usize) -> Self {
        Self {
            policy,
            flow: FlowControl::new(),
            commands: VecDeque::new(),
            data: VecDeque::new(),
            limit: limit.max(1),
            out: VecDeque::new(),
            stats: RadioStats::default(),
        }
    }

    /// False while the credit queue is full: the driver then stops reading
    /// from the phone until credits return.
    #[must_use]
    pub fn can_accept(&self) -> bool {
        self.queued() < self.limit
    }

    /// Packets held for credits.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.commands.len() + self.data.len()
    }

    /// The counters (the driver adds bytes, capture and heartbeat numbers).
    #[must_use]
    pub fn stats(&self) -> &RadioStats {
        &self.stats
    }

    /// The flow-control accountant of the controller link.
    #[must_use]
    pub fn flow(&self) -> &FlowControl {
        &self.flow
    }

    /// The policy (with its own counters).
    #[must_use]
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The next thing to do, in order.
    pub fn poll_output(&mut self) -> Option<RelayOutput> {
        self.out.pop_front()
    }

    /// One packet from the phone's stack. `now_ms` is any monotonic
    /// millisecond clock (for policed commands).
    pub fn from_phone(&mut self, packet: H4Packet, now_ms: u64) {
        self.stats.packets_from_phone += 1;
        match packet.kind() {
            PacketType::Event => {
                // A controller never receives events; some would confuse it.
                self.stats.dropped_invalid += 1;
                tracing::warn!("dropped an HCI event sent by the phone's stack to the radio");
            }
            PacketType::Command => {
                if let Verdict::Deny(d) = self.policy.decide(&packet, now_ms) {
                    self.stats.denied_commands += 1;
                    tracing::info!(
                        opcode = %d.opcode,
                        rule = %d.reason,
                        status = d.status,
                        "command denied by the handset's HCI policy; answered locally"
                    );
                    self.out.push_back(RelayOutput::Refusal(d.reply));
                    return;
                }
                let op = Command::new(&packet).map(|c| c.opcode()).ok();
                if op == Some(opcodes::RESET) {
                    // The stack starts over: what it sent before is stale, and
                    // a Reset must get through even when credits were lost
                    // with a hung controller.
                    let dropped = self.queued() as u64;
                    if dropped > 0 {
                        tracing::info!(dropped, "HCI_Reset from the phone: dropping held packets");
                    }
                    self.stats.dropped_on_reset += dropped;
                    self.commands.clear();
                    self.data.clear();
                    self.update_queue_len();
                    self.send(packet);
                    return;
                }
                if op == Some(opcodes::HOST_NUMBER_OF_COMPLETED_PACKETS) {
                    // Needs no command credit (the accountant knows): it
                    // returns the controller's buffers, so it does not wait
                    // behind held commands either.
                    self.send(packet);
                    return;
                }
                if self.commands.is_empty() && self.flow.can_send(&packet) {
                    self.send(packet);
                } else {
                    self.hold(packet, true);
                }
            }
            PacketType::Acl | PacketType::Iso => {
                let handle = data_handle(&packet);
                let behind = self.data.iter().any(|q| data_handle(q) == handle);
                if !behind && self.flow.can_send(&packet) {
                    self.send(packet);
                } else {
                    self.hold(packet, false);
                }
            }
            // SCO has no buffer credits unless SCO flow control is enabled,
            // which the accountant does not track: pass it through.
            PacketType::Sco => self.send(packet),
        }
    }

    /// One packet from the radio: sent up unchanged, and whatever its credits
    /// release is sent to the radio after it.
    pub fn from_radio(&mut self, packet: H4Packet) {
        self.stats.packets_from_radio += 1;
        self.flow.on_controller_packet(&packet);
        self.out.push_back(RelayOutput::ToPhone(packet));
        self.release();
    }

    fn hold(&mut self, packet: H4Packet, command: bool) {
        tracing::debug!(kind = %packet.kind(), "holding a packet until the controller returns credits");
        if command {
            self.commands.push_back(packet);
        } else {
            self.data.push_back(packet);
        }
        self.stats.queued_for_credits += 1;
        self.update_queue_len();
    }

    fn send(&mut self, packet: H4Packet) {
        if let Err(e) = self.flow.on_host_packet(&packet) {
            // Only a Reset gets here without credits; the controller's reply
            // resets the accounting.
            tracing::debug!("{e}");
        }
        self.stats.packets_to_radio += 1;
        self.out.push_back(RelayOutput::ToRadio(packet));
    }

    fn release(&mut self) {
        while self.commands.front().is_some_and(|p| self.flow.can_send(p)) {
            if let Some(p) = self.commands.pop_front() {
                self.send(p);
            }
        }
        // Data: in order per connection handle; a handle whose oldest packet
        // must wait does not hold up the others.
        let mut blocked: Vec<ConnectionHandle> = Vec::new();
        let mut i = 0;
        while i < self.data.len() {
            let handle = data_handle(&self.data[i]);
            if !blocked.contains(&handle) && self.flow.can_send(&self.data[i]) {
                if let Some(p) = self.data.remove(i) {
                    self.send(p);
                }
            } else {
                if !blocked.contains(&handle) {
                    blocked.push(handle);
                }
                i += 1;
            }
        }
        self.update_queue_len();
    }

    fn update_queue_len(&mut self) {
        let n = self.queued() as u64;
        self.stats.queue_len = n;
        self.stats.queue_peak = self.stats.queue_peak.max(n);
    }
}

/// The connection handle of an ACL or ISO packet (12 bits).
fn data_handle(packet: &H4Packet) -> ConnectionHandle {
    let b = packet.body();
    let raw = match (b.first(), b.get(1)) {
        (Some(&lo), Some(&hi)) => u16::from_le_bytes([lo, hi]),
        _ => 0xFFFF,
    };
    ConnectionHandle(raw & 0x0FFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bt_raw::btsnoop::read_all;
    use bt_raw::packet::{Event, status};

    fn p(raw: &[u8]) -> H4Packet {
        H4Packet::parse(raw.to_vec()).unwrap()
    }

    fn cmd(op: u16) -> H4Packet {
        H4Packet::command(op, &[]).unwrap()
    }

    fn acl(handle: u16, byte: u8) -> H4Packet {
        let [lo, hi] = (handle | 0x2000).to_le_bytes();
        p(&[0x02, lo, hi, 0x01, 0x00, byte])
    }

    /// Command Complete for `op` with status 0 and `extra` return params,
    /// granting `credits` command credits.
    fn complete(op: u16, credits: u8, extra: &[u8]) -> H4Packet {
        let [lo, hi] = op.to_le_bytes();
        let mut v = vec![0x04, 0x0E, (4 + extra.len()) as u8, credits, lo, hi, 0x00];
        v.extend_from_slice(extra);
        p(&v)
    }

    fn le_conn(handle: u16) -> H4Packet {
        let [lo, hi] = handle.to_le_bytes();
        let mut v = vec![0x04, 0x3E, 19, 0x01, 0x00, lo, hi];
        v.resize(3 + 19, 0);
        p(&v)
    }

    fn nocp(handle: u16, n: u16) -> H4Packet {
        let [hl, hh] = handle.to_le_bytes();
        let [nl, nh] = n.to_le_bytes();
        p(&[0x04, 0x13, 0x05, 0x01, hl, hh, nl, nh])
    }

    fn drain(core: &mut RelayCore) -> Vec<RelayOutput> {
        std::iter::from_fn(|| core.poll_output()).collect()
    }

    fn to_radio(outs: &[RelayOutput]) -> Vec<H4Packet> {
        outs.iter()
            .filter_map(|o| match o {
                RelayOutput::ToRadio(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    /// A core whose controller has LE buffers for 2 packets and one open LE
    /// connection on handle 0x0040.
    fn core_with_le_link() -> RelayCore {
        let mut core = RelayCore::new(Policy::safe_default());
        core.from_phone(cmd(0x2002), 0);
        // LE_Read_Buffer_Size: 27 bytes x 2 packets.
        core.from_radio(complete(0x2002, 1, &[27, 0, 2]));
        core.from_radio(le_conn(0x0040));
        drain(&mut core);
        core
    }

    #[test]
    fn a_denied_vendor_command_is_answered_locally_and_never_reaches_the_radio() {
        let mut core = RelayCore::new(Policy::safe_default());
        core.from_phone(cmd(0xFC01), 0);
        let outs = drain(&mut core);
        assert_eq!(outs.len(), 1, "{outs:?}");
        let RelayOutput::Refusal(reply) = &outs[0] else {
            panic!("expected a local refusal, got {outs:?}");
        };
        // Vendor commands are refused with Command Status, Unknown HCI Command.
        let st = Event::new(reply).unwrap().command_status().unwrap();
        assert_eq!(st.opcode.0, 0xFC01);
        assert_eq!(st.status, status::UNKNOWN_HCI_COMMAND);
        assert_eq!(st.num_hci_command_packets, 1);
        assert!(to_radio(&outs).is_empty());
        assert_eq!(core.stats().denied_commands, 1);
        assert_eq!(core.stats().packets_to_radio, 0);
        // The denial consumed no credit: the next allowed command goes out.
        core.from_phone(cmd(0x1001), 0);
        assert_eq!(to_radio(&drain(&mut core)), vec![cmd(0x1001)]);
        // A denied command that normally gets Command Complete gets one.
        core.from_radio(complete(0x1001, 1, &[0; 8]));
        drain(&mut core);
        core.from_phone(cmd(0x0C0D), 0);
        let outs = drain(&mut core);
        let RelayOutput::Refusal(reply) = &outs[0] else {
            panic!("{outs:?}")
        };
        assert!(Event::new(reply).unwrap().command_complete().is_some());
    }

    #[test]
    fn commands_beyond_credits_wait_for_command_complete_in_order() {
        let mut core = RelayCore::new(Policy::safe_default());
        core.from_phone(cmd(0x1001), 0);
        core.from_phone(cmd(0x1009), 0);
        core.from_phone(cmd(0x1005), 0);
        assert_eq!(to_radio(&drain(&mut core)), vec![cmd(0x1001)]);
        assert_eq!(core.stats().queued_for_credits, 2);
        core.from_radio(complete(0x1001, 1, &[0; 8]));
        let outs = drain(&mut core);
        assert_eq!(outs[0], RelayOutput::ToPhone(complete(0x1001, 1, &[0; 8])));
        assert_eq!(to_radio(&outs), vec![cmd(0x1009)]);
        core.from_radio(complete(0x1009, 1, &[0; 6]));
        assert_eq!(to_radio(&drain(&mut core)), vec![cmd(0x1005)]);
        assert_eq!(core.queued(), 0);
    }

    #[test]
    fn acl_beyond_credits_is_held_then_released_on_nocp_in_order() {
        let mut core = core_with_le_link();
        for i in 0..5 {
            core.from_phone(acl(0x0040, i), 0);
        }
        assert_eq!(
            to_radio(&drain(&mut core)),
            vec![acl(0x0040, 0), acl(0x0040, 1)]
        );
        assert_eq!(core.stats().queued_for_credits, 3);
        assert_eq!(core.stats().queue_len, 3);
        // One credit back: exactly the next packet, in order.
        core.from_radio(nocp(0x0040, 1));
        let outs = drain(&mut core);
        assert_eq!(outs[0], RelayOutput::ToPhone(nocp(0x0040, 1)));
        assert_eq!(to_radio(&outs), vec![acl(0x0040, 2)]);
        core.from_radio(nocp(0x0040, 2));
        assert_eq!(
            to_radio(&drain(&mut core)),
            vec![acl(0x0040, 3), acl(0x0040, 4)]
        );
        assert_eq!(core.queued(), 0);
        assert_eq!(core.stats().queue_peak, 3);
        // Never more in flight than the controller advertised.
        let b = core.flow().buffers(bt_raw::flow::Pool::Le).unwrap();
        assert!(b.in_flight <= b.total);
    }

    #[test]
    fn a_new_packet_waits_behind_held_ones_of_its_handle() {
        let mut core = core_with_le_link();
        for i in 0..3 {
            core.from_phone(acl(0x0040, i), 0);
        }
        drain(&mut core);
        // A credit comes back, and before the core sees it the stack sends
        // another packet: it must not overtake the held one.
        core.from_radio(nocp(0x0040, 1));
        core.from_phone(acl(0x0040, 9), 0);
        assert_eq!(to_radio(&drain(&mut core)), vec![acl(0x0040, 2)]);
        core.from_radio(nocp(0x0040, 1));
        assert_eq!(to_radio(&drain(&mut core)), vec![acl(0x0040, 9)]);
    }

    #[test]
    fn reset_clears_the_queue_and_goes_out_without_credits() {
        let mut core = core_with_le_link();
        for i in 0..4 {
            core.from_phone(acl(0x0040, i), 0);
        }
        core.from_phone(cmd(0x1001), 0);
        core.from_phone(cmd(0x1009), 0);
        drain(&mut core);
        assert_eq!(core.queued(), 3);
        core.from_phone(cmd(0x0C03), 0);
        assert_eq!(to_radio(&drain(&mut core)), vec![cmd(0x0C03)]);
        assert_eq!(core.queued(), 0);
        assert_eq!(core.stats().dropped_on_reset, 3);
        // The reset's Command Complete restores credits and clears buffers:
        // new data flows again.
        core.from_radio(complete(0x0C03, 1, &[]));
        drain(&mut core);
        core.from_phone(cmd(0x2002), 0);
        assert_eq!(to_radio(&drain(&mut core)), vec![cmd(0x2002)]);
    }

    #[test]
    fn host_number_of_completed_packets_needs_no_credit_and_leaks_none() {
        let mut core = RelayCore::new(Policy::safe_default());
        core.from_phone(cmd(0x1001), 0); // uses the only credit
        let hnocp = p(&[0x01, 0x35, 0x0C, 0x05, 0x01, 0x40, 0x00, 0x01, 0x00]);
        core.from_phone(hnocp.clone(), 0);
        assert_eq!(to_radio(&drain(&mut core)), vec![cmd(0x1001), hnocp]);
        core.from_radio(complete(0x1001, 1, &[0; 8]));
        drain(&mut core);
        assert_eq!(core.flow().command_credits(), 1);
    }

    #[test]
    fn a_full_queue_stops_intake_until_credits_return() {
        let mut core = RelayCore::with_queue_limit(Policy::safe_default(), 2);
        core.from_phone(cmd(0x1001), 0);
        core.from_phone(cmd(0x1009), 0);
        assert!(core.can_accept());
        core.from_phone(cmd(0x1005), 0);
        assert!(!core.can_accept());
        core.from_radio(complete(0x1001, 1, &[0; 8]));
        assert!(core.can_accept());
    }

    #[test]
    fn events_from_the_phone_never_reach_the_radio() {
        let mut core = RelayCore::new(Policy::safe_default());
        core.from_phone(complete(0x0C03, 1, &[]), 0);
        assert!(drain(&mut core).is_empty());
        assert_eq!(core.stats().dropped_invalid, 1);
    }

    #[test]
    fn the_capture_holds_only_controller_facing_packets() {
        let mut core = RelayCore::new(Policy::safe_default());
        let mut snoop = SnoopWriter::new(Vec::new()).unwrap();
        let mut t = 1_000;
        let mut step = |core: &mut RelayCore, snoop: &mut SnoopWriter<Vec<u8>>| {
            for o in drain(core) {
                t += 1;
                record(snoop, &o, t).unwrap();
            }
        };
        core.from_phone(cmd(0x0C03), 0);
        step(&mut core, &mut snoop);
        core.from_phone(cmd(0xFC01), 0); // denied, answered locally
        step(&mut core, &mut snoop);
        core.from_radio(complete(0x0C03, 1, &[]));
        step(&mut core, &mut snoop);
        core.from_phone(cmd(0x201F), 0); // LE test end: denied too
        step(&mut core, &mut snoop);
        let recs = read_all(&snoop.into_inner()[..]).unwrap();
        let got: Vec<_> = recs
            .iter()
            .map(|r| (r.direction, r.bytes.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Direction::HostToController, cmd(0x0C03).as_bytes().to_vec()),
                (
                    Direction::ControllerToHost,
                    complete(0x0C03, 1, &[]).as_bytes().to_vec()
                ),
            ]
        );
        assert!(recs.windows(2).all(|w| w[0].unix_us < w[1].unix_us));
    }

    #[test]
    fn keys_in_the_capture_are_redacted() {
        // LE_Long_Term_Key_Request_Reply with a recognisable key.
        let mut raw = vec![0x01, 0x1A, 0x20, 18, 0x40, 0x00];
        raw.extend_from_slice(&[0x5A; 16]);
        let ltk_reply = p(&raw);
        let mut snoop = SnoopWriter::new(Vec::new()).unwrap();
        record(&mut snoop, &RelayOutput::ToRadio(ltk_reply), 0).unwrap();
        let recs = read_all(&snoop.into_inner()[..]).unwrap();
        assert!(!recs[0].bytes.contains(&0x5A));
    }
}
