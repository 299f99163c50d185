//! The H4 stream decoder a radio or a stack feeds (any chunking), and what
//! reads each packet it yields: the typed views, the link tracker, flow
//! control and `Debug` (which redacts). Bytes are accounted for: every byte
//! pushed is a packet, a reported discard, or still buffered.
#![no_main]

use bt_raw::flow::FlowControl;
use bt_raw::h4::Decoded;
use bt_raw::link::LinkTracker;
use bt_raw::packet::{Acl, Command, Event, Iso, Sco};
use bt_raw::{H4Decoder, H4Packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk.max(1));
    let mut dec = H4Decoder::new();
    let mut tracker = LinkTracker::new();
    let mut flow = FlowControl::new();
    let (mut packets, mut discarded) = (0usize, 0usize);
    for (i, piece) in data.chunks(chunk).enumerate() {
        dec.push(piece);
        while let Some(d) = dec.poll() {
            match d {
                Decoded::Packet(p) => {
                    packets += p.len();
                    let again =
                        H4Packet::parse(p.as_bytes().to_vec()).expect("a decoded packet parses");
                    assert_eq!(again, p);
                    look_at(&p, i % 2 == 0, &mut tracker, &mut flow);
                }
                Decoded::Discarded { bytes, .. } => discarded += bytes,
            }
        }
    }
    assert_eq!(
        packets + discarded + dec.buffered(),
        data.len(),
        "every byte is a packet, a discard or still buffered"
    );
});

fn look_at(p: &H4Packet, from_host: bool, tracker: &mut LinkTracker, flow: &mut FlowControl) {
    let _ = format!("{p:?}");
    if let Ok(c) = Command::new(p) {
        let _ = (c.opcode(), c.params());
    }
    if let Ok(e) = Event::new(p) {
        let _ = (e.code(), e.le_subevent(), e.command_credits());
        let _ = e.command_complete().map(|c| c.return_params.len());
        let _ = e.command_status();
        let _ = e.completed_packets();
    }
    if let Ok(a) = Acl::new(p) {
        let _ = (a.handle(), a.pb_flag(), a.bc_flag(), a.data().len());
    }
    let _ = Sco::new(p).is_ok();
    let _ = Iso::new(p).is_ok();
    if from_host {
        tracker.on_host_packet(p);
        let _ = flow.can_send(p);
        let _ = flow.on_host_packet(p);
    } else {
        let _ = tracker.on_controller_packet(p);
        flow.on_controller_packet(p);
    }
    // Now and then (a packet whose length is a multiple of 7) the radio is
    // lost while connections are open.
    if tracker.connections().count() > 0 && p.len().is_multiple_of(7) {
        let _ = tracker.radio_lost();
    }
}
