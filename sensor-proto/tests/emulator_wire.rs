//! Wire compatibility with the Android Emulator's EmulatorController: each
//! test encodes a message and compares with bytes computed by hand from the
//! reference field numbers and wire types (and decodes them back).

use prost::Message;
use sensor_proto::emulator::{
    BatteryState, EmulatorStatus, GpsState, Image, ImageFormat, InputEvent, KeyboardEvent,
    ParameterValue, PhysicalModelValue, SensorValue, Touch, TouchEvent, VmConfiguration,
    battery_state, image_format, input_event, keyboard_event, physical_model_value, sensor_value,
    touch, vm_configuration,
};

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

/// Encodes `msg`, compares with `expected` (hex), and checks that decoding
/// the expected bytes gives `msg` back.
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
fn sensor_value_gyroscope() {
    let msg = SensorValue {
        target: sensor_value::SensorType::Gyroscope as i32,
        status: 0,
        value: Some(ParameterValue { data: vec![1.0] }),
    };
    // target = 1 (varint), value = field 3 (LEN) holding packed float data
    // (field 1, LEN 4, 1.0f32 little endian).
    assert_wire(&msg, "08 01 1a 06 0a 04 00 00 80 3f");
}

#[test]
fn sensor_value_acceleration_is_zero_and_omitted() {
    let msg = SensorValue {
        target: sensor_value::SensorType::Acceleration as i32,
        status: 0,
        value: Some(ParameterValue {
            data: vec![0.0, 9.81, -1.5],
        }),
    };
    // ACCELERATION = 0 is the proto3 default, so only the value travels.
    // 9.81f32 = 0x411cf5c3, -1.5f32 = 0xbfc00000.
    assert_wire(&msg, "1a 0e 0a 0c 00 00 00 00 c3 f5 1c 41 00 00 c0 bf");
}

#[test]
fn sensor_type_numbers_match_reference() {
    use sensor_value::SensorType as T;
    let expected = [
        (T::Acceleration, 0),
        (T::Gyroscope, 1),
        (T::MagneticField, 2),
        (T::Orientation, 3),
        (T::Temperature, 4),
        (T::Proximity, 5),
        (T::Light, 6),
        (T::Pressure, 7),
        (T::Humidity, 8),
        (T::MagneticFieldUncalibrated, 9),
        (T::GyroscopeUncalibrated, 10),
        (T::HeartRate, 14),
        (T::RgbcLight, 15),
        (T::AccelerationUncalibrated, 17),
    ];
    for (t, n) in expected {
        assert_eq!(t as i32, n, "{t:?}");
    }
    // Hinge angles and wrist tilt are deliberately not sensors.
    for n in [11, 12, 13, 16] {
        assert!(T::try_from(n).is_err(), "{n} must not be a SensorType");
    }
}

#[test]
fn negative_state_round_trips_as_i32() {
    let msg = SensorValue {
        target: 0,
        status: sensor_value::State::NoService as i32,
        value: None,
    };
    assert_eq!(msg.status, -3);
    // Negative int32 enums are sign-extended 10-byte varints.
    assert_wire(&msg, "10 fd ff ff ff ff ff ff ff ff 01");
    let decoded =
        SensorValue::decode(unhex("10 fe ff ff ff ff ff ff ff ff 01").as_slice()).expect("decode");
    assert_eq!(decoded.status(), sensor_value::State::Disabled);
    assert_eq!(decoded.status, -2);

    let pm = PhysicalModelValue::decode(unhex("10 ff ff ff ff ff ff ff ff ff 01").as_slice())
        .expect("decode");
    assert_eq!(pm.status(), physical_model_value::State::Unknown);
    assert_eq!(pm.status, -1);
}

#[test]
fn physical_model_rotation() {
    let msg = PhysicalModelValue {
        target: physical_model_value::PhysicalType::Rotation as i32,
        status: 0,
        value: Some(ParameterValue {
            data: vec![0.0, 0.0, 90.0],
        }),
    };
    // 90.0f32 = 0x42b40000.
    assert_wire(
        &msg,
        "08 01 1a 0e 0a 0c 00 00 00 00 00 00 00 00 00 00 b4 42",
    );
    assert_eq!(physical_model_value::PhysicalType::WristTilt as i32, 19);
    assert_eq!(physical_model_value::PhysicalType::Posture as i32, 16);
}

#[test]
fn gps_state_doubles_are_fixed64() {
    let msg = GpsState {
        passive_update: true,
        latitude: 1.5,
        longitude: -2.0,
        speed: 0.0,
        bearing: 0.0,
        altitude: 0.25,
        satellites: 7,
    };
    // latitude: field 2 wire type 1 (0x11), 1.5 = 0x3ff8000000000000;
    // longitude: field 3 (0x19), -2.0 = 0xc000000000000000;
    // altitude: field 6 (0x31), 0.25 = 0x3fd0000000000000;
    // satellites: field 7 varint (0x38).
    assert_wire(
        &msg,
        "08 01 \
         11 00 00 00 00 00 00 f8 3f \
         19 00 00 00 00 00 00 00 c0 \
         31 00 00 00 00 00 00 d0 3f \
         38 07",
    );
}

#[test]
fn battery_state() {
    let msg = BatteryState {
        has_battery: true,
        is_present: true,
        charger: battery_state::BatteryCharger::Ac as i32,
        charge_level: 80,
        health: battery_state::BatteryHealth::Good as i32,
        status: battery_state::BatteryStatus::Charging as i32,
    };
    assert_wire(&msg, "08 01 10 01 18 01 20 50 30 01");
}

