//! The rules of one phone's Bluetooth link, sans-IO: [`LinkCore`] is fed
//! what happens (a stack attaches, a packet arrives, a heartbeat, a tick)
//! with the time it happened, and answers with [`Action`]s for its driver to
//! carry out (send to the stack, send to the radio, show a status...). It
//! reads no clock and does no I/O, so every rule is unit-tested with
//! injected instants, in microseconds.
//!
//! The rules:
//! * **Never let the stack wait.** With no radio lent, a command waits at
//!   most [`LinkTiming::command_deadline`] for one (up to [`MAX_PENDING`]
//!   commands), then is refused with Hardware Failure. A command the radio
//!   leaves unanswered for that long counts as a lost radio.
//! * **Heartbeat.** The radio counts as lost after
//!   [`LinkTiming::heartbeat_timeout`] without a heartbeat from the handset.
//! * **Radio lost.** The stack gets a refusal for each outstanding command, a
//!   Disconnection Complete for each open connection and a Hardware Error
//!   ([`LinkTracker::radio_lost`]); then only `HCI_Reset` passes until the
//!   stack has re-initialised (resync), so no stale controller state
//!   reaches it.
//! * **Orphans.** Connections open when the radio was lost (or when the
//!   stack went away) are remembered with the handset that held them; when
//!   that handset lends its radio again they are disconnected there, and the
//!   controller's replies to that cleanup are kept from the stack.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bt_raw::btsnoop::Direction;
use bt_raw::link::{LinkChange, LinkTracker, answers, disconnect_command, disconnected_handle};
use bt_raw::packet::{Command, opcodes, status};
use bt_raw::policy::refusal;
use bt_raw::{H4Packet, PacketType};

pub use crate::status::RadioStatus;

/// Commands from a stack that may wait for a radio to attach.
pub const MAX_PENDING: usize = 16;

/// How long the host waits for the controller's replies to its own orphan
/// cleanup before it stops filtering them.
const CLEANUP_WINDOW: Duration = Duration::from_secs(5);

/// Disconnect reason for orphan cleanup: Remote User Terminated Connection.
const REASON_REMOTE_USER_TERMINATED: u8 = 0x13;

/// The link's time limits.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct LinkTiming {
    /// Longest a command from the stack may stay unanswered (Android's
    /// stack gives up after 2 s and restarts its Bluetooth process).
    pub command_deadline: Duration,
    /// The radio counts as lost after this long without a heartbeat
    /// (`RadioState{lent: true}`) from the handset.
    pub heartbeat_timeout: Duration,
}

impl Default for LinkTiming {
    fn default() -> Self {
        Self {
            command_deadline: Duration::from_millis(1500),
            heartbeat_timeout: Duration::from_millis(1500),
        }
    }
}

/// What a phone's link is doing, for the operator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkInfo {
    /// The attached stack (its name and peer address), if any.
    pub stack: Option<String>,
    /// The session whose handset lends the radio, if any.
    pub radio_session: Option<String>,
    /// Packets relayed from the stack to the radio.
    pub to_radio: u64,
    /// Packets relayed from the radio to the stack.
    pub to_stack: u64,
    /// Commands the host answered itself (no radio, radio lost, resync).
    pub answered_locally: u64,
    /// Packets dropped (data without a radio, radio data without a stack).
    pub dropped: u64,
    /// Times the radio was lost while lent.
    pub radio_losses: u64,
    /// Why the radio was last lost.
    pub last_radio_loss: Option<String>,
    /// Stacks dropped because they stopped reading what the link sent them.
    pub stacks_dropped: u64,
}

/// Something the driver must do.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Action {
    /// Send this packet to the attached stack. `relayed`: it came from the
    /// radio (false: the host made it, e.g. a refusal).
    ToStack {
        /// The packet.
        packet: H4Packet,
        /// Whether it is the radio's own traffic.
        relayed: bool,
    },
    /// Send this packet to the radio of `generation` (drop it if that radio
    /// is no longer the current one). Report a failed send with
    /// [`LinkCore::radio_failed`] and a good one with
    /// [`LinkCore::radio_sent`].
    ToRadio {
        /// The radio it is meant for.
        generation: u64,
        /// The packet.
        packet: H4Packet,
        /// False for the host's own cleanup commands: not the stack's
        /// traffic, so not counted, and a failed send is not reported.
        counted: bool,
    },
    /// Record this packet in captures (the stack's side of the link).
    Snoop(Direction, H4Packet),
    /// A radio was attached: start reading its packets, tagged with
    /// `generation`.
    AttachRadio {
        /// The new radio's generation.
        generation: u64,
    },
    /// The radio of `generation` is gone: stop reading it, drop its session.
    DropRadio {
        /// The radio that is gone.
        generation: u64,
        /// Why (for the log).
        why: String,
    },
    /// Show this status (only emitted on change).
    Status(RadioStatus),
}

