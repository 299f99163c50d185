//! Which host→controller commands may reach a lent radio.
//!
//! The handset protects its own controller: every command the virtual phone's
//! stack sends is checked here before it reaches the radio. A [`Policy`]
//! decides per command: allow, deny, or police (allow up to a rate, deny
//! beyond). A denied command never reaches the controller; instead the relay
//! hands the stack [`Denial::reply`], exactly one Command Complete or Command
//! Status event of the kind that command normally gets, with a failure status,
//! so a stack never waits (Android aborts after 2 s) and never sees a reply it
//! did not expect (Android asserts on a Status/Complete mismatch).
//!
//! Opcodes are always compared whole: OGF and the full 10-bit OCF. Masking the
//! OCF to 7 bits, as Linux's `hci_sec_filter` once did, aliases reserved
//! opcodes onto allowed ones.
//!
//! # Policy files (TOML)
//!
//! ```toml
//! # What the rules below are added to: "safe-default" (the default),
//! # "allow-all" or "deny-all".
//! base = "safe-default"
//!
//! # Every command counts against this rate; beyond it commands are refused
//! # (the default: 200 per second; 0 turns the cap off).
//! max_commands_per_second = 200
//!
//! [[rule]]
//! opcode = 0x0C1A          # Write_Scan_Enable
//! action = "police"        # allow | deny | police
//! max_per_second = 2       # or max_per_minute
//!
//! [[rule]]
//! ogf = 0x3F               # every vendor command ...
//! ocf = 0x0070             # ... or only this one
//! action = "allow"
//! reason = "chipset needs it"
//! ```
//!
//! A rule naming an exact opcode wins over a rule naming only an OGF, and file
//! rules win over the base's.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::packet::{Command, Opcode, opcodes, status};
use crate::{Error, H4Packet, PacketType};

/// What to do with one command.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Action {
    /// Pass it to the controller.
    Allow,
    /// Refuse it with this HCI status.
    Deny {
        /// The status in the refusal event.
        status: u8,
    },
    /// Allow up to `max` per window of `window_ms`; deny beyond.
    Police {
        /// Commands allowed per window.
        max: u32,
        /// The window's length in milliseconds.
        window_ms: u64,
    },
}

/// What a rule applies to.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Matcher {
    /// Exactly this opcode.
    Opcode(Opcode),
    /// Every command of this OGF.
    Ogf(u8),
}

/// One policy rule.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Rule {
    /// What it applies to.
    pub matcher: Matcher,
    /// What to do.
    pub action: Action,
    /// Why, shown in logs and counters.
    pub reason: String,
}

/// The decision for one packet.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Verdict {
    /// Forward it unchanged.
    Allow,
    /// Do not forward it; answer the host with the denial's reply instead.
    Deny(Denial),
}

/// A refused command and the event that answers it.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Denial {
    /// The refused command.
    pub opcode: Opcode,
    /// The HCI status in the reply.
    pub status: u8,
    /// Why it was refused.
    pub reason: String,
    /// The Command Complete or Command Status event to hand the host.
    pub reply: H4Packet,
}

/// Where a policy starts before file rules are added.
#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum Base {
    /// The safe default: see [`Policy::safe_default`].
    #[default]
    SafeDefault,
    /// Everything allowed (diagnostics only).
    AllowAll,
    /// Everything denied unless a rule allows it.
    DenyAll,
}

/// Counters of what a policy decided.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct PolicyStats {
    /// Commands allowed.
    pub allowed: u64,
    /// Commands denied, in total.
    pub denied: u64,
    /// Commands denied, per opcode.
    pub denied_by_opcode: HashMap<Opcode, u64>,
}

/// A command policy. See the module docs.
#[derive(Clone, Debug)]
pub struct Policy {
    base: Base,
    /// File rules (searched first), then base rules.
    rules: Vec<Rule>,
    base_rules: Vec<Rule>,
    windows: HashMap<Opcode, (u64, u32)>,
    /// Commands allowed per second over all opcodes (0: no cap).
    max_commands_per_second: u32,
    /// The current second of the overall cap: its start and its count.
    all_window: (u64, u32),
    stats: PolicyStats,
}

impl Default for Policy {
    fn default() -> Self {
        Self::safe_default()
    }
}

