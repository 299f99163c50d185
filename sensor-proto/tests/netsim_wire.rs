//! Wire compatibility with netsim's PacketStreamer (what the emulator's
//! `-packet-streamer-endpoint` and bumble's `android-netsim` transport
//! speak), against bytes computed by hand from the reference.

use prost::Message;
use sensor_proto::ProtoError;
use sensor_proto::netsim::common::ChipKind;
use sensor_proto::netsim::packet::{
    HciPacket, PacketRequest, PacketResponse, hci_packet::PacketType, packet_request,
    packet_response,
};
use sensor_proto::netsim::startup::{Chip, ChipInfo, DeviceInfo};

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
fn packet_type_numbers_are_h4_type_bytes() {
    assert_eq!(PacketType::HciPacketUnspecified as i32, 0);
    assert_eq!(PacketType::Command as i32, 1);
    assert_eq!(PacketType::Acl as i32, 2);
    assert_eq!(PacketType::Sco as i32, 3);
    assert_eq!(PacketType::Event as i32, 4);
    assert_eq!(PacketType::Iso as i32, 5);
}

#[test]
fn chip_kind_numbers() {
    assert_eq!(ChipKind::Unspecified as i32, 0);
    assert_eq!(ChipKind::Bluetooth as i32, 1);
    assert_eq!(ChipKind::Wifi as i32, 2);
    assert_eq!(ChipKind::Uwb as i32, 3);
    assert_eq!(ChipKind::BluetoothBeacon as i32, 4);
    assert_eq!(ChipKind::Nfc as i32, 5);
    assert_eq!(ChipKind::Cellular as i32, 6);
}

#[test]
fn initial_info_request() {
    let msg = PacketRequest {
        request_type: Some(packet_request::RequestType::InitialInfo(ChipInfo {
            name: "a".into(),
            chip: Some(Chip {
                kind: ChipKind::Bluetooth as i32,
                ..Chip::default()
            }),
            device_info: Some(DeviceInfo {
                kind: "BUMBLE".into(),
                ..DeviceInfo::default()
            }),
            is_host_reconnect: false,
        })),
    };
    // PacketRequest.initial_info = 1 { ChipInfo.name = 1 "a",
    // chip = 2 { kind = 1: BLUETOOTH }, device_info = 3 { kind = 2 "BUMBLE" } }
    assert_wire(
        &msg,
        "0a 11 0a 01 61 12 02 08 01 1a 08 12 06 42 55 4d 42 4c 45",
    );
}

#[test]
fn chip_opaque_message_fields_are_bytes_with_upstream_numbers() {
    let chip = Chip {
        kind: ChipKind::Bluetooth as i32,
        address: "00:11:22:33:44:55".into(),
        bt_properties: Some(vec![0x08, 0x01].into()),
        offset: Some(Vec::new().into()),
        ..Chip::default()
    };
    // bt_properties = 8 (LEN), address = 9 (string), offset = 10 (LEN, present
    // even when empty, like an empty upstream Position message).
    assert_wire(
        &chip,
        "08 01 42 02 08 01 4a 11 30 30 3a 31 31 3a 32 32 3a 33 33 3a 34 34 3a 35 35 52 00",
    );
}

#[test]
fn hci_reset_request() {
    let msg = PacketRequest {
        request_type: Some(packet_request::RequestType::HciPacket(HciPacket {
            packet_type: PacketType::Command as i32,
            packet: vec![0x03, 0x0c, 0x00].into(),
        })),
    };
    // hci_packet = 2 { packet_type = 1: COMMAND, packet = 2: 03 0c 00 }
    assert_wire(&msg, "12 07 08 01 12 03 03 0c 00");
    // The same from the H4 bytes Android's stack sends.
    let from_h4 = HciPacket::from_h4(&[0x01, 0x03, 0x0c, 0x00]).expect("valid H4");
    assert_eq!(
        msg.request_type,
        Some(packet_request::RequestType::HciPacket(from_h4))
    );
}

#[test]
fn event_response() {
    let packet = HciPacket {
        packet_type: PacketType::Event as i32,
        // Command Complete for HCI_Reset, status success.
        packet: vec![0x0e, 0x04, 0x01, 0x03, 0x0c, 0x00].into(),
    };
    let msg = PacketResponse {
        response_type: Some(packet_response::ResponseType::HciPacket(packet.clone())),
    };
    assert_wire(&msg, "12 0a 08 04 12 06 0e 04 01 03 0c 00");
    assert_eq!(
        packet.to_h4().expect("valid"),
        vec![0x04, 0x0e, 0x04, 0x01, 0x03, 0x0c, 0x00]
    );
}

