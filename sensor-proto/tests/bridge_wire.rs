//! Frozen wire layout of the vphone bridge protocol: golden bytes for the
//! messages both sides depend on, the stable numeric codes, and the
//! hand-written helpers.

use prost::Message;
use sensor_proto::bridge::{
    AppErrorCode, CloseReason, ControlMessage, Datagram, HciAck, HciMessage, HciPacket, Hello,
    InputMessage, Key, KeyAction, Location, Pointer, SensorBatch, SensorCapability, SensorKind,
    SensorSample, StreamKind, Touch, TouchAction, VideoFrameHeader, control_message, hci_message,
    input_message,
};
use sensor_proto::emulator::sensor_value::SensorType;
use sensor_proto::framing::{LengthDelimitedDecoder, encode_length_delimited};

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn unhex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect()
}

fn assert_wire<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M, expected: &str) {
    assert_eq!(
        hex(&msg.encode_to_vec()),
        hex(&unhex(expected)),
        "encoding of {msg:?}"
    );
    let decoded = M::decode(unhex(expected).as_slice()).expect("decode");
    assert_eq!(&decoded, msg);
}

#[test]
fn app_error_codes_are_stable() {
    use AppErrorCode as E;
    let expected = [
        (E::NoError, 0),
        (E::ProtocolViolation, 1),
        (E::MessageTooLarge, 2),
        (E::MalformedMessage, 3),
        (E::BadH4, 4),
        (E::UnknownSensor, 5),
        (E::WrongStreamDirection, 6),
        (E::Unauthorized, 7),
        (E::Revoked, 8),
        (E::TokenInvalid, 9),
        (E::TokenReused, 10),
        (E::TokenExpired, 11),
        (E::PhoneBusy, 12),
        (E::PhoneNotFound, 13),
        (E::NotAssigned, 14),
        (E::Kicked, 15),
        (E::Shutdown, 16),
        (E::ResumeExpired, 17),
        (E::IdleTimeout, 18),
        (E::VersionUnsupported, 19),
        (E::PhoneStopped, 20),
        (E::InternalError, 21),
        (E::Redirect, 22),
    ];
    for (code, n) in expected {
        assert_eq!(code.code(), n, "{code:?}");
        assert_eq!(AppErrorCode::from_code(n), Some(code));
    }
    assert_eq!(AppErrorCode::from_code(23), None);
    assert_eq!(AppErrorCode::from_code(u64::MAX), None);
    assert_eq!(AppErrorCode::from_code(1 << 32), None);
}

#[test]
fn close_reasons_map_to_error_codes_and_back() {
    for n in 1..=19 {
        let reason = CloseReason::try_from(n).expect("declared");
        let code = reason.app_error_code();
        assert_eq!(code.close_reason(), reason, "{reason:?} -> {code:?}");
    }
    assert_eq!(CloseReason::Normal.app_error_code(), AppErrorCode::NoError);
    assert_eq!(CloseReason::Kicked.app_error_code().code(), 15);
    assert_eq!(
        AppErrorCode::BadH4.close_reason(),
        CloseReason::ProtocolError
    );
}

#[test]
fn stream_kind_bytes() {
    assert_eq!(StreamKind::Input.to_byte(), 1);
    assert_eq!(StreamKind::Video.to_byte(), 2);
    assert_eq!(StreamKind::Hci.to_byte(), 3);
    assert_eq!(StreamKind::from_byte(3), Some(StreamKind::Hci));
    assert_eq!(StreamKind::from_byte(0), None);
    assert_eq!(StreamKind::from_byte(0xff), None);
}

#[test]
fn sensor_kind_maps_to_emulator_sensor_type_without_offset_errors() {
    assert_eq!(
        SensorKind::Accelerometer.emulator_sensor_type(),
        Some(SensorType::Acceleration)
    );
    assert_eq!(
        SensorKind::Gyroscope.emulator_sensor_type(),
        Some(SensorType::Gyroscope)
    );
    assert_eq!(
        SensorKind::Magnetometer.emulator_sensor_type(),
        Some(SensorType::MagneticField)
    );
    assert_eq!(
        SensorKind::AmbientTemperature.emulator_sensor_type(),
        Some(SensorType::Temperature)
    );
    assert_eq!(SensorKind::Unspecified.emulator_sensor_type(), None);
    // Every declared kind maps, and has a value count.
    for n in 1..=13 {
        let kind = SensorKind::try_from(n).expect("declared");
        assert!(kind.emulator_sensor_type().is_some(), "{kind:?}");
        assert!(kind.value_count().is_some(), "{kind:?}");
    }
    assert_eq!(SensorKind::Accelerometer.value_count(), Some(3));
    assert_eq!(SensorKind::Light.value_count(), Some(1));
    assert_eq!(SensorKind::GyroscopeUncalibrated.value_count(), Some(6));
}

#[test]
fn sensor_datagram_layout() {
    let msg = Datagram {
        seq: 7,
        batch: Some(SensorBatch {
            samples: vec![SensorSample {
                kind: SensorKind::Gyroscope as i32,
                seq: 1,
                timestamp_ns: 1000,
                values: vec![1.0],
            }],
        }),
        audio: None,
    };
    // Datagram{seq=1: 7, batch=2{samples=1{kind=1: 2, seq=2: 1,
    // timestamp_ns=3: 1000 (e8 07), values=4 packed [1.0]}}}
    assert_wire(
        &msg,
        "08 07 12 0f 0a 0d 08 02 10 01 18 e8 07 22 04 00 00 80 3f",
    );
}