#[test]
fn touch_event_fields() {
    let msg = TouchEvent {
        touches: vec![Touch {
            x: 100,
            y: 200,
            identifier: 1,
            pressure: 1,
            touch_major: 4,
            touch_minor: 0,
            expiration: touch::EventExpiration::NeverExpire as i32,
            orientation: 0,
        }],
        display: 0,
    };
    // Touch: x=1, y=2 (200 = c8 01), identifier=3, pressure=4,
    // touch_major=5, expiration=7 (tag 0x38).
    assert_wire(&msg, "0a 0d 08 64 10 c8 01 18 01 20 01 28 04 38 01");
}

#[test]
fn touch_coordinates_are_int32_not_sint32() {
    let msg = Touch {
        x: -1,
        ..Touch::default()
    };
    // int32 -1 is a 10-byte varint (sint32 would be a single 0x01).
    assert_wire(&msg, "08 ff ff ff ff ff ff ff ff ff 01");
}

#[test]
fn touch_release_sends_no_pressure_field() {
    let msg = TouchEvent {
        touches: vec![Touch {
            x: 5,
            y: 6,
            identifier: 2,
            pressure: 0,
            ..Touch::default()
        }],
        display: 1,
    };
    assert_wire(&msg, "0a 06 08 05 10 06 18 02 10 01");
}

#[test]
fn keyboard_event() {
    let msg = KeyboardEvent {
        code_type: keyboard_event::KeyCodeType::Usb as i32,
        event_type: keyboard_event::KeyEventType::Keypress as i32,
        key_code: 0,
        key: "GoHome".into(),
        text: String::new(),
    };
    // eventType = field 2, key = field 4 (string).
    assert_wire(&msg, "10 02 22 06 47 6f 48 6f 6d 65");
    let text = KeyboardEvent {
        text: "hi".into(),
        ..KeyboardEvent::default()
    };
    assert_wire(&text, "2a 02 68 69");
    let evdev = KeyboardEvent {
        code_type: keyboard_event::KeyCodeType::Evdev as i32,
        event_type: keyboard_event::KeyEventType::Keydown as i32,
        key_code: 158,
        ..KeyboardEvent::default()
    };
    assert_wire(&evdev, "08 01 18 9e 01");
}

#[test]
fn input_event_oneof_numbers() {
    let touch = InputEvent {
        r#type: Some(input_event::Type::TouchEvent(TouchEvent {
            touches: vec![Touch {
                x: 1,
                ..Touch::default()
            }],
            display: 0,
        })),
    };
    assert_wire(&touch, "12 04 0a 02 08 01");
    let key = InputEvent {
        r#type: Some(input_event::Type::KeyEvent(KeyboardEvent {
            key: "a".into(),
            ..KeyboardEvent::default()
        })),
    };
    assert_wire(&key, "0a 03 22 01 61");
    let wheel = InputEvent {
        r#type: Some(input_event::Type::WheelEvent(
            sensor_proto::emulator::WheelEvent {
                dx: 0,
                dy: 120,
                display: 0,
            },
        )),
    };
    assert_wire(&wheel, "32 02 10 78");
}

#[test]
fn image_fields() {
    let msg = Image {
        format: Some(ImageFormat {
            format: image_format::ImgFormat::Rgb888 as i32,
            width: 720,
            height: 1280,
            ..ImageFormat::default()
        }),
        width: 0,
        height: 0,
        image: vec![0xaa, 0xbb].into(),
        seq: 5,
        timestamp_us: 300,
    };
    // format = 1 (ImageFormat: format=1, width=3, height=4), image = 4
    // (bytes), seq = 5, timestampUs = 6 (tag 0x30, 300 = ac 02).
    assert_wire(
        &msg,
        "0a 08 08 02 18 d0 05 20 80 0a 22 02 aa bb 28 05 30 ac 02",
    );
}

#[test]
fn image_format_rotation_is_a_message_in_field_2() {
    let bytes = unhex("12 02 08 01");
    let fmt = ImageFormat::decode(bytes.as_slice()).expect("decode");
    let rotation = fmt.rotation.expect("rotation");
    assert_eq!(
        rotation.rotation(),
        sensor_proto::emulator::rotation::SkinRotation::Landscape
    );
}

#[test]
fn emulator_status_decodes() {
    // version "33.1", uptime 1000 ms, booted, vmConfig{hypervisorType NONE},
    // hardwareConfig{entry{key "a", value "b"}}, heartbeat 5.
    let bytes = unhex(
        "0a 04 33 33 2e 31 10 e8 07 18 01 22 02 08 01 \
         2a 08 0a 06 0a 01 61 12 01 62 30 05",
    );
    let status = EmulatorStatus::decode(bytes.as_slice()).expect("decode");
    assert_eq!(status.version, "33.1");
    assert_eq!(status.uptime, 1000);
    assert!(status.booted);
    assert_eq!(
        status
            .vm_config
            .as_ref()
            .map(VmConfiguration::hypervisor_type),
        Some(vm_configuration::VmHypervisorType::None)
    );
    let entries = &status
        .hardware_config
        .as_ref()
        .expect("hardware config")
        .entry;
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (entries[0].key.as_str(), entries[0].value.as_str()),
        ("a", "b")
    );
    assert_eq!(status.heartbeat, 5);
    assert_eq!(status.encode_to_vec(), bytes);
}

#[test]
fn unknown_fields_from_newer_emulators_are_ignored() {
    // A GpsState with an extra field 15 (varint) that we do not declare.
    let bytes = unhex("38 07 78 01");
    let gps = GpsState::decode(bytes.as_slice()).expect("decode");
    assert_eq!(gps.satellites, 7);
}
