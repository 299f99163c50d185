//! Everything a peer sends over the bridge: length-delimited messages on
//! the control, input and hci streams (any chunking, any size claim), the
//! sensor datagrams, and the sans-IO checks that judge them (H4 validity,
//! latest-wins, HCI sequence numbers, handset names). An H4 packet the
//! bridge accepts is one the HCI layer parses.
#![no_main]

use bt_raw::H4Packet;
use device_bridge::hci::{HciReceiver, Incoming};
use device_bridge::proto::{
    ControlMessage, Datagram, HciMessage, Hello, InputMessage, SensorKind, hci_message,
};
use device_bridge::{LatestWins, SampleVerdict};
use libfuzzer_sys::fuzz_target;
use sensor_proto::framing::LengthDelimitedDecoder;
use sensor_proto::prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 5 {
        0 => stream::<ControlMessage>(rest, |_| {}),
        1 => stream::<InputMessage>(rest, |_| {}),
        2 => {
            let mut rx = HciReceiver::new();
            stream::<HciMessage>(rest, |m| hci(&mut rx, m));
        }
        3 => stream::<Hello>(rest, |h| {
            let _ = sensor_proto::names::check_handset_name(&h.handset_name);
            let _ = format!("{h:?}");
        }),
        _ => datagrams(rest),
    }
});

/// `data` as one stream, cut where its first byte says.
fn stream<M: Message + Default>(data: &[u8], mut each: impl FnMut(M)) {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let mut dec = LengthDelimitedDecoder::with_max_size(64 * 1024);
    for piece in data.chunks(usize::from(chunk.max(1))) {
        dec.push(piece);
        loop {
            match dec.pop::<M>() {
                Ok(Some(m)) => each(m),
                Ok(None) => break,
                Err(e) => {
                    if dec.error().is_some() {
                        // Broken framing stays broken and says so again.
                        assert_eq!(dec.pop::<M>().err(), Some(e));
                        assert_eq!(dec.buffered(), 0, "a broken stream buffers nothing");
                        return;
                    }
                    // A malformed body is consumed; the bridge closes the
                    // stream, the decoder could go on.
                }
            }
        }
    }
    let _ = dec.finish();
}

fn hci(rx: &mut HciReceiver, m: HciMessage) {
    match m.msg {
        Some(hci_message::Msg::Packet(p)) => {
            if p.check().is_ok() {
                H4Packet::parse(p.h4.clone()).expect("an H4 packet the bridge accepts parses");
            }
            if let Ok(Incoming::Deliver) = rx.check(p.seq) {
                rx.delivered(p.seq);
                assert_eq!(rx.last_delivered(), p.seq);
            }
            let _ = rx.take_ack();
        }
        Some(hci_message::Msg::Ack(_)) | None => {}
    }
}

fn datagrams(mut data: &[u8]) {
    let mut filter = LatestWins::new([
        SensorKind::Accelerometer,
        SensorKind::Gyroscope,
        SensorKind::Magnetometer,
    ]);
    let mut applied = std::collections::HashMap::new();
    while let Some((&len, rest)) = data.split_first() {
        let len = usize::from(len).min(rest.len());
        let (one, next) = rest.split_at(len);
        data = next;
        let Ok(d) = Datagram::decode(one) else {
            continue;
        };
        for s in d.batch.unwrap_or_default().samples {
            if let Ok(SampleVerdict::Apply) = filter.check(&s) {
                let last = applied.insert(s.kind, s.seq).unwrap_or(0);
                assert!(
                    s.seq > last,
                    "latest wins: never an older sample after a newer one"
                );
            }
        }
    }
}
