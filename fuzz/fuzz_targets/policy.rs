//! The handset's command policy: its TOML file format (any text, accepted
//! or refused with an error), and its decisions on any packet at any time.
//! Every refusal answers the refused command with a well-formed event the
//! stack expects for that opcode, carrying a failure status.
#![no_main]

use bt_raw::H4Packet;
use bt_raw::packet::Event;
use bt_raw::policy::{Base, Policy, Verdict};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (mut policy, packets) = match mode % 4 {
        0 => match std::str::from_utf8(rest).ok().map(Policy::from_toml) {
            Some(Ok(p)) => (
                p,
                &b"\x01\x03\x0c\x00\x01\x01\xfc\x00\x01\x0c\x20\x02\x01\x00"[..],
            ),
            _ => return,
        },
        1 => (Policy::safe_default(), rest),
        2 => (Policy::with_base(Base::DenyAll), rest),
        _ => (Policy::with_base(Base::AllowAll), rest),
    };
    let mut now_ms = 0u64;
    let mut rest = packets;
    while let Some((&head, tail)) = rest.split_first() {
        let len = usize::from(head & 0x3F).min(tail.len());
        let (raw, next) = tail.split_at(len);
        rest = next;
        now_ms = now_ms.saturating_add(u64::from(head >> 6) * 40);
        let mut h4 = vec![0x01];
        h4.extend_from_slice(raw);
        let Ok(p) = H4Packet::parse(h4) else { continue };
        let _ = policy.rule_for(bt_raw::Opcode(u16::from_le_bytes([
            p.as_bytes()[1],
            p.as_bytes()[2],
        ])));
        match policy.decide(&p, now_ms) {
            Verdict::Allow => {}
            Verdict::Deny(d) => {
                assert_ne!(d.status, 0, "a refusal never says success");
                let ev = Event::new(&d.reply).expect("the reply is an event");
                let answered = ev
                    .command_complete()
                    .map(|c| c.opcode)
                    .or_else(|| ev.command_status().map(|s| s.opcode))
                    .expect("the reply is Command Complete or Command Status");
                assert_eq!(answered, d.opcode);
            }
        }
    }
    let _ = policy.stats();
});
