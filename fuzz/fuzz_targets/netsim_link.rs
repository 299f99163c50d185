//! The host's side of a phone's Bluetooth link, driven by anything: netsim
//! `PacketRequest`s from a stack (decoded as the attach point decodes
//! them), packets from the lent radio, heartbeats, releases, failures,
//! stalls and the clock, in any order. The link never panics, never queues
//! without bound, and never sends a radio packet to a radio that is not
//! the current one's generation or older.
#![no_main]

use std::time::{Duration, Instant};

use bt_raw::H4Packet;
use host_core::bluetooth::LinkTiming;
use host_core::bluetooth::core::{Action, LinkCore, MAX_PENDING};
use libfuzzer_sys::fuzz_target;
use sensor_proto::netsim::packet::{PacketRequest, packet_request::RequestType};
use sensor_proto::prost::Message;

fuzz_target!(|data: &[u8]| {
    let mut link = LinkCore::new(LinkTiming::default());
    let start = Instant::now();
    let mut now = start;
    let (mut stack, mut generation) = (None::<u64>, 0u64);
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        let len = usize::from(op >> 4).min(tail.len());
        let (arg, next) = tail.split_at(len);
        rest = next;
        match op & 0x0F {
            0 => stack = link.stack_attached("stack").ok().or(stack),
            1 => {
                let Ok(req) = PacketRequest::decode(arg) else {
                    continue;
                };
                if let (Some(id), Some(RequestType::HciPacket(p))) = (stack, req.request_type)
                    && let Some(pkt) = p.to_h4().ok().and_then(|raw| H4Packet::parse(raw).ok())
                {
                    link.stack_packet(id, pkt, now);
                }
            }
            2 => {
                if let Some(g) = link.radio_beat("session", "handset", now) {
                    generation = g;
                }
            }
            3 => {
                if let Ok(pkt) = H4Packet::parse(arg.to_vec()) {
                    link.radio_packet(generation, pkt, now);
                }
            }
            4 => now += Duration::from_millis(u64::from(arg.first().copied().unwrap_or(1)) * 20),
            5 => {
                if let Some(id) = stack.take() {
                    link.stack_gone(id, now);
                }
            }
            6 => link.radio_released("session", "fuzz"),
            7 => link.radio_failed(generation, "fuzz"),
            8 => link.radio_sent(generation),
            9 => {
                if let Some(id) = stack {
                    link.stack_stalled(id, now);
                    stack = None;
                }
            }
            10 => {
                if let Some(id) = stack.take() {
                    link.stack_abandoned(id);
                }
            }
            _ => link.tick(now),
        }
        while let Some(action) = link.poll_action() {
            if let Action::ToRadio { generation: g, .. } = action {
                assert!(
                    g <= generation.max(1),
                    "a packet for a radio not yet attached"
                );
            }
        }
        assert!(
            link.pending() <= MAX_PENDING,
            "the link queued {}",
            link.pending()
        );
    }
    let _ = (
        link.info(),
        link.status(),
        link.resyncing(),
        link.radio_generation(),
    );
});