/// `HCI_Reset`s a stack may send per minute under the safe default. A stack
/// starts with one and resets again after losing the radio; a loop of them
/// keeps the radio from serving anyone.
pub const RESETS_PER_MINUTE: u32 = 10;

/// Commands per second, over all opcodes, under the safe default and
/// `deny-all`. A stack's start-up burst is well under 100; the controller's
/// command credits bound the rest.
pub const MAX_COMMANDS_PER_SECOND: u32 = 200;

/// Counts one more command in the fixed window `w` (its start, its count) of
/// `window_ms`; false when that makes more than `max`.
fn within(w: &mut (u64, u32), now_ms: u64, window_ms: u64, max: u32) -> bool {
    if now_ms.saturating_sub(w.0) >= window_ms {
        *w = (now_ms, 0);
    }
    w.1 = w.1.saturating_add(1);
    w.1 <= max
}

/// "second", "minute" or "N ms", for a refusal's reason.
fn per(window_ms: u64) -> String {
    match window_ms {
        1000 => "second".to_owned(),
        60_000 => "minute".to_owned(),
        ms => format!("{ms} ms"),
    }
}

/// Highest OCF that is defined (or reasonably near-future) per OGF. Anything
/// above, or an undefined OGF, is reserved and refused as an unknown command.
fn ocf_ceiling(ogf: u8) -> Option<u16> {
    match ogf {
        0x01 | 0x02 | 0x04 | 0x05 | 0x06 => Some(0x007F),
        0x03 => Some(0x00FF),
        0x08 => Some(0x01FF),
        0x3F => Some(0x03FF),
        _ => None,
    }
}

impl Policy {
    /// The safe default, which needs no file:
    ///
    /// * every vendor command (OGF 0x3F) is denied with Unknown HCI Command;
    /// * `Read_Stored_Link_Key` and `Write_Stored_Link_Key` (other users' keys)
    ///   are denied, and `Delete_Stored_Link_Key` with `Delete_All_Flag` set;
    /// * test and debug modes are denied: loopback, Device Under Test, SSP
    ///   debug mode (a well-known debug key), Secure Connections test mode and
    ///   every LE RF test command;
    /// * reserved opcodes (undefined OGF, or an OCF above the group's range)
    ///   are denied with Unknown HCI Command;
    /// * advertising enables and `Write_Scan_Enable` are policed to a rate, and
    ///   `HCI_Reset` to [`RESETS_PER_MINUTE`] (a stack resetting the radio in a
    ///   loop keeps it from ever serving anyone);
    /// * all commands together are capped at [`MAX_COMMANDS_PER_SECOND`];
    /// * everything else is allowed.
    pub fn safe_default() -> Self {
        Self::with_base(Base::SafeDefault)
    }

    /// A policy of only the given base.
    pub fn with_base(base: Base) -> Self {
        let disallowed = |op, reason: &str| Rule {
            matcher: Matcher::Opcode(op),
            action: Action::Deny {
                status: status::COMMAND_DISALLOWED,
            },
            reason: reason.to_owned(),
        };
        let police = |op, max, window_ms, reason: &str| Rule {
            matcher: Matcher::Opcode(op),
            action: Action::Police { max, window_ms },
            reason: reason.to_owned(),
        };
        let base_rules = match base {
            Base::SafeDefault => {
                let mut r = vec![
                    Rule {
                        matcher: Matcher::Ogf(0x3F),
                        action: Action::Deny {
                            status: status::UNKNOWN_HCI_COMMAND,
                        },
                        reason: "vendor command".to_owned(),
                    },
                    disallowed(
                        opcodes::READ_STORED_LINK_KEY,
                        "stored link keys are not the session's",
                    ),
                    disallowed(
                        opcodes::WRITE_STORED_LINK_KEY,
                        "stored link keys are not the session's",
                    ),
                    disallowed(opcodes::WRITE_LOOPBACK_MODE, "test mode"),
                    disallowed(opcodes::ENABLE_DUT_MODE, "test mode"),
                    disallowed(
                        opcodes::WRITE_SSP_DEBUG_MODE,
                        "debug mode breaks pairing secrecy",
                    ),
                    disallowed(opcodes::WRITE_SC_TEST_MODE, "test mode"),
                ];
                for op in [
                    opcodes::LE_RECEIVER_TEST,
                    opcodes::LE_TRANSMITTER_TEST,
                    opcodes::LE_TEST_END,
                    opcodes::LE_RECEIVER_TEST_V2,
                    opcodes::LE_TRANSMITTER_TEST_V2,
                    opcodes::LE_RECEIVER_TEST_V3,
                    opcodes::LE_TRANSMITTER_TEST_V3,
                    opcodes::LE_TRANSMITTER_TEST_V4,
                ] {
                    r.push(disallowed(op, "RF test mode"));
                }
                for op in [
                    opcodes::LE_SET_ADVERTISING_ENABLE,
                    opcodes::LE_SET_EXT_ADVERTISING_ENABLE,
                    opcodes::LE_SET_PERIODIC_ADVERTISING_ENABLE,
                ] {
                    r.push(police(op, 20, 1000, "advertising rate"));
                }
                r.push(police(
                    opcodes::WRITE_SCAN_ENABLE,
                    10,
                    1000,
                    "scan enable rate",
                ));
                r.push(police(
                    opcodes::RESET,
                    RESETS_PER_MINUTE,
                    60_000,
                    "radio resets",
                ));
                r
            }
            Base::AllowAll | Base::DenyAll => Vec::new(),
        };
        Self {
            base,
            rules: Vec::new(),
            base_rules,
            windows: HashMap::new(),
            max_commands_per_second: match base {
                Base::AllowAll => 0,
                Base::SafeDefault | Base::DenyAll => MAX_COMMANDS_PER_SECOND,
            },
            all_window: (0, 0),
            stats: PolicyStats::default(),
        }
    }