/// Why a stack could not attach.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct AlreadyAttached {
    /// Who is attached.
    pub who: String,
}

#[derive(Debug)]
struct Radio {
    session_id: String,
    handset: String,
    generation: u64,
    last_beat: Instant,
}

/// Replies the host expects from its own cleanup commands.
#[derive(Debug, Default)]
struct Cleanup {
    statuses: usize,
    handles: Vec<u16>,
    until: Option<Instant>,
}

impl Cleanup {
    /// True if `pkt` answers the cleanup (and is consumed by it).
    fn takes(&mut self, pkt: &H4Packet, now: Instant) -> bool {
        if self.until.is_none_or(|t| now > t) {
            *self = Self::default();
            return false;
        }
        if self.statuses > 0 && answers(pkt) == Some(opcodes::DISCONNECT) {
            self.statuses -= 1;
            return true;
        }
        if let Some(h) = disconnected_handle(pkt)
            && let Some(i) = self.handles.iter().position(|x| *x == h)
        {
            self.handles.remove(i);
            return true;
        }
        false
    }
}

/// One phone's link between its Bluetooth stack and a lent radio.
#[derive(Debug)]
pub struct LinkCore {
    timing: LinkTiming,
    next_id: u64,
    /// The attached stack's id and description.
    stack: Option<(u64, String)>,
    radio: Option<Radio>,
    /// Commands waiting for a radio, with when they arrived.
    pending: VecDeque<(Instant, H4Packet)>,
    tracker: LinkTracker,
    /// Since when the oldest outstanding command waits for its reply.
    waiting_since: Option<Instant>,
    /// The radio was lost: only HCI_Reset passes until the stack resets.
    resync: bool,
    status: RadioStatus,
    /// Connections open when the radio was lost, and whose radio it was.
    orphans: Option<(String, Vec<u16>)>,
    cleanup: Cleanup,
    info: LinkInfo,
    actions: VecDeque<Action>,
}

impl LinkCore {
    /// A link with no stack and no radio.
    #[must_use]
    pub fn new(timing: LinkTiming) -> Self {
        Self {
            timing,
            next_id: 0,
            stack: None,
            radio: None,
            pending: VecDeque::new(),
            tracker: LinkTracker::new(),
            waiting_since: None,
            resync: false,
            status: RadioStatus::NoRadio,
            orphans: None,
            cleanup: Cleanup::default(),
            info: LinkInfo::default(),
            actions: VecDeque::new(),
        }
    }

    /// The next thing to do, oldest first.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The link's deadlines.
    #[must_use]
    pub fn timing(&self) -> LinkTiming {
        self.timing
    }

    /// The operator's view of the link.
    #[must_use]
    pub fn info(&self) -> &LinkInfo {
        &self.info
    }

    /// The current status.
    #[must_use]
    pub fn status(&self) -> &RadioStatus {
        &self.status
    }

    /// The current radio's generation, if one is lent.
    #[must_use]
    pub fn radio_generation(&self) -> Option<u64> {
        self.radio.as_ref().map(|r| r.generation)
    }

    /// Commands waiting for a radio.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether only `HCI_Reset` passes (the radio was lost).
    #[must_use]
    pub fn resyncing(&self) -> bool {
        self.resync
    }

    // ----- the stack ---------------------------------------------------------

    /// A stack described as `who` attaches. Returns its id, or who is
    /// already attached (one stack per phone).
    ///
    /// # Errors
    /// [`AlreadyAttached`] while another stack is attached.
    pub fn stack_attached(&mut self, who: &str) -> Result<u64, AlreadyAttached> {
        if let Some((_, w)) = &self.stack {
            return Err(AlreadyAttached { who: w.clone() });
        }
        self.next_id += 1;
        self.stack = Some((self.next_id, who.to_owned()));
        self.tracker.clear();
        self.pending.clear();
        self.waiting_since = None;
        self.resync = false;
        self.info.stack = Some(who.to_owned());
        self.update_status();
        Ok(self.next_id)
    }

