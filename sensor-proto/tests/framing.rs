//! Length-delimited framing: round trips, byte-by-byte feeding, limits,
//! error stickiness, and a property test that arbitrary input never panics.

use proptest::prelude::*;
use prost::Message;
use sensor_proto::ProtoError;
use sensor_proto::bridge::{
    AppErrorCode, ClockPing, ControlMessage, HciMessage, HciPacket, control_message, hci_message,
};
use sensor_proto::framing::{
    DEFAULT_MAX_MESSAGE_SIZE, LengthDelimitedDecoder, encode_length_delimited,
    encode_length_delimited_checked,
};

fn ping(id: u64) -> ControlMessage {
    ControlMessage {
        msg: Some(control_message::Msg::Ping(ClockPing {
            id,
            client_send_ns: id * 1000,
        })),
    }
}

fn hci(seq: u64, h4: Vec<u8>) -> HciMessage {
    HciMessage {
        msg: Some(hci_message::Msg::Packet(HciPacket { seq, h4: h4.into() })),
    }
}

/// The varint encoding of `n`.
fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

#[test]
fn encoding_is_varint_length_then_message() {
    let msg = ping(1);
    let framed = encode_length_delimited(&msg);
    let body = msg.encode_to_vec();
    assert_eq!(framed[0] as usize, body.len());
    assert_eq!(&framed[1..], &body[..]);
}

#[test]
fn round_trip_several_messages_in_one_push() {
    let msgs: Vec<_> = (1..=5).map(ping).collect();
    let mut wire = Vec::new();
    for m in &msgs {
        wire.extend_from_slice(&encode_length_delimited(m));
    }
    let mut decoder = LengthDelimitedDecoder::new();
    decoder.push(&wire);
    let mut got = Vec::new();
    while let Some(m) = decoder.pop::<ControlMessage>().expect("valid") {
        got.push(m);
    }
    assert_eq!(got, msgs);
    assert_eq!(decoder.buffered(), 0);
    assert!(decoder.finish().is_ok());
}

#[test]
fn byte_by_byte_feed() {
    // A 300-byte body needs a two-byte length prefix.
    let msgs = vec![
        hci(1, vec![0xaa; 300]),
        hci(2, vec![]),
        hci(3, vec![1, 2, 3]),
    ];
    let mut wire = Vec::new();
    for m in &msgs {
        wire.extend_from_slice(&encode_length_delimited(m));
    }
    let mut decoder = LengthDelimitedDecoder::new();
    let mut got = Vec::new();
    for (i, byte) in wire.iter().enumerate() {
        decoder.push(std::slice::from_ref(byte));
        while let Some(m) = decoder.pop::<HciMessage>().expect("valid") {
            got.push((i, m));
        }
    }
    // Each message pops exactly when its last byte arrives.
    let mut end = 0;
    let ends: Vec<usize> = msgs
        .iter()
        .map(|m| {
            end += encode_length_delimited(m).len();
            end - 1
        })
        .collect();
    assert_eq!(got.iter().map(|(i, _)| *i).collect::<Vec<_>>(), ends);
    assert_eq!(got.into_iter().map(|(_, m)| m).collect::<Vec<_>>(), msgs);
}

#[test]
fn empty_message_is_a_single_zero_byte() {
    let framed = encode_length_delimited(&ControlMessage::default());
    assert_eq!(&framed[..], &[0]);
    let mut decoder = LengthDelimitedDecoder::new();
    decoder.push(&framed);
    assert_eq!(
        decoder.pop::<ControlMessage>().expect("valid"),
        Some(ControlMessage::default())
    );
}

#[test]
fn message_of_exactly_max_size_is_accepted() {
    let max = 100;
    let body = vec![0u8; max];
    let mut wire = varint(max as u64);
    wire.extend_from_slice(&body);
    let mut decoder = LengthDelimitedDecoder::with_max_size(max);
    decoder.push(&wire);
    assert_eq!(
        decoder.pop_frame().expect("valid").map(|b| b.len()),
        Some(max)
    );
}

#[test]
fn oversize_rejected_from_the_prefix_alone() {
    let max = DEFAULT_MAX_MESSAGE_SIZE;
    let mut decoder = LengthDelimitedDecoder::new();
    // Only the prefix of a 64 KiB + 1 body: no body byte has arrived.
    decoder.push(&varint(max as u64 + 1));
    let err = decoder.pop::<ControlMessage>().expect_err("too large");
    assert_eq!(
        err,
        ProtoError::TooLarge {
            len: max as u64 + 1,
            max
        }
    );
    assert_eq!(err.app_error_code(), AppErrorCode::MessageTooLarge);
    // Sticky: later bytes are not buffered and every pop fails the same way.
    decoder.push(&vec![0u8; 4096]);
    assert_eq!(decoder.buffered(), 0);
    assert_eq!(decoder.pop_frame(), Err(err.clone()));
    assert_eq!(decoder.pop_raw(1), Err(err.clone()));
    assert_eq!(decoder.finish(), Err(err.clone()));
    assert_eq!(decoder.error(), Some(&err));
}

#[test]
fn oversize_rejected_before_the_prefix_is_complete() {
    // ff ff ff ... already announces at least 2^21 - 1 > 64 KiB after three
    // bytes, whatever follows.
    let mut decoder = LengthDelimitedDecoder::new();
    decoder.push(&[0xff, 0xff, 0xff]);
    assert!(matches!(
        decoder.pop_frame(),
        Err(ProtoError::TooLarge { .. })
    ));
}