#[test]
fn audio_datagram_layout() {
    let msg = Datagram {
        seq: 2,
        batch: None,
        audio: Some(sensor_proto::bridge::AudioFrame {
            seq: 5,
            capture_time_us: 300,
            payload: vec![0xf8, 0xff].into(),
        }),
    };
    // Datagram{seq=1: 2, audio=3{seq=1: 5, capture_time_us=2: 300 (ac 02),
    // payload=3: f8 ff}}
    assert_wire(&msg, "08 02 1a 09 08 05 10 ac 02 1a 02 f8 ff");
}

#[test]
fn hci_message_layout() {
    let packet = HciMessage {
        msg: Some(hci_message::Msg::Packet(HciPacket {
            seq: 1,
            h4: vec![0x01, 0x03, 0x0c, 0x00].into(),
        })),
    };
    assert_wire(&packet, "0a 08 08 01 12 04 01 03 0c 00");
    let ack = HciMessage {
        msg: Some(hci_message::Msg::Ack(HciAck { acked: 300 })),
    };
    assert_wire(&ack, "12 03 08 ac 02");
}

#[test]
fn hci_packet_check() {
    let good = HciPacket {
        seq: 1,
        h4: vec![0x04, 0x0e, 0x00].into(),
    };
    assert!(good.check().is_ok());
    let bad = HciPacket {
        seq: 2,
        h4: vec![0x04, 0x0e, 0x05].into(),
    };
    let err = bad.check().expect_err("length mismatch");
    assert_eq!(err.app_error_code(), AppErrorCode::BadH4);
}

#[test]
fn hello_layout_and_optional_presence() {
    let msg = ControlMessage {
        msg: Some(control_message::Msg::Hello(Hello {
            protocol_version: sensor_proto::bridge::PROTOCOL_VERSION,
            capabilities: vec![SensorCapability {
                kind: SensorKind::Accelerometer as i32,
                max_rate_hz: 0.0,
                name: String::new(),
            }],
            radio_available: true,
            hci_rx_acked: Some(0),
            ..Hello::default()
        })),
    };
    // Hello{protocol_version=1: 1, capabilities=3{kind=1: 1},
    // radio_available=5: true, hci_rx_acked=9: 0 (present: proto3 optional)}
    assert_wire(&msg, "0a 0a 08 01 1a 02 08 01 28 01 48 00");
    let absent = Hello::decode(unhex("08 01").as_slice()).expect("decode");
    assert_eq!(absent.hci_rx_acked, None);
    assert_eq!(absent.enrollment_token, None);
    assert_eq!(absent.resume_token, None);
}

#[test]
fn input_messages_layout() {
    let touch = InputMessage {
        seq: 1,
        event: Some(input_message::Event::Touch(Touch {
            action: TouchAction::Down as i32,
            action_pointer_id: 0,
            pointers: vec![Pointer {
                id: 0,
                x: 1.0,
                y: 2.0,
                pressure: 1.0,
                major_px: 0.0,
                minor_px: 0.0,
            }],
            timestamp_ns: 5,
        })),
    };
    // Pointer{x=2: 1.0, y=3: 2.0, pressure=4: 1.0} as fixed32 floats.
    assert_wire(
        &touch,
        "08 01 12 15 08 01 1a 0f 15 00 00 80 3f 1d 00 00 00 40 25 00 00 80 3f 20 05",
    );
    let key = InputMessage {
        seq: 2,
        event: Some(input_message::Event::Key(Key {
            keycode: 4,
            action: KeyAction::Press as i32,
            text: None,
            meta_state: 0,
            timestamp_ns: 0,
        })),
    };
    assert_wire(&key, "08 02 1a 04 08 04 10 03");
    let location = InputMessage {
        seq: 3,
        event: Some(input_message::Event::Location(Location {
            latitude_deg: 1.5,
            altitude_m: Some(0.0),
            ..Location::default()
        })),
    };
    // latitude_deg = 1 (fixed64), altitude_m = 3 (present although 0).
    assert_wire(
        &location,
        "08 03 22 12 09 00 00 00 00 00 00 f8 3f 19 00 00 00 00 00 00 00 00",
    );
}

#[test]
fn video_frame_header_layout() {
    let header = VideoFrameHeader {
        pts_us: 1,
        seq: 2,
        keyframe: true,
        capture_time_us: 3,
        payload_len: 4,
    };
    assert_wire(&header, "08 01 10 02 18 01 20 03 28 04");
    // On the stream: length-delimited header, then the raw payload.
    let mut stream = encode_length_delimited(&header).to_vec();
    stream.extend_from_slice(&[0, 0, 0, 1]);
    let mut decoder = LengthDelimitedDecoder::new();
    decoder.push(&stream);
    let got: VideoFrameHeader = decoder.pop().expect("ok").expect("whole header");
    assert_eq!(got, header);
    let payload = decoder
        .pop_raw(got.payload_len as usize)
        .expect("ok")
        .expect("payload");
    assert_eq!(&payload[..], &[0, 0, 0, 1]);
    assert!(decoder.finish().is_ok());
}

#[test]
fn every_bridge_enum_starts_with_unspecified_except_app_error_code() {
    assert_eq!(SensorKind::Unspecified as i32, 0);
    assert_eq!(StreamKind::Unspecified as i32, 0);
    assert_eq!(CloseReason::Unspecified as i32, 0);
    assert_eq!(TouchAction::Unspecified as i32, 0);
    assert_eq!(KeyAction::Unspecified as i32, 0);
    assert_eq!(AppErrorCode::NoError as i32, 0);
}