    /// Undoes [`LinkCore::stack_attached`] for a stack that went away before
    /// it was told it is attached (nothing was relayed for it).
    pub fn stack_abandoned(&mut self, id: u64) {
        if self.is_stack(id) {
            self.stack = None;
            self.info.stack = None;
            self.update_status();
        }
    }

    /// Whether `id` is the attached stack.
    #[must_use]
    pub fn is_stack(&self, id: u64) -> bool {
        self.stack.as_ref().is_some_and(|(s, _)| *s == id)
    }

    /// Stack `id` stopped reading (its queue stayed full past the driver's
    /// stall limit): it is dropped like a stack that went away, and counted.
    pub fn stack_stalled(&mut self, id: u64, now: Instant) {
        if self.is_stack(id) {
            self.info.stacks_dropped += 1;
            self.stack_gone(id, now);
        }
    }

    /// The stack `id` went away. Links it left open belong to no one now:
    /// they are disconnected on the radio that holds them.
    pub fn stack_gone(&mut self, id: u64, now: Instant) {
        if !self.is_stack(id) {
            return;
        }
        let open: Vec<u16> = self.tracker.connections().map(|c| c.handle).collect();
        if let Some(r) = &self.radio {
            self.orphans = Some((r.handset.clone(), open));
            self.clean_up_orphans(now);
        }
        self.stack = None;
        self.tracker.clear();
        self.pending.clear();
        self.waiting_since = None;
        self.info.stack = None;
        self.update_status();
    }

    /// A packet from stack `id`.
    pub fn stack_packet(&mut self, id: u64, pkt: H4Packet, now: Instant) {
        if !self.is_stack(id) {
            return;
        }
        self.actions
            .push_back(Action::Snoop(Direction::HostToController, pkt.clone()));
        if pkt.kind() == PacketType::Command {
            let op = Command::new(&pkt).map(|c| c.opcode()).ok();
            if op == Some(opcodes::RESET) {
                self.resync = false;
            } else if self.resync {
                // The controller behind the stack changed: it must reset first.
                self.answer_locally(&pkt);
                return;
            }
            if self.radio.is_some() {
                self.send_to_radio(pkt, now);
            } else if self.pending.len() < MAX_PENDING {
                self.pending.push_back((now, pkt));
            } else {
                self.answer_locally(&pkt);
            }
        } else if self.radio.is_some() && !self.resync {
            self.send_to_radio(pkt, now);
        } else {
            self.info.dropped += 1;
        }
    }

    // ----- the radio ---------------------------------------------------------

    /// The handset of session `session_id` (identity `handset`) lends its
    /// radio (first heartbeat) or confirms it still does. Returns the
    /// radio's generation when this attached a new radio.
    pub fn radio_beat(&mut self, session_id: &str, handset: &str, now: Instant) -> Option<u64> {
        match &mut self.radio {
            Some(r) if r.session_id == session_id => {
                r.last_beat = now;
                return None;
            }
            Some(_) => self.lose_radio("another handset lent its radio"),
            None => {}
        }
        self.next_id += 1;
        let generation = self.next_id;
        self.actions.push_back(Action::AttachRadio { generation });
        self.info.radio_session = Some(session_id.to_owned());
        self.radio = Some(Radio {
            session_id: session_id.to_owned(),
            handset: handset.to_owned(),
            generation,
            last_beat: now,
        });
        self.update_status();
        self.clean_up_orphans(now);
        // Commands that waited for a radio go out now, in order.
        while let Some((_, pkt)) = self.pending.pop_front() {
            self.send_to_radio(pkt, now);
        }
        Some(generation)
    }

    /// The handset of session `session_id` stopped lending its radio.
    pub fn radio_released(&mut self, session_id: &str, why: &str) {
        if self
            .radio
            .as_ref()
            .is_some_and(|r| r.session_id == session_id)
        {
            self.lose_radio(why);
        }
    }

    /// A packet from the radio of `generation`.
    pub fn radio_packet(&mut self, generation: u64, pkt: H4Packet, now: Instant) {
        if self.radio_generation() != Some(generation) {
            return;
        }
        if self.cleanup.takes(&pkt, now) {
            return;
        }
        if self.stack.is_none() || self.resync {
            self.info.dropped += 1;
            return;
        }
        let change = self.tracker.on_controller_packet(&pkt);
        self.waiting_since = if self.tracker.outstanding().next().is_some() {
            // Another command is still outstanding: its clock starts now.
            self.waiting_since.map(|_| now)
        } else {
            None
        };
        self.info.to_stack += 1;
        self.send_to_stack(pkt, true);
        if let Some(change) = change {
            if let LinkChange::Connected(c) = &change {
                tracing::info!(peer = %c.address_string(), "Bluetooth connection");
            }
            self.update_status();
        }
    }