    /// Parses a policy file's text.
    ///
    /// # Errors
    /// [`Error::Policy`] naming what is wrong.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            base: Base,
            max_commands_per_second: Option<u32>,
            #[serde(default, rename = "rule")]
            rules: Vec<FileRule>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "snake_case")]
        struct FileRule {
            opcode: Option<u16>,
            ogf: Option<u8>,
            ocf: Option<u16>,
            action: FileAction,
            status: Option<u8>,
            max_per_second: Option<u32>,
            max_per_minute: Option<u32>,
            reason: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum FileAction {
            Allow,
            Deny,
            Police,
        }
        let file: File = toml::from_str(text).map_err(|e| Error::Policy(e.to_string()))?;
        let mut policy = Self::with_base(file.base);
        if let Some(n) = file.max_commands_per_second {
            policy.max_commands_per_second = n;
        }
        for (i, r) in file.rules.into_iter().enumerate() {
            let n = i + 1;
            let matcher = match (r.opcode, r.ogf, r.ocf) {
                (Some(op), None, None) => Matcher::Opcode(Opcode(op)),
                (None, Some(ogf), Some(ocf)) if ogf <= 0x3F && ocf <= 0x3FF => {
                    Matcher::Opcode(Opcode::new(ogf, ocf))
                }
                (None, Some(ogf), None) if ogf <= 0x3F => Matcher::Ogf(ogf),
                (None, Some(_), _) => {
                    return Err(Error::Policy(format!(
                        "rule {n}: ogf must be <= 0x3F and ocf <= 0x3FF"
                    )));
                }
                _ => {
                    return Err(Error::Policy(format!(
                        "rule {n}: give either `opcode`, or `ogf` (with an optional `ocf`)"
                    )));
                }
            };
            let action = match r.action {
                FileAction::Allow => Action::Allow,
                FileAction::Deny => Action::Deny {
                    status: r.status.unwrap_or(status::COMMAND_DISALLOWED),
                },
                FileAction::Police => match (r.max_per_second, r.max_per_minute) {
                    (Some(max), None) => Action::Police {
                        max,
                        window_ms: 1000,
                    },
                    (None, Some(max)) => Action::Police {
                        max,
                        window_ms: 60_000,
                    },
                    _ => {
                        return Err(Error::Policy(format!(
                            "rule {n}: action \"police\" needs one of max_per_second or max_per_minute"
                        )));
                    }
                },
            };
            if matches!(action, Action::Deny { status: 0 }) {
                return Err(Error::Policy(format!(
                    "rule {n}: a denial cannot use status 0x00 (success)"
                )));
            }
            policy.rules.push(Rule {
                matcher,
                action,
                reason: r.reason.unwrap_or_else(|| format!("policy rule {n}")),
            });
        }
        Ok(policy)
    }

    /// Reads and parses a policy file.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Policy`].
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading policy file {}", path.display()), e))?;
        Self::from_toml(&text).map_err(|e| match e {
            Error::Policy(m) => Error::Policy(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// What this policy has decided so far.
    pub fn stats(&self) -> &PolicyStats {
        &self.stats
    }

    /// The rule (and its action) that governs `op`, without side effects.
    pub fn rule_for(&self, op: Opcode) -> (Action, String) {
        let find = |rules: &[Rule]| {
            rules
                .iter()
                .rev()
                .find(|r| r.matcher == Matcher::Opcode(op))
                .or_else(|| {
                    rules
                        .iter()
                        .rev()
                        .find(|r| r.matcher == Matcher::Ogf(op.ogf()))
                })
                .map(|r| (r.action.clone(), r.reason.clone()))
        };
        if let Some(hit) = find(&self.rules).or_else(|| find(&self.base_rules)) {
            return hit;
        }
        match self.base {
            Base::AllowAll => (Action::Allow, "allow-all".to_owned()),
            Base::DenyAll => (
                Action::Deny {
                    status: status::COMMAND_DISALLOWED,
                },
                "not allowed by policy".to_owned(),
            ),
            Base::SafeDefault => match ocf_ceiling(op.ogf()) {
                Some(max) if op.ocf() <= max => (Action::Allow, "default".to_owned()),
                _ => (
                    Action::Deny {
                        status: status::UNKNOWN_HCI_COMMAND,
                    },
                    "reserved opcode".to_owned(),
                ),
            },
        }
    }

    /// Decides what to do with one host→controller packet. Only commands are
    /// policed; data packets are always allowed. `now_ms` is any monotonic
    /// millisecond clock (the policy never reads a clock itself).
    pub fn decide(&mut self, packet: &H4Packet, now_ms: u64) -> Verdict {
        let Ok(cmd) = Command::new(packet) else {
            return Verdict::Allow;
        };
        let op = cmd.opcode();
        let (mut action, mut reason) = self.rule_for(op);
        if op == opcodes::DELETE_STORED_LINK_KEY
            && action == Action::Allow
            && cmd.params().get(6).is_some_and(|&all| all != 0)
        {
            action = Action::Deny {
                status: status::COMMAND_DISALLOWED,
            };
            reason = "deleting every stored link key".to_owned();
        }
        let deny_status = match action {
            Action::Allow => None,
            Action::Deny { status } => Some(status),
            Action::Police { max, window_ms } => {
                let w = self.windows.entry(op).or_insert((now_ms, 0));
                (!within(w, now_ms, window_ms, max)).then(|| {
                    reason = format!("{reason}: over {max} per {}", per(window_ms));
                    status::COMMAND_DISALLOWED
                })
            }
        };
        let cap = self.max_commands_per_second;
        let deny_status = deny_status.or_else(|| {
            (cap > 0 && !within(&mut self.all_window, now_ms, 1000, cap)).then(|| {
                reason = format!("command rate: over {cap} commands per second");
                status::COMMAND_DISALLOWED
            })
        });
        match deny_status {
            None => {
                self.stats.allowed += 1;
                Verdict::Allow
            }
            Some(status) => {
                self.stats.denied += 1;
                *self.stats.denied_by_opcode.entry(op).or_default() += 1;
                Verdict::Deny(Denial {
                    opcode: op,
                    status,
                    reason,
                    reply: refusal(op, status),
                })
            }
        }
    }
}

/// Commands whose normal reply is Command Status (they start a procedure that
/// ends with its own event). Every other command gets Command Complete.
const STATUS_COMMANDS: &[u16] = &[
    0x0401, 0x0405, 0x0406, 0x0408, 0x0409, 0x040A, 0x040F, 0x0411, 0x0413, 0x0415, 0x0417, 0x0419,
    0x041B, 0x041C, 0x041D, 0x041F, 0x0428, 0x0429, 0x042A, 0x043D, 0x043E, 0x0803, 0x0805, 0x0806,
    0x0807, 0x080B, 0x0810, 0x0C5F, 0x200D, 0x2013, 0x2016, 0x2019, 0x2025, 0x2026, 0x2032, 0x2043,
    0x2044, 0x205E, 0x2064, 0x2066, 0x2068, 0x206B, 0x206D, 0x2085,
];

/// Length of the return parameters (status included) of commands answered by
/// Command Complete, where longer than the status byte alone.
fn return_params_len(op: Opcode) -> usize {
    match op.0 {
        0x0C0D => 5,                   // Status, Max_Num_Keys, Num_Keys_Read
        0x0C11 => 2,                   // Status, Num_Keys_Written
        0x0C12 => 3,                   // Status, Num_Keys_Deleted
        0x180A | 0x201F | 0x201A => 3, // Status, handle / Num_Packets
        0x040B..=0x040E => 7,          // Status, BD_ADDR
        0x2017 => 17,                  // Status, Encrypted_Data
        _ => 1,
    }
}

/// The event a controller that refuses `op` with `status` would send: Command
/// Status for vendor commands and commands normally answered by Command
/// Status, Command Complete (with zeroed return parameters of the right
/// length) otherwise. `Num_HCI_Command_Packets` is 1.
pub fn refusal(op: Opcode, status: u8) -> H4Packet {
    let [lo, hi] = op.0.to_le_bytes();
    let raw = if op.is_vendor() || STATUS_COMMANDS.contains(&op.0) {
        vec![0x04, 0x0F, 0x04, status, 0x01, lo, hi]
    } else {
        let n = return_params_len(op);
        let mut v = vec![0x04, 0x0E, (3 + n) as u8, 0x01, lo, hi, status];
        v.resize(7 + n - 1, 0);
        v
    };
    // Invariant: built above with consistent lengths.
    H4Packet::parse(raw).unwrap_or_else(|_| unreachable!("refusal events are well formed"))
}

/// A Hardware Error event (0x10) with the given code: what a relay sends a host
/// stack when the radio behind it is gone, so the stack fails fast.
pub fn hardware_error(code: u8) -> H4Packet {
    H4Packet::parse(vec![0x04, 0x10, 0x01, code])
        .unwrap_or_else(|_| unreachable!("hardware error event is well formed"))
}

/// True if the packet is a command (the only kind a policy can refuse).
pub fn is_command(packet: &H4Packet) -> bool {
    packet.kind() == PacketType::Command
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Event;

    fn cmd(op: u16, params: &[u8]) -> H4Packet {
        H4Packet::command(op, params).unwrap()
    }

    fn denied(p: &mut Policy, op: u16) -> Option<Denial> {
        match p.decide(&cmd(op, &[]), 0) {
            Verdict::Allow => None,
            Verdict::Deny(d) => Some(d),
        }
    }

    #[test]
    fn safe_default_table() {
        let mut p = Policy::safe_default();
        for op in [
            0xFC01, 0xFC09, 0xFC20, 0xFFFF, 0x0C0D, 0x0C11, 0x1802, 0x1803, 0x1804, 0x180A, 0x201D,
            0x201E, 0x201F, 0x2033, 0x2034, 0x204F, 0x2050, 0x207B,
        ] {
            assert!(denied(&mut p, op).is_some(), "0x{op:04x} must be denied");
        }
        for op in [
            0x0C03, 0x1001, 0x1005, 0x1009, 0x2002, 0x2060, 0x200D, 0x2019, 0x201A, 0x040B, 0x0C01,
            0x0C31, 0x0C35, 0x0C12, 0x0C83,
        ] {
            assert!(denied(&mut p, op).is_none(), "0x{op:04x} must be allowed");
        }
        assert_eq!(p.stats().denied, 18);
        assert_eq!(p.stats().denied_by_opcode[&Opcode(0xFC01)], 1);
    }

    #[test]
    fn reserved_opcodes_are_refused_as_unknown() {
        let mut p = Policy::safe_default();
        // Undefined OGF 0x07, and OCFs above each group's range.
        for op in [
            Opcode::new(0x07, 1),
            Opcode::new(0x04, 0x081),
            Opcode::new(0x01, 0x3FF),
        ] {
            let d = denied(&mut p, op.0).expect("reserved");
            assert_eq!(d.status, status::UNKNOWN_HCI_COMMAND);
        }
    }

    #[test]
    fn ocf_aliases_of_allowed_opcodes_are_not_allowed() {
        // OCF 0x081 has the same low 7 bits as Read_Local_Version (0x001),
        // OCF 0x08B as Link_Key_Request_Reply (0x00B): both allowed opcodes.
        let mut p = Policy::safe_default();
        assert!(denied(&mut p, 0x1001).is_none());
        assert!(denied(&mut p, 0x1081).is_some());
        assert!(denied(&mut p, 0x040B).is_none());
        assert!(denied(&mut p, 0x048B).is_some());
        // An allow-list: only Reset allowed; its alias 0x0C83 is a different command.
        let mut p = Policy::from_toml(
            "base = \"deny-all\"\n[[rule]]\nopcode = 0x0C03\naction = \"allow\"\n",
        )
        .unwrap();
        assert!(denied(&mut p, 0x0C03).is_none());
        assert!(denied(&mut p, 0x0C83).is_some());
        // And a denied opcode's alias is not denied by its rule.
        let p = Policy::safe_default();
        assert_eq!(p.rule_for(Opcode(0x0C8D)).1, "default");
        assert_ne!(p.rule_for(Opcode(0x0C0D)).1, "default");
    }

    #[test]
    fn refusal_matches_the_reply_kind_the_stack_expects() {
        // Vendor: Command Status, Unknown HCI Command (Android tolerates this).
        let d = denied(&mut Policy::safe_default(), 0xFC01).unwrap();
        let e = Event::new(&d.reply).unwrap();
        let s = e.command_status().unwrap();
        assert_eq!(
            (s.status, s.opcode, s.num_hci_command_packets),
            (0x01, Opcode(0xFC01), 1)
        );
        // Read_Stored_Link_Key: Command Complete with 5 bytes of return params.
        let d = denied(&mut Policy::safe_default(), 0x0C0D).unwrap();
        let cc = Event::new(&d.reply).unwrap().command_complete().unwrap();
        assert_eq!(cc.opcode, opcodes::READ_STORED_LINK_KEY);
        assert_eq!(cc.return_params, &[0x0C, 0, 0, 0, 0]);
        // A Status-kind command denied by a file rule gets Command Status.
        let mut p = Policy::from_toml("[[rule]]\nopcode = 0x200D\naction = \"deny\"\n").unwrap();
        let d = denied(&mut p, 0x200D).unwrap();
        let s = Event::new(&d.reply).unwrap().command_status().unwrap();
        assert_eq!((s.status, s.opcode), (0x0C, opcodes::LE_CREATE_CONNECTION));
        // Test end: Status + Num_Packets.
        let d = denied(&mut Policy::safe_default(), 0x201F).unwrap();
        assert_eq!(
            d.reply.as_bytes(),
            &[0x04, 0x0E, 0x06, 0x01, 0x1F, 0x20, 0x0C, 0x00, 0x00]
        );
    }

    #[test]
    fn delete_all_stored_link_keys_is_denied_but_one_address_is_not() {
        let mut p = Policy::safe_default();
        let one = cmd(0x0C12, &[1, 2, 3, 4, 5, 6, 0]);
        let all = cmd(0x0C12, &[0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(p.decide(&one, 0), Verdict::Allow);
        assert!(matches!(p.decide(&all, 0), Verdict::Deny(_)));
    }

    #[test]
    fn police_limits_rate_per_window() {
        let mut p = Policy::from_toml(
            "[[rule]]\nopcode = 0x200A\naction = \"police\"\nmax_per_second = 2\n",
        )
        .unwrap();
        let c = cmd(0x200A, &[1]);
        assert_eq!(p.decide(&c, 0), Verdict::Allow);
        assert_eq!(p.decide(&c, 10), Verdict::Allow);
        assert!(matches!(p.decide(&c, 20), Verdict::Deny(_)));
        assert_eq!(p.decide(&c, 1020), Verdict::Allow);
    }

    #[test]
    fn a_stack_resetting_the_radio_in_a_loop_is_refused() {
        let mut p = Policy::safe_default();
        let reset = cmd(0x0C03, &[]);
        let mut t = 0;
        for _ in 0..RESETS_PER_MINUTE {
            assert_eq!(p.decide(&reset, t), Verdict::Allow);
            t += 2_000;
        }
        let Verdict::Deny(d) = p.decide(&reset, t) else {
            panic!(
                "reset {} within a minute was allowed",
                RESETS_PER_MINUTE + 1
            );
        };
        assert_eq!(d.status, status::COMMAND_DISALLOWED);
        assert!(d.reason.contains("per minute"), "{}", d.reason);
        // The stack gets the Command Complete it waits for, with the failure.
        assert_eq!(
            d.reply.as_bytes(),
            &[0x04, 0x0E, 0x04, 0x01, 0x03, 0x0C, 0x0C]
        );
        // A minute after the window began, resets pass again.
        assert_eq!(p.decide(&reset, 60_000), Verdict::Allow);
    }

    #[test]
    fn commands_beyond_the_overall_rate_are_refused() {
        let mut p = Policy::safe_default();
        let read = cmd(0x1009, &[]); // Read_BD_ADDR: allowed on its own
        for i in 0..MAX_COMMANDS_PER_SECOND {
            assert_eq!(p.decide(&read, u64::from(i) % 1000), Verdict::Allow);
        }
        let Verdict::Deny(d) = p.decide(&read, 999) else {
            panic!(
                "command {} in one second was allowed",
                MAX_COMMANDS_PER_SECOND + 1
            );
        };
        assert!(d.reason.contains("command rate"), "{}", d.reason);
        assert_eq!(p.decide(&read, 1000), Verdict::Allow);
        // A file may change the cap or turn it off; allow-all has none.
        let mut off = Policy::from_toml("max_commands_per_second = 0").unwrap();
        let mut all = Policy::with_base(Base::AllowAll);
        for _ in 0..1000 {
            assert_eq!(off.decide(&read, 5), Verdict::Allow);
            assert_eq!(all.decide(&read, 5), Verdict::Allow);
        }
        let mut two = Policy::from_toml("max_commands_per_second = 2").unwrap();
        assert_eq!(two.decide(&read, 0), Verdict::Allow);
        assert_eq!(two.decide(&read, 0), Verdict::Allow);
        assert!(matches!(two.decide(&read, 0), Verdict::Deny(_)));
    }

    #[test]
    fn police_per_minute_from_a_file() {
        let mut p = Policy::from_toml(
            "[[rule]]\nopcode = 0x0C1A\naction = \"police\"\nmax_per_minute = 1\n",
        )
        .unwrap();
        let c = cmd(0x0C1A, &[1]);
        assert_eq!(p.decide(&c, 0), Verdict::Allow);
        assert!(matches!(p.decide(&c, 59_999), Verdict::Deny(_)));
        assert_eq!(p.decide(&c, 60_000), Verdict::Allow);
    }

    #[test]
    fn file_rules_override_base_and_exact_beats_ogf() {
        let text = r#"
base = "safe-default"
[[rule]]
ogf = 0x3F
ocf = 0x0070
action = "allow"
reason = "chipset needs it"
[[rule]]
opcode = 0x0C1A
action = "deny"
status = 0x12
"#;
        let mut p = Policy::from_toml(text).unwrap();
        assert!(denied(&mut p, 0xFC70).is_none());
        assert!(denied(&mut p, 0xFC71).is_some());
        assert_eq!(denied(&mut p, 0x0C1A).unwrap().status, 0x12);
    }

    #[test]
    fn bad_policy_files_get_specific_errors() {
        for (text, needle) in [
            ("base = \"open\"", "unknown variant"),
            ("[[rule]]\naction = \"allow\"", "give either"),
            (
                "[[rule]]\nopcode = 1\naction = \"police\"",
                "max_per_second or max_per_minute",
            ),
            (
                "[[rule]]\nopcode = 1\naction = \"police\"\nmax_per_second = 1\nmax_per_minute = 1",
                "needs one of",
            ),
            (
                "[[rule]]\nopcode = 1\naction = \"deny\"\nstatus = 0",
                "success",
            ),
            ("[[rule]]\nogf = 0x40\naction = \"deny\"", "ogf must be"),
            (
                "[[rule]]\nopcode = 1\naction = \"allow\"\ncolour = 1",
                "unknown field",
            ),
        ] {
            let e = Policy::from_toml(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn data_packets_are_never_policed() {
        let mut p = Policy::with_base(Base::DenyAll);
        let acl = H4Packet::parse(vec![0x02, 0x01, 0x00, 0x00, 0x00]).unwrap();
        assert_eq!(p.decide(&acl, 0), Verdict::Allow);
    }
}