#[test]
fn prefix_split_across_pushes() {
    let msg = hci(9, vec![7; 200]);
    let framed = encode_length_delimited(&msg);
    assert!(framed[0] & 0x80 != 0, "two-byte prefix expected");
    let mut decoder = LengthDelimitedDecoder::new();
    decoder.push(&framed[..1]);
    assert_eq!(decoder.pop::<HciMessage>().expect("ok"), None);
    decoder.push(&framed[1..2]);
    assert_eq!(decoder.pop::<HciMessage>().expect("ok"), None);
    decoder.push(&framed[2..]);
    assert_eq!(decoder.pop::<HciMessage>().expect("ok"), Some(msg));
}

#[test]
fn invalid_varint_prefix() {
    let mut decoder = LengthDelimitedDecoder::with_max_size(usize::MAX);
    decoder.push(&[0x80; 11]);
    assert_eq!(decoder.pop_frame(), Err(ProtoError::InvalidLengthPrefix));
    let mut decoder = LengthDelimitedDecoder::with_max_size(usize::MAX);
    // Ten bytes whose last one carries more than the top bit of a u64.
    decoder.push(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]);
    assert_eq!(decoder.pop_frame(), Err(ProtoError::InvalidLengthPrefix));
}

#[test]
fn malformed_body_is_reported_and_skipped() {
    let mut decoder = LengthDelimitedDecoder::new();
    // Body "ff": a truncated varint tag.
    decoder.push(&[0x01, 0xff]);
    decoder.push(&encode_length_delimited(&ping(4)));
    let err = decoder.pop::<ControlMessage>().expect_err("malformed");
    assert!(matches!(err, ProtoError::Malformed(_)));
    assert_eq!(err.app_error_code(), AppErrorCode::MalformedMessage);
    assert_eq!(
        decoder.pop::<ControlMessage>().expect("valid"),
        Some(ping(4))
    );
}

#[test]
fn truncated_stream_end() {
    let framed = encode_length_delimited(&ping(2));
    let mut decoder = LengthDelimitedDecoder::new();
    decoder.push(&framed[..framed.len() - 1]);
    assert_eq!(decoder.pop::<ControlMessage>().expect("ok"), None);
    assert_eq!(
        decoder.finish(),
        Err(ProtoError::Truncated {
            buffered: framed.len() - 1
        })
    );
}

#[test]
fn raw_bytes_after_a_frame() {
    let mut decoder = LengthDelimitedDecoder::new();
    // A stream starting with its StreamKind byte, then a frame, then raw
    // payload.
    decoder.push(&[2]);
    decoder.push(&encode_length_delimited(&ping(1)));
    decoder.push(&[9, 8, 7]);
    assert_eq!(decoder.pop_raw(1).expect("ok").as_deref(), Some(&[2][..]));
    assert_eq!(decoder.pop::<ControlMessage>().expect("ok"), Some(ping(1)));
    assert_eq!(decoder.pop_raw(4).expect("ok"), None);
    assert_eq!(&decoder.pop_raw_up_to(2).expect("ok")[..], &[9, 8]);
    assert_eq!(&decoder.pop_raw_up_to(10).expect("ok")[..], &[7]);
    assert!(decoder.pop_raw_up_to(10).expect("ok").is_empty());
}

#[test]
fn checked_encoding_refuses_oversize() {
    let big = hci(1, vec![0; DEFAULT_MAX_MESSAGE_SIZE]);
    let err =
        encode_length_delimited_checked(&big, DEFAULT_MAX_MESSAGE_SIZE).expect_err("too large");
    assert!(matches!(err, ProtoError::TooLarge { len, max }
        if len as usize == big.encoded_len() && max == DEFAULT_MAX_MESSAGE_SIZE));
    let small = hci(1, vec![0; 10]);
    assert_eq!(
        encode_length_delimited_checked(&small, DEFAULT_MAX_MESSAGE_SIZE).expect("fits"),
        encode_length_delimited(&small)
    );
}

/// Pushes `data` in `chunk`-sized pieces and pops until stuck or failed.
fn drain(decoder: &mut LengthDelimitedDecoder, data: &[u8], chunk: usize) {
    for piece in data.chunks(chunk.max(1)) {
        decoder.push(piece);
        while let Ok(Some(_)) | Err(ProtoError::Malformed(_)) = decoder.pop::<ControlMessage>() {}
    }
    let _ = decoder.finish();
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..4096),
        chunk in 1usize..64,
        max in prop_oneof![Just(DEFAULT_MAX_MESSAGE_SIZE), 0usize..300, Just(usize::MAX)],
    ) {
        let mut decoder = LengthDelimitedDecoder::with_max_size(max);
        drain(&mut decoder, &data, chunk);
        let mut decoder = LengthDelimitedDecoder::with_max_size(max);
        decoder.push(&data);
        let _ = decoder.pop_raw(data.len() / 2);
        let _ = decoder.pop_frame();
        let _ = decoder.pop::<HciMessage>();
    }

    #[test]
    fn encode_decode_round_trip(
        packets in proptest::collection::vec(
            (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..600)),
            0..20,
        ),
        chunk in 1usize..700,
    ) {
        let msgs: Vec<HciMessage> = packets.into_iter().map(|(s, h4)| hci(s, h4)).collect();
        let mut wire = Vec::new();
        for m in &msgs {
            wire.extend_from_slice(&encode_length_delimited(m));
        }
        let mut decoder = LengthDelimitedDecoder::new();
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            decoder.push(piece);
            while let Some(m) = decoder.pop::<HciMessage>().expect("valid") {
                got.push(m);
            }
        }
        prop_assert_eq!(got, msgs);
        prop_assert!(decoder.finish().is_ok());
    }
}