    /// The radio of `generation` ended (its session ended, a send failed).
    pub fn radio_failed(&mut self, generation: u64, why: &str) {
        if self.radio_generation() == Some(generation) {
            self.lose_radio(why);
        }
    }

    /// A packet for the radio of `generation` went out.
    pub fn radio_sent(&mut self, generation: u64) {
        if self.radio_generation() == Some(generation) {
            self.info.to_radio += 1;
        }
    }

    // ----- time --------------------------------------------------------------

    /// Applies the deadlines as of `now` (call every few tens of ms).
    pub fn tick(&mut self, now: Instant) {
        if let Some(r) = &self.radio {
            if now.duration_since(r.last_beat) > self.timing.heartbeat_timeout {
                let why = format!(
                    "no heartbeat from the handset for {} ms",
                    self.timing.heartbeat_timeout.as_millis()
                );
                self.lose_radio(&why);
            } else if self
                .waiting_since
                .is_some_and(|t| now.duration_since(t) > self.timing.command_deadline)
            {
                let op = self.tracker.outstanding().next();
                let why = format!(
                    "the radio did not answer command {} within {} ms",
                    op.map_or_else(|| "?".to_owned(), |o| format!("{:#06x}", o.0)),
                    self.timing.command_deadline.as_millis()
                );
                self.lose_radio(&why);
            }
        }
        let expired = self
            .pending
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > self.timing.command_deadline);
        if expired {
            tracing::info!(
                commands = self.pending.len(),
                "no handset radio attached: refusing the stack's commands"
            );
            while let Some((_, pkt)) = self.pending.pop_front() {
                self.answer_locally(&pkt);
            }
        }
    }

    // ----- internals ---------------------------------------------------------

    fn clean_up_orphans(&mut self, now: Instant) {
        let Some(r) = &self.radio else { return };
        let Some((handset, handles)) = self.orphans.take() else {
            return;
        };
        if handset != r.handset || handles.is_empty() {
            return;
        }
        tracing::info!(
            ?handles,
            "disconnecting links left open by the lost stack session"
        );
        let generation = r.generation;
        self.cleanup = Cleanup {
            statuses: handles.len(),
            handles: handles.clone(),
            until: Some(now + CLEANUP_WINDOW),
        };
        for h in handles {
            self.actions.push_back(Action::ToRadio {
                generation,
                packet: disconnect_command(h, REASON_REMOTE_USER_TERMINATED),
                counted: false,
            });
        }
    }

    /// Answers a command the radio will never see with Hardware Failure.
    fn answer_locally(&mut self, pkt: &H4Packet) {
        if let Ok(cmd) = Command::new(pkt) {
            self.info.answered_locally += 1;
            let ev = refusal(cmd.opcode(), status::HARDWARE_FAILURE);
            self.send_to_stack(ev, false);
        }
    }

    fn send_to_radio(&mut self, pkt: H4Packet, now: Instant) {
        let Some(r) = &self.radio else { return };
        let generation = r.generation;
        self.tracker.on_host_packet(&pkt);
        if pkt.kind() == PacketType::Command && self.waiting_since.is_none() {
            self.waiting_since = Some(now);
        }
        self.actions.push_back(Action::ToRadio {
            generation,
            packet: pkt,
            counted: true,
        });
    }

    fn send_to_stack(&mut self, packet: H4Packet, relayed: bool) {
        if self.stack.is_some() {
            self.actions.push_back(Action::ToStack { packet, relayed });
        }
    }

    fn lose_radio(&mut self, why: &str) {
        let Some(r) = self.radio.take() else { return };
        self.actions.push_back(Action::DropRadio {
            generation: r.generation,
            why: why.to_owned(),
        });
        self.info.radio_session = None;
        self.info.radio_losses += 1;
        self.info.last_radio_loss = Some(why.to_owned());
        self.waiting_since = None;
        let open: Vec<u16> = self.tracker.connections().map(|c| c.handle).collect();
        self.orphans = Some((r.handset, open));
        if self.stack.is_some() {
            for ev in self.tracker.radio_lost() {
                self.send_to_stack(ev, false);
            }
            self.resync = true;
        } else {
            self.tracker.clear();
        }
        self.update_status();
    }

    fn update_status(&mut self) {
        let status = match (&self.radio, self.tracker.connections().next()) {
            (None, _) => RadioStatus::NoRadio,
            (Some(_), None) => RadioStatus::RadioAttached,
            (Some(_), Some(c)) => RadioStatus::Connected {
                peer_name: self
                    .tracker
                    .name_of(&c.address)
                    .unwrap_or("unknown device")
                    .to_owned(),
                address: c.address_string(),
                encrypted: c.encrypted,
            },
        };
        if status != self.status {
            self.status = status.clone();
            self.actions.push_back(Action::Status(status));
        }
    }
}