#[test]
fn error_and_raw_packet_responses() {
    let err = PacketResponse {
        response_type: Some(packet_response::ResponseType::Error("Device busy".into())),
    };
    assert_wire(&err, "0a 0b 44 65 76 69 63 65 20 62 75 73 79");
    let raw = PacketResponse {
        response_type: Some(packet_response::ResponseType::Packet(vec![1, 2].into())),
    };
    assert_wire(&raw, "1a 02 01 02");
}

#[test]
fn h4_conversion_rejects_bad_packets() {
    for (h4, why) in [
        (&[][..], "empty"),
        (&[0x00, 0x01][..], "unknown type 0"),
        (&[0x06, 0x00, 0x00][..], "unknown type 6"),
        (&[0x01, 0x03, 0x0c][..], "command without length byte"),
        (
            &[0x01, 0x03, 0x0c, 0x01][..],
            "command missing a parameter byte",
        ),
        (&[0x04, 0x0e, 0x01][..], "event missing a parameter byte"),
        (
            &[0x02, 0x01, 0x00, 0x02, 0x00, 0xaa][..],
            "ACL missing a byte",
        ),
        (
            &[0x02, 0x01, 0x00, 0x00, 0x00, 0xaa][..],
            "ACL with a trailing byte",
        ),
        // The fuzzer's find (bridge_messages): bt-raw refuses these as a
        // corrupt stream, so the bridge must not accept and relay them.
        (
            &[0x05, 0x01, 0x00, 0x01, 0xc0, 0xaa][..],
            "ISO whose length sets the reserved top bits",
        ),
    ] {
        assert!(
            matches!(HciPacket::from_h4(h4), Err(ProtoError::BadH4(_))),
            "{why}: {h4:02x?} must be rejected"
        );
    }
    // ACL up to what the HCI layer accepts, not one byte more (bt-raw would
    // refuse the packet after the bridge relayed it).
    let acl = |len: usize| {
        let mut h4 = vec![0x02, 0x01, 0x00];
        h4.extend_from_slice(&u16::try_from(len).expect("fits").to_le_bytes());
        h4.resize(5 + len, 0xaa);
        h4
    };
    assert!(HciPacket::from_h4(&acl(sensor_proto::MAX_ACL_PAYLOAD)).is_ok());
    let e = HciPacket::from_h4(&acl(sensor_proto::MAX_ACL_PAYLOAD + 1)).unwrap_err();
    assert!(
        e.to_string().contains("larger than the HCI layer accepts"),
        "{e}"
    );
    // Well-formed packets of every type.
    for h4 in [
        &[0x01, 0x03, 0x0c, 0x00][..],
        &[0x02, 0x01, 0x20, 0x02, 0x00, 0xaa, 0xbb][..],
        &[0x03, 0x01, 0x00, 0x01, 0xaa][..],
        &[0x04, 0x0e, 0x01, 0x05][..],
        &[0x05, 0x01, 0x00, 0x01, 0x00, 0xaa][..],
    ] {
        let packet = HciPacket::from_h4(h4).expect("valid");
        assert_eq!(i32::from(h4[0]), packet.packet_type);
        assert_eq!(packet.to_h4().expect("valid"), h4);
    }
    let unspecified = HciPacket {
        packet_type: 0,
        packet: vec![0x0e, 0x00].into(),
    };
    assert!(matches!(unspecified.to_h4(), Err(ProtoError::BadH4(_))));
}

#[test]
fn emulator_bluetooth_hci_packet_is_wire_compatible() {
    // android.emulation.bluetooth.HCIPacket{type = 1: PACKET_TYPE_EVENT (4),
    // packet = 2} as the emulator encodes it decodes as netsim's HCIPacket.
    let decoded = HciPacket::decode(unhex("08 04 12 02 0e 00").as_slice()).expect("decode");
    assert_eq!(decoded.packet_type(), PacketType::Event);
    assert_eq!(&decoded.packet[..], &[0x0e, 0x00]);
}