#[cfg(test)]
mod tests {
    use bt_raw::link::{HARDWARE_ERROR_RADIO_LOST, REASON_CONNECTION_TIMEOUT};
    use bt_raw::packet::{Event, events};

    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const US: Duration = Duration::from_micros(1);
    const ADDR: [u8; 6] = [0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6];

    fn pkt(bytes: &[u8]) -> H4Packet {
        H4Packet::parse(bytes.to_vec()).unwrap()
    }

    fn reset() -> H4Packet {
        H4Packet::command(0x0C03, &[]).unwrap()
    }

    fn read_bd_addr() -> H4Packet {
        H4Packet::command(0x1009, &[]).unwrap()
    }

    fn le_scan_enable() -> H4Packet {
        H4Packet::command(0x200C, &[0x01, 0x00]).unwrap()
    }

    fn complete(op: u16) -> H4Packet {
        let [lo, hi] = op.to_le_bytes();
        pkt(&[0x04, 0x0E, 0x04, 0x01, lo, hi, 0x00])
    }

    fn acl(handle: u16) -> H4Packet {
        let [lo, hi] = handle.to_le_bytes();
        pkt(&[0x02, lo, hi, 0x02, 0x00, 0xAA, 0xBB])
    }

    fn le_connected(handle: u16) -> H4Packet {
        let [lo, hi] = handle.to_le_bytes();
        let mut p = vec![0x04, 0x3E, 19, 0x01, 0x00, lo, hi, 0x00, 0x00];
        p.extend_from_slice(&ADDR);
        p.extend_from_slice(&[0x18, 0, 0, 0, 0x48, 0, 0]);
        pkt(&p)
    }

    fn encrypted(handle: u16) -> H4Packet {
        let [lo, hi] = handle.to_le_bytes();
        pkt(&[0x04, 0x08, 0x04, 0x00, lo, hi, 0x01])
    }

    fn disconnect_status() -> H4Packet {
        pkt(&[0x04, 0x0F, 0x04, 0x00, 0x01, 0x06, 0x04])
    }

    fn disconnected(handle: u16) -> H4Packet {
        let [lo, hi] = handle.to_le_bytes();
        pkt(&[0x04, 0x05, 0x04, 0x00, lo, hi, 0x13])
    }

    /// A link with a stack attached, at time `t0`.
    fn with_stack() -> (LinkCore, u64, Instant) {
        let mut core = LinkCore::new(LinkTiming::default());
        let id = core.stack_attached("stack").unwrap();
        drain(&mut core);
        (core, id, Instant::now())
    }

    fn drain(core: &mut LinkCore) -> Vec<Action> {
        std::iter::from_fn(|| core.poll_action()).collect()
    }

    /// The packets sent to the stack, in order.
    fn to_stack(actions: &[Action]) -> Vec<H4Packet> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::ToStack { packet, .. } => Some(packet.clone()),
                _ => None,
            })
            .collect()
    }

    /// The packets sent to the radio, in order.
    fn to_radio(actions: &[Action]) -> Vec<H4Packet> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::ToRadio { packet, .. } => Some(packet.clone()),
                _ => None,
            })
            .collect()
    }

    /// The status of a Command Complete/Status refusal, and its opcode.
    fn refused(p: &H4Packet) -> Option<(u16, u8)> {
        let ev = Event::new(p).ok()?;
        if let Some(c) = ev.command_complete() {
            return Some((c.opcode.0, *c.return_params.first()?));
        }
        ev.command_status().map(|s| (s.opcode.0, s.status))
    }

    fn lent(core: &mut LinkCore, session: &str, handset: &str, now: Instant) -> u64 {
        core.radio_beat(session, handset, now).expect("a new radio")
    }

    #[test]
    fn one_stack_per_phone() {
        let (mut core, id, _) = with_stack();
        assert_eq!(
            core.stack_attached("squatter"),
            Err(AlreadyAttached {
                who: "stack".into()
            })
        );
        core.stack_gone(id, Instant::now());
        assert!(core.stack_attached("next").is_ok());
        assert_eq!(core.info().stack.as_deref(), Some("next"));
    }

    #[test]
    fn a_stalled_stack_is_dropped_counted_and_frees_the_phone() {
        let (mut core, id, t0) = with_stack();
        core.stack_stalled(id + 1, t0);
        assert_eq!(core.info().stacks_dropped, 0, "only the attached stack");
        core.stack_stalled(id, t0);
        assert_eq!(core.info().stacks_dropped, 1);
        assert_eq!(core.info().stack, None);
        assert!(!core.is_stack(id));
        assert!(core.stack_attached("next").is_ok());
    }

    #[test]
    fn without_a_radio_a_command_waits_the_deadline_then_is_refused() {
        let (mut core, id, t0) = with_stack();
        core.stack_packet(id, read_bd_addr(), t0);
        assert!(to_stack(&drain(&mut core)).is_empty());
        core.tick(t0 + Duration::from_millis(1500));
        assert!(to_stack(&drain(&mut core)).is_empty(), "not before 1.5 s");
        core.tick(t0 + Duration::from_millis(1500) + US);
        let sent = to_stack(&drain(&mut core));
        assert_eq!(sent.len(), 1);
        assert_eq!(refused(&sent[0]), Some((0x1009, status::HARDWARE_FAILURE)));
        assert_eq!(core.info().answered_locally, 1);
        assert_eq!(core.pending(), 0);
    }

    #[test]
    fn at_most_sixteen_commands_wait_and_the_rest_are_refused_at_once() {
        let (mut core, id, t0) = with_stack();
        for _ in 0..MAX_PENDING {
            core.stack_packet(id, read_bd_addr(), t0);
        }
        assert!(to_stack(&drain(&mut core)).is_empty());
        core.stack_packet(id, read_bd_addr(), t0);
        assert_eq!(to_stack(&drain(&mut core)).len(), 1);
        assert_eq!(core.pending(), MAX_PENDING);
    }

    #[test]
    fn waiting_commands_go_to_a_radio_that_attaches_in_order() {
        let (mut core, id, t0) = with_stack();
        core.stack_packet(id, reset(), t0);
        core.stack_packet(id, read_bd_addr(), t0 + MS);
        // Data without a radio is dropped, not queued.
        core.stack_packet(id, acl(0x40), t0 + MS);
        assert_eq!(core.info().dropped, 1);
        let generation = lent(&mut core, "s1", "h1", t0 + 100 * MS);
        let actions = drain(&mut core);
        assert!(actions.contains(&Action::AttachRadio { generation }));
        assert!(actions.contains(&Action::Status(RadioStatus::RadioAttached)));
        assert_eq!(to_radio(&actions), vec![reset(), read_bd_addr()]);
        assert_eq!(core.pending(), 0);
    }

    #[test]
    fn heartbeat_loss_tells_the_stack_everything_and_only_reset_passes() {
        let (mut core, id, t0) = with_stack();
        let g = lent(&mut core, "s1", "h1", t0);
        core.radio_packet(g, le_connected(0x40), t0 + MS);
        core.stack_packet(id, read_bd_addr(), t0 + 2 * MS);
        drain(&mut core);
        // Heartbeats keep it alive past the timeout from the first one.
        assert_eq!(
            core.radio_beat("s1", "h1", t0 + Duration::from_millis(1000)),
            None
        );
        core.radio_packet(g, complete(0x1009), t0 + Duration::from_millis(1000));
        core.tick(t0 + Duration::from_millis(2400));
        assert_eq!(core.radio_generation(), Some(g));
        drain(&mut core);
        core.stack_packet(id, le_scan_enable(), t0 + Duration::from_millis(2400));
        drain(&mut core);
        // 1.5 s after the last beat, plus a microsecond: lost.
        core.tick(t0 + Duration::from_millis(2500) + US);
        let actions = drain(&mut core);
        assert!(matches!(&actions[0], Action::DropRadio { generation, why }
            if *generation == g && why.contains("no heartbeat")));
        let sent = to_stack(&actions);
        assert_eq!(sent.len(), 3, "{sent:?}");
        assert_eq!(refused(&sent[0]).map(|r| r.0), Some(0x200C));
        let dc = Event::new(&sent[1]).unwrap();
        assert_eq!(dc.code(), events::DISCONNECTION_COMPLETE);
        assert_eq!(dc.params()[3], REASON_CONNECTION_TIMEOUT);
        assert_eq!(
            sent[2].as_bytes(),
            &[0x04, 0x10, 0x01, HARDWARE_ERROR_RADIO_LOST]
        );
        assert!(actions.contains(&Action::Status(RadioStatus::NoRadio)));
        assert_eq!(core.info().radio_losses, 1);

        // Resync: a radio is back, but only HCI_Reset passes.
        let g2 = lent(&mut core, "s2", "h1", t0 + Duration::from_secs(3));
        drain(&mut core);
        core.stack_packet(id, read_bd_addr(), t0 + Duration::from_secs(3));
        core.stack_packet(id, acl(0x40), t0 + Duration::from_secs(3));
        let actions = drain(&mut core);
        assert!(to_radio(&actions).is_empty());
        assert_eq!(
            to_stack(&actions).iter().map(refused).collect::<Vec<_>>(),
            vec![Some((0x1009, status::HARDWARE_FAILURE))]
        );
        // Controller traffic is kept from the stack while it resyncs.
        core.radio_packet(g2, acl(0x40), t0 + Duration::from_secs(3));
        assert!(to_stack(&drain(&mut core)).is_empty());
        core.stack_packet(id, reset(), t0 + Duration::from_secs(3));
        assert_eq!(to_radio(&drain(&mut core)), vec![reset()]);
        assert!(!core.resyncing());
        core.stack_packet(id, read_bd_addr(), t0 + Duration::from_secs(3));
        assert_eq!(to_radio(&drain(&mut core)), vec![read_bd_addr()]);
    }

    #[test]
    fn an_unanswered_command_loses_the_radio_after_the_deadline() {
        let (mut core, id, t0) = with_stack();
        let g = lent(&mut core, "s1", "h1", t0);
        core.stack_packet(id, reset(), t0);
        drain(&mut core);
        // Heartbeats continue, but the command stays unanswered.
        core.radio_beat("s1", "h1", t0 + Duration::from_millis(1400));
        core.tick(t0 + Duration::from_millis(1500));
        assert_eq!(core.radio_generation(), Some(g));
        core.tick(t0 + Duration::from_millis(1500) + US);
        let actions = drain(&mut core);
        assert!(matches!(&actions[0], Action::DropRadio { why, .. }
            if why.contains("did not answer command 0x0c03")));
        assert_eq!(refused(&to_stack(&actions)[0]).map(|r| r.0), Some(0x0C03));
    }

    #[test]
    fn a_reply_restarts_the_clock_for_the_next_outstanding_command() {
        let (mut core, id, t0) = with_stack();
        let g = lent(&mut core, "s1", "h1", t0);
        core.stack_packet(id, reset(), t0);
        core.stack_packet(id, read_bd_addr(), t0);
        core.radio_beat("s1", "h1", t0 + Duration::from_millis(1000));
        core.radio_packet(g, complete(0x0C03), t0 + Duration::from_millis(1000));
        core.radio_beat("s1", "h1", t0 + Duration::from_millis(2000));
        core.tick(t0 + Duration::from_millis(2400));
        assert_eq!(core.radio_generation(), Some(g), "1.4 s since the reply");
        core.tick(t0 + Duration::from_millis(2500) + US);
        assert_eq!(core.radio_generation(), None);
    }

    #[test]
    fn the_same_handset_lending_again_disconnects_the_links_it_left_open() {
        let (mut core, id, t0) = with_stack();
        let g = lent(&mut core, "s1", "alice", t0);
        core.radio_packet(g, le_connected(0x40), t0);
        core.radio_failed(g, "the handset's session ended");
        drain(&mut core);
        // Alice again (a new session): the orphan is disconnected on her
        // controller, as the host's own command.
        let g2 = lent(&mut core, "s2", "alice", t0 + MS);
        let actions = drain(&mut core);
        assert_eq!(
            actions
                .iter()
                .filter_map(|a| match a {
                    Action::ToRadio {
                        generation,
                        packet,
                        counted: false,
                    } => Some((*generation, packet.clone())),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            vec![(g2, disconnect_command(0x40, 0x13))]
        );
        // The controller's answers to the cleanup are kept from the stack;
        // the stack's own traffic still flows.
        core.stack_packet(id, reset(), t0 + 3 * MS);
        drain(&mut core);
        core.radio_packet(g2, disconnect_status(), t0 + 4 * MS);
        core.radio_packet(g2, disconnected(0x40), t0 + 4 * MS);
        core.radio_packet(g2, complete(0x0C03), t0 + 4 * MS);
        assert_eq!(to_stack(&drain(&mut core)), vec![complete(0x0C03)]);
    }

    #[test]
    fn another_handset_lending_does_not_touch_the_orphans() {
        let (mut core, _id, t0) = with_stack();
        let g = lent(&mut core, "s1", "alice", t0);
        core.radio_packet(g, le_connected(0x40), t0);
        core.radio_failed(g, "the handset's session ended");
        drain(&mut core);
        // Bob's controller never held that link: nothing is sent to it.
        lent(&mut core, "s2", "bob", t0 + MS);
        assert!(to_radio(&drain(&mut core)).is_empty());
    }

    #[test]
    fn cleanup_replies_pass_after_the_cleanup_window() {
        let (mut core, id, t0) = with_stack();
        let g = lent(&mut core, "s1", "alice", t0);
        core.radio_packet(g, le_connected(0x40), t0);
        core.stack_gone(id, t0);
        // The stack went away with the link open: disconnected at once.
        assert_eq!(
            to_radio(&drain(&mut core)),
            vec![disconnect_command(0x40, 0x13)]
        );
        let id2 = core.stack_attached("stack 2").unwrap();
        drain(&mut core);
        core.radio_packet(g, disconnected(0x40), t0 + CLEANUP_WINDOW + US);
        assert_eq!(to_stack(&drain(&mut core)).len(), 1, "window over");
        let _ = id2;
    }

    #[test]
    fn packets_of_an_old_radio_or_stack_are_ignored() {
        let (mut core, id, t0) = with_stack();
        let g1 = lent(&mut core, "s1", "h1", t0);
        let g2 = lent(&mut core, "s2", "h2", t0 + MS);
        let actions = drain(&mut core);
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::DropRadio { generation, why }
            if *generation == g1 && why.contains("another handset")))
        );
        core.radio_packet(g1, complete(0x0C03), t0 + 2 * MS);
        core.radio_failed(g1, "old");
        core.radio_sent(g1);
        assert!(drain(&mut core).is_empty());
        assert_eq!(core.radio_generation(), Some(g2));
        core.stack_packet(id + 100, reset(), t0);
        assert!(drain(&mut core).is_empty());
        assert_eq!(core.info().to_radio, 0);
    }

    #[test]
    fn status_follows_radio_connection_and_encryption() {
        let (mut core, id, t0) = with_stack();
        assert_eq!(core.status(), &RadioStatus::NoRadio);
        let g = lent(&mut core, "s1", "h1", t0);
        core.radio_packet(g, le_connected(0x40), t0);
        let connected = RadioStatus::Connected {
            peer_name: "unknown device".into(),
            address: "F6:F5:F4:F3:F2:F1".into(),
            encrypted: false,
        };
        assert!(drain(&mut core).contains(&Action::Status(connected)));
        core.radio_packet(g, encrypted(0x40), t0);
        assert!(matches!(
            drain(&mut core).last(),
            Some(Action::Status(RadioStatus::Connected {
                encrypted: true,
                ..
            }))
        ));
        // Relayed both ways and counted.
        core.stack_packet(id, acl(0x40), t0);
        core.radio_sent(g);
        assert_eq!((core.info().to_radio, core.info().to_stack), (1, 2));
        let actions = drain(&mut core);
        assert!(actions.contains(&Action::Snoop(Direction::HostToController, acl(0x40))));
    }

    #[test]
    fn a_released_radio_without_a_stack_leaves_nothing_behind() {
        let mut core = LinkCore::new(LinkTiming::default());
        let t0 = Instant::now();
        let g = lent(&mut core, "s1", "h1", t0);
        core.radio_packet(g, acl(0x40), t0);
        assert_eq!(core.info().dropped, 1, "no stack to take it");
        core.radio_released("s1", "done");
        let actions = drain(&mut core);
        assert!(to_stack(&actions).is_empty());
        assert!(!core.resyncing(), "no stack was told anything");
        assert_eq!(core.status(), &RadioStatus::NoRadio);
    }
}
