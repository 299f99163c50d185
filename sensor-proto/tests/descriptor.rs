//! Checks the compiled descriptors (`FILE_DESCRIPTOR_SET`): gRPC method
//! paths and streaming shapes, and the emulator/netsim field table of the
//! reference (number and type of every field we declare).

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};

fn fds() -> FileDescriptorSet {
    FileDescriptorSet::decode(sensor_proto::FILE_DESCRIPTOR_SET).expect("valid descriptor set")
}

/// `/package.Service/method` -> (client streaming, server streaming, input, output)
fn methods() -> BTreeMap<String, (bool, bool, String, String)> {
    let mut out = BTreeMap::new();
    for file in fds().file {
        for service in &file.service {
            for method in &service.method {
                out.insert(
                    format!("/{}.{}/{}", file.package(), service.name(), method.name()),
                    (
                        method.client_streaming(),
                        method.server_streaming(),
                        method.input_type().to_owned(),
                        method.output_type().to_owned(),
                    ),
                );
            }
        }
    }
    out
}

fn collect_messages(
    prefix: &str,
    messages: &[DescriptorProto],
    out: &mut BTreeMap<String, DescriptorProto>,
) {
    for m in messages {
        let name = format!("{prefix}.{}", m.name());
        collect_messages(&name, &m.nested_type, out);
        out.insert(name, m.clone());
    }
}

fn all_messages() -> BTreeMap<String, DescriptorProto> {
    let mut out = BTreeMap::new();
    for file in fds().file {
        collect_messages(
            &format!(".{}", file.package()),
            &file.message_type,
            &mut out,
        );
    }
    out
}

fn collect_enums(
    prefix: &str,
    enums: &[EnumDescriptorProto],
    messages: &[DescriptorProto],
    out: &mut BTreeMap<String, EnumDescriptorProto>,
) {
    for e in enums {
        out.insert(format!("{prefix}.{}", e.name()), e.clone());
    }
    for m in messages {
        collect_enums(
            &format!("{prefix}.{}", m.name()),
            &m.enum_type,
            &m.nested_type,
            out,
        );
    }
}

fn all_enums() -> BTreeMap<String, EnumDescriptorProto> {
    let mut out = BTreeMap::new();
    for file in fds().file {
        collect_enums(
            &format!(".{}", file.package()),
            &file.enum_type,
            &file.message_type,
            &mut out,
        );
    }
    out
}

#[test]
fn contains_every_proto_file_and_empty() {
    let names: BTreeSet<String> = fds()
        .file
        .into_iter()
        .map(|f| f.name().to_owned())
        .collect();
    for expected in [
        "vphone/bridge/v1/bridge.proto",
        "vphone/operator/v1/operator.proto",
        "android/emulation/control/emulator_controller.proto",
        "netsim/common.proto",
        "netsim/hci_packet.proto",
        "netsim/startup.proto",
        "netsim/packet_streamer.proto",
        "google/protobuf/empty.proto",
    ] {
        assert!(names.contains(expected), "missing {expected} in {names:?}");
    }
}

#[test]
fn grpc_method_paths_and_shapes() {
    let methods = methods();
    let unary = (false, false);
    let server_stream = (false, true);
    let client_stream = (true, false);
    let bidi = (true, true);
    let ec = "/android.emulation.control.EmulatorController";
    let expected = [
        (format!("{ec}/getStatus"), unary),
        (format!("{ec}/streamScreenshot"), server_stream),
        (format!("{ec}/getScreenshot"), unary),
        (format!("{ec}/sendTouch"), unary),
        (format!("{ec}/sendKey"), unary),
        (format!("{ec}/sendMouse"), unary),
        (format!("{ec}/injectWheel"), client_stream),
        (format!("{ec}/streamInputEvent"), client_stream),
        (format!("{ec}/streamSensor"), server_stream),
        (format!("{ec}/setSensor"), unary),
        (format!("{ec}/getSensor"), unary),
        (format!("{ec}/setPhysicalModel"), unary),
        (format!("{ec}/getPhysicalModel"), unary),
        (format!("{ec}/streamPhysicalModel"), server_stream),
        (format!("{ec}/setGps"), unary),
        (format!("{ec}/getGps"), unary),
        (format!("{ec}/setBattery"), unary),
        (format!("{ec}/getBattery"), unary),
        (format!("{ec}/getDisplayConfigurations"), unary),
        (format!("{ec}/setDisplayConfigurations"), unary),
        (format!("{ec}/getVmState"), unary),
        (format!("{ec}/setClipboard"), unary),
        (format!("{ec}/getClipboard"), unary),
        (format!("{ec}/streamClipboard"), server_stream),
        (format!("{ec}/streamAudio"), server_stream),
        (format!("{ec}/injectAudio"), client_stream),
        (format!("{ec}/setVmState"), unary),
        (
            "/netsim.packet.PacketStreamer/StreamPackets".to_owned(),
            bidi,
        ),
        ("/vphone.operator.v1.Operator/CreatePhone".to_owned(), unary),
        ("/vphone.operator.v1.Operator/ListPhones".to_owned(), unary),
        ("/vphone.operator.v1.Operator/GetPhone".to_owned(), unary),
        ("/vphone.operator.v1.Operator/StartPhone".to_owned(), unary),
        ("/vphone.operator.v1.Operator/StopPhone".to_owned(), unary),
        ("/vphone.operator.v1.Operator/DeletePhone".to_owned(), unary),
        (
            "/vphone.operator.v1.Operator/GetScreenshot".to_owned(),
            unary,
        ),
        (
            "/vphone.operator.v1.Operator/EnrollHandset".to_owned(),
            unary,
        ),
        (
            "/vphone.operator.v1.Operator/ListHandsets".to_owned(),
            unary,
        ),
        (
            "/vphone.operator.v1.Operator/RevokeHandset".to_owned(),
            unary,
        ),
        (
            "/vphone.operator.v1.Operator/ListSessions".to_owned(),
            unary,
        ),
        ("/vphone.operator.v1.Operator/KickSession".to_owned(), unary),
        (
            "/vphone.operator.v1.Operator/GetHostStats".to_owned(),
            unary,
        ),
        (
            "/vphone.operator.v1.Operator/StreamBtSnoop".to_owned(),
            server_stream,
        ),
        ("/vphone.operator.v1.Operator/GetFleet".to_owned(), unary),
        ("/vphone.operator.v1.Operator/DrainHost".to_owned(), unary),
        ("/vphone.operator.v1.Operator/MovePhone".to_owned(), unary),
        ("/vphone.operator.v1.Operator/ForgetHost".to_owned(), unary),
    ];
    for (path, (cs, ss)) in &expected {
        let Some(&(got_cs, got_ss, _, _)) = methods.get(path) else {
            panic!("missing method {path}; have {:?}", methods.keys());
        };
        assert_eq!((got_cs, got_ss), (*cs, *ss), "streaming shape of {path}");
    }
    assert_eq!(
        methods.len(),
        expected.len(),
        "unexpected extra methods: {:?}",
        methods.keys()
    );
}

#[test]
fn grpc_method_types() {
    let methods = methods();
    let ec = "/android.emulation.control.EmulatorController";
    let pkg = ".android.emulation.control";
    let check = |path: &str, input: &str, output: &str| {
        let (_, _, got_in, got_out) = methods.get(path).expect(path);
        assert_eq!(
            (got_in.as_str(), got_out.as_str()),
            (input, output),
            "{path}"
        );
    };
    let empty = ".google.protobuf.Empty";
    check(
        &format!("{ec}/getStatus"),
        empty,
        &format!("{pkg}.EmulatorStatus"),
    );
    check(
        &format!("{ec}/streamAudio"),
        &format!("{pkg}.AudioFormat"),
        &format!("{pkg}.AudioPacket"),
    );
    check(
        &format!("{ec}/injectAudio"),
        &format!("{pkg}.AudioPacket"),
        empty,
    );
    check(
        &format!("{ec}/setClipboard"),
        &format!("{pkg}.ClipData"),
        empty,
    );
    check(
        &format!("{ec}/getClipboard"),
        empty,
        &format!("{pkg}.ClipData"),
    );
    check(
        &format!("{ec}/streamClipboard"),
        empty,
        &format!("{pkg}.ClipData"),
    );
    check(
        &format!("{ec}/setSensor"),
        &format!("{pkg}.SensorValue"),
        empty,
    );
    check(
        &format!("{ec}/getSensor"),
        &format!("{pkg}.SensorValue"),
        &format!("{pkg}.SensorValue"),
    );
    check(
        &format!("{ec}/streamScreenshot"),
        &format!("{pkg}.ImageFormat"),
        &format!("{pkg}.Image"),
    );
    check(
        &format!("{ec}/sendTouch"),
        &format!("{pkg}.TouchEvent"),
        empty,
    );
    check(
        &format!("{ec}/sendKey"),
        &format!("{pkg}.KeyboardEvent"),
        empty,
    );
    check(
        &format!("{ec}/streamInputEvent"),
        &format!("{pkg}.InputEvent"),
        empty,
    );
    check(&format!("{ec}/setGps"), &format!("{pkg}.GpsState"), empty);
    check(&format!("{ec}/getGps"), empty, &format!("{pkg}.GpsState"));
    check(
        &format!("{ec}/getBattery"),
        empty,
        &format!("{pkg}.BatteryState"),
    );
    check(
        &format!("{ec}/setPhysicalModel"),
        &format!("{pkg}.PhysicalModelValue"),
        empty,
    );
    check(
        &format!("{ec}/getDisplayConfigurations"),
        empty,
        &format!("{pkg}.DisplayConfigurations"),
    );
    check(
        &format!("{ec}/setDisplayConfigurations"),
        &format!("{pkg}.DisplayConfigurations"),
        &format!("{pkg}.DisplayConfigurations"),
    );
    check(
        "/netsim.packet.PacketStreamer/StreamPackets",
        ".netsim.packet.PacketRequest",
        ".netsim.packet.PacketResponse",
    );
}

/// (message, field, number, type, type name for enum/message fields,
/// repeated) straight from the reference tables.
#[rustfmt::skip]
const REFERENCE_FIELDS: &[(&str, &str, i32, Type, &str, bool)] = &[
    // 3.1 sensors and physical model
    (".android.emulation.control.ParameterValue", "data", 1, Type::Float, "", true),
    (".android.emulation.control.SensorValue", "target", 1, Type::Enum, ".android.emulation.control.SensorValue.SensorType", false),
    (".android.emulation.control.SensorValue", "status", 2, Type::Enum, ".android.emulation.control.SensorValue.State", false),
    (".android.emulation.control.SensorValue", "value", 3, Type::Message, ".android.emulation.control.ParameterValue", false),
    (".android.emulation.control.PhysicalModelValue", "target", 1, Type::Enum, ".android.emulation.control.PhysicalModelValue.PhysicalType", false),
    (".android.emulation.control.PhysicalModelValue", "status", 2, Type::Enum, ".android.emulation.control.PhysicalModelValue.State", false),
    (".android.emulation.control.PhysicalModelValue", "value", 3, Type::Message, ".android.emulation.control.ParameterValue", false),
    // 3.3 input
    (".android.emulation.control.Touch", "x", 1, Type::Int32, "", false),
    (".android.emulation.control.Touch", "y", 2, Type::Int32, "", false),
    (".android.emulation.control.Touch", "identifier", 3, Type::Int32, "", false),
    (".android.emulation.control.Touch", "pressure", 4, Type::Int32, "", false),
    (".android.emulation.control.Touch", "touch_major", 5, Type::Int32, "", false),
    (".android.emulation.control.Touch", "touch_minor", 6, Type::Int32, "", false),
    (".android.emulation.control.Touch", "expiration", 7, Type::Enum, ".android.emulation.control.Touch.EventExpiration", false),
    (".android.emulation.control.Touch", "orientation", 8, Type::Int32, "", false),
    (".android.emulation.control.TouchEvent", "touches", 1, Type::Message, ".android.emulation.control.Touch", true),
    (".android.emulation.control.TouchEvent", "display", 2, Type::Int32, "", false),
    (".android.emulation.control.KeyboardEvent", "codeType", 1, Type::Enum, ".android.emulation.control.KeyboardEvent.KeyCodeType", false),
    (".android.emulation.control.KeyboardEvent", "eventType", 2, Type::Enum, ".android.emulation.control.KeyboardEvent.KeyEventType", false),
    (".android.emulation.control.KeyboardEvent", "keyCode", 3, Type::Int32, "", false),
    (".android.emulation.control.KeyboardEvent", "key", 4, Type::String, "", false),
    (".android.emulation.control.KeyboardEvent", "text", 5, Type::String, "", false),
    (".android.emulation.control.MouseEvent", "x", 1, Type::Int32, "", false),
    (".android.emulation.control.MouseEvent", "y", 2, Type::Int32, "", false),
    (".android.emulation.control.MouseEvent", "buttons", 3, Type::Int32, "", false),
    (".android.emulation.control.MouseEvent", "display", 4, Type::Int32, "", false),
    (".android.emulation.control.WheelEvent", "dx", 1, Type::Int32, "", false),
    (".android.emulation.control.WheelEvent", "dy", 2, Type::Int32, "", false),
    (".android.emulation.control.WheelEvent", "display", 3, Type::Int32, "", false),
    (".android.emulation.control.Pen", "location", 1, Type::Message, ".android.emulation.control.Touch", false),
    (".android.emulation.control.Pen", "button_pressed", 2, Type::Bool, "", false),
    (".android.emulation.control.Pen", "rubber_pointer", 3, Type::Bool, "", false),
    (".android.emulation.control.PenEvent", "events", 1, Type::Message, ".android.emulation.control.Pen", true),
    (".android.emulation.control.PenEvent", "display", 2, Type::Int32, "", false),
    (".android.emulation.control.AndroidEvent", "type", 1, Type::Int32, "", false),
    (".android.emulation.control.AndroidEvent", "code", 2, Type::Int32, "", false),
    (".android.emulation.control.AndroidEvent", "value", 3, Type::Int32, "", false),
    (".android.emulation.control.AndroidEvent", "display", 4, Type::Int32, "", false),
    (".android.emulation.control.InputEvent", "key_event", 1, Type::Message, ".android.emulation.control.KeyboardEvent", false),
    (".android.emulation.control.InputEvent", "touch_event", 2, Type::Message, ".android.emulation.control.TouchEvent", false),
    (".android.emulation.control.InputEvent", "mouse_event", 3, Type::Message, ".android.emulation.control.MouseEvent", false),
    (".android.emulation.control.InputEvent", "android_event", 4, Type::Message, ".android.emulation.control.AndroidEvent", false),
    (".android.emulation.control.InputEvent", "pen_event", 5, Type::Message, ".android.emulation.control.PenEvent", false),
    (".android.emulation.control.InputEvent", "wheel_event", 6, Type::Message, ".android.emulation.control.WheelEvent", false),
    // 3.4 GPS and battery
    (".android.emulation.control.GpsState", "passiveUpdate", 1, Type::Bool, "", false),
    (".android.emulation.control.GpsState", "latitude", 2, Type::Double, "", false),
    (".android.emulation.control.GpsState", "longitude", 3, Type::Double, "", false),
    (".android.emulation.control.GpsState", "speed", 4, Type::Double, "", false),
    (".android.emulation.control.GpsState", "bearing", 5, Type::Double, "", false),
    (".android.emulation.control.GpsState", "altitude", 6, Type::Double, "", false),
    (".android.emulation.control.GpsState", "satellites", 7, Type::Int32, "", false),
    (".android.emulation.control.BatteryState", "hasBattery", 1, Type::Bool, "", false),
    (".android.emulation.control.BatteryState", "isPresent", 2, Type::Bool, "", false),
    (".android.emulation.control.BatteryState", "charger", 3, Type::Enum, ".android.emulation.control.BatteryState.BatteryCharger", false),
    (".android.emulation.control.BatteryState", "chargeLevel", 4, Type::Int32, "", false),
    (".android.emulation.control.BatteryState", "health", 5, Type::Enum, ".android.emulation.control.BatteryState.BatteryHealth", false),
    (".android.emulation.control.BatteryState", "status", 6, Type::Enum, ".android.emulation.control.BatteryState.BatteryStatus", false),
    // 3.5 screen frames
    (".android.emulation.control.ImageFormat", "format", 1, Type::Enum, ".android.emulation.control.ImageFormat.ImgFormat", false),
    (".android.emulation.control.ImageFormat", "rotation", 2, Type::Message, ".android.emulation.control.Rotation", false),
    (".android.emulation.control.ImageFormat", "width", 3, Type::Uint32, "", false),
    (".android.emulation.control.ImageFormat", "height", 4, Type::Uint32, "", false),
    (".android.emulation.control.ImageFormat", "display", 5, Type::Uint32, "", false),
    (".android.emulation.control.ImageFormat", "transport", 6, Type::Message, ".android.emulation.control.ImageTransport", false),
    (".android.emulation.control.ImageFormat", "foldedDisplay", 7, Type::Message, ".android.emulation.control.FoldedDisplay", false),
    (".android.emulation.control.ImageFormat", "displayMode", 8, Type::Enum, ".android.emulation.control.DisplayModeValue", false),
    (".android.emulation.control.ImageTransport", "channel", 1, Type::Enum, ".android.emulation.control.ImageTransport.TransportChannel", false),
    (".android.emulation.control.ImageTransport", "handle", 2, Type::String, "", false),
    (".android.emulation.control.FoldedDisplay", "width", 1, Type::Uint32, "", false),
    (".android.emulation.control.FoldedDisplay", "height", 2, Type::Uint32, "", false),
    (".android.emulation.control.FoldedDisplay", "xOffset", 3, Type::Uint32, "", false),
    (".android.emulation.control.FoldedDisplay", "yOffset", 4, Type::Uint32, "", false),
    (".android.emulation.control.Image", "format", 1, Type::Message, ".android.emulation.control.ImageFormat", false),
    (".android.emulation.control.Image", "width", 2, Type::Uint32, "", false),
    (".android.emulation.control.Image", "height", 3, Type::Uint32, "", false),
    (".android.emulation.control.Image", "image", 4, Type::Bytes, "", false),
    (".android.emulation.control.Image", "seq", 5, Type::Uint32, "", false),
    (".android.emulation.control.Image", "timestampUs", 6, Type::Uint64, "", false),
    (".android.emulation.control.Rotation", "rotation", 1, Type::Enum, ".android.emulation.control.Rotation.SkinRotation", false),
    (".android.emulation.control.Rotation", "xAxis", 2, Type::Double, "", false),
    (".android.emulation.control.Rotation", "yAxis", 3, Type::Double, "", false),
    (".android.emulation.control.Rotation", "zAxis", 4, Type::Double, "", false),
    // 3.6 displays
    (".android.emulation.control.DisplayConfiguration", "width", 1, Type::Uint32, "", false),
    (".android.emulation.control.DisplayConfiguration", "height", 2, Type::Uint32, "", false),
    (".android.emulation.control.DisplayConfiguration", "dpi", 3, Type::Uint32, "", false),
    (".android.emulation.control.DisplayConfiguration", "flags", 4, Type::Uint32, "", false),
    (".android.emulation.control.DisplayConfiguration", "display", 5, Type::Uint32, "", false),
    (".android.emulation.control.DisplayConfigurations", "displays", 1, Type::Message, ".android.emulation.control.DisplayConfiguration", true),
    (".android.emulation.control.DisplayConfigurations", "userConfigurable", 2, Type::Uint32, "", false),
    (".android.emulation.control.DisplayConfigurations", "maxDisplays", 3, Type::Uint32, "", false),
    // 3.7 status and VM state
    (".android.emulation.control.EmulatorStatus", "version", 1, Type::String, "", false),
    (".android.emulation.control.EmulatorStatus", "uptime", 2, Type::Uint64, "", false),
    (".android.emulation.control.EmulatorStatus", "booted", 3, Type::Bool, "", false),
    (".android.emulation.control.EmulatorStatus", "vmConfig", 4, Type::Message, ".android.emulation.control.VmConfiguration", false),
    (".android.emulation.control.EmulatorStatus", "hardwareConfig", 5, Type::Message, ".android.emulation.control.EntryList", false),
    (".android.emulation.control.EmulatorStatus", "heartbeat", 6, Type::Uint64, "", false),
    (".android.emulation.control.EntryList", "entry", 1, Type::Message, ".android.emulation.control.Entry", true),
    (".android.emulation.control.Entry", "key", 1, Type::String, "", false),
    (".android.emulation.control.Entry", "value", 2, Type::String, "", false),
    (".android.emulation.control.VmConfiguration", "hypervisorType", 1, Type::Enum, ".android.emulation.control.VmConfiguration.VmHypervisorType", false),
    (".android.emulation.control.VmConfiguration", "numberOfCpuCores", 2, Type::Int32, "", false),
    (".android.emulation.control.VmConfiguration", "ramSizeBytes", 3, Type::Int64, "", false),
    (".android.emulation.control.VmRunState", "state", 1, Type::Enum, ".android.emulation.control.VmRunState.RunState", false),
    // 4. netsim
    (".netsim.packet.PacketRequest", "initial_info", 1, Type::Message, ".netsim.startup.ChipInfo", false),
    (".netsim.packet.PacketRequest", "hci_packet", 2, Type::Message, ".netsim.packet.HCIPacket", false),
    (".netsim.packet.PacketRequest", "packet", 3, Type::Bytes, "", false),
    (".netsim.packet.PacketResponse", "error", 1, Type::String, "", false),
    (".netsim.packet.PacketResponse", "hci_packet", 2, Type::Message, ".netsim.packet.HCIPacket", false),
    (".netsim.packet.PacketResponse", "packet", 3, Type::Bytes, "", false),
    (".netsim.packet.HCIPacket", "packet_type", 1, Type::Enum, ".netsim.packet.HCIPacket.PacketType", false),
    (".netsim.packet.HCIPacket", "packet", 2, Type::Bytes, "", false),
    (".netsim.startup.ChipInfo", "name", 1, Type::String, "", false),
    (".netsim.startup.ChipInfo", "chip", 2, Type::Message, ".netsim.startup.Chip", false),
    (".netsim.startup.ChipInfo", "device_info", 3, Type::Message, ".netsim.startup.DeviceInfo", false),
    (".netsim.startup.ChipInfo", "is_host_reconnect", 4, Type::Bool, "", false),
    (".netsim.startup.Chip", "kind", 1, Type::Enum, ".netsim.common.ChipKind", false),
    (".netsim.startup.Chip", "id", 2, Type::String, "", false),
    (".netsim.startup.Chip", "manufacturer", 3, Type::String, "", false),
    (".netsim.startup.Chip", "product_name", 4, Type::String, "", false),
    (".netsim.startup.Chip", "fd_in", 5, Type::Int32, "", false),
    (".netsim.startup.Chip", "fd_out", 6, Type::Int32, "", false),
    (".netsim.startup.Chip", "loopback", 7, Type::Bool, "", false),
    // Upstream: message types; same LEN wire type as bytes.
    (".netsim.startup.Chip", "bt_properties", 8, Type::Bytes, "", false),
    (".netsim.startup.Chip", "address", 9, Type::String, "", false),
    (".netsim.startup.Chip", "offset", 10, Type::Bytes, "", false),
    (".netsim.startup.DeviceInfo", "name", 1, Type::String, "", false),
    (".netsim.startup.DeviceInfo", "kind", 2, Type::String, "", false),
    (".netsim.startup.DeviceInfo", "version", 3, Type::String, "", false),
    (".netsim.startup.DeviceInfo", "sdk_version", 4, Type::String, "", false),
    (".netsim.startup.DeviceInfo", "build_id", 5, Type::String, "", false),
    (".netsim.startup.DeviceInfo", "variant", 6, Type::String, "", false),
    (".netsim.startup.DeviceInfo", "arch", 7, Type::String, "", false),
    (".netsim.startup.DeviceInfo", "avd_path", 8, Type::String, "", false),
    (".android.emulation.control.AudioFormat", "samplingRate", 1, Type::Uint64, "", false),
    (".android.emulation.control.AudioFormat", "channels", 2, Type::Enum, ".android.emulation.control.AudioFormat.Channels", false),
    (".android.emulation.control.AudioFormat", "format", 3, Type::Enum, ".android.emulation.control.AudioFormat.SampleFormat", false),
    (".android.emulation.control.AudioFormat", "mode", 4, Type::Enum, ".android.emulation.control.AudioFormat.DeliveryMode", false),
    (".android.emulation.control.AudioPacket", "format", 1, Type::Message, ".android.emulation.control.AudioFormat", false),
    (".android.emulation.control.AudioPacket", "timestamp", 2, Type::Uint64, "", false),
    (".android.emulation.control.AudioPacket", "audio", 3, Type::Bytes, "", false),
    (".android.emulation.control.ClipData", "text", 1, Type::String, "", false),
];

#[test]
fn emulator_and_netsim_fields_match_reference() {
    let messages = all_messages();
    for &(message, field, number, ty, type_name, repeated) in REFERENCE_FIELDS {
        let m = messages
            .get(message)
            .unwrap_or_else(|| panic!("missing message {message}"));
        let f = m
            .field
            .iter()
            .find(|f| f.name() == field)
            .unwrap_or_else(|| panic!("missing field {message}.{field}"));
        assert_eq!(f.number(), number, "{message}.{field} number");
        assert_eq!(f.r#type(), ty, "{message}.{field} type");
        assert_eq!(f.type_name(), type_name, "{message}.{field} type name");
        assert_eq!(
            f.label() == Label::Repeated,
            repeated,
            "{message}.{field} repeated"
        );
    }
    // Nothing declared beyond the table in the emulator and netsim messages
    // that the table covers (so a typo'd extra field cannot slip in).
    let covered: BTreeSet<&str> = REFERENCE_FIELDS.iter().map(|r| r.0).collect();
    for message in covered {
        let declared = messages[message].field.len();
        let listed = REFERENCE_FIELDS.iter().filter(|r| r.0 == message).count();
        assert_eq!(declared, listed, "{message} declares unlisted fields");
    }
    // ParameterValue.data is packed, as upstream.
    let data = &messages[".android.emulation.control.ParameterValue"].field[0];
    assert_eq!(data.options.as_ref().and_then(|o| o.packed), Some(true));
}

#[rustfmt::skip]
const REFERENCE_ENUMS: &[(&str, &[(&str, i32)])] = &[
    (".android.emulation.control.SensorValue.State", &[("OK", 0), ("NO_SERVICE", -3), ("DISABLED", -2), ("UNKNOWN", -1)]),
    (".android.emulation.control.PhysicalModelValue.State", &[("OK", 0), ("NO_SERVICE", -3), ("DISABLED", -2), ("UNKNOWN", -1)]),
    (".android.emulation.control.SensorValue.SensorType", &[("ACCELERATION", 0), ("GYROSCOPE", 1), ("MAGNETIC_FIELD", 2), ("ORIENTATION", 3), ("TEMPERATURE", 4), ("PROXIMITY", 5), ("LIGHT", 6), ("PRESSURE", 7), ("HUMIDITY", 8), ("MAGNETIC_FIELD_UNCALIBRATED", 9), ("GYROSCOPE_UNCALIBRATED", 10), ("HEART_RATE", 14), ("RGBC_LIGHT", 15), ("ACCELERATION_UNCALIBRATED", 17)]),
    (".android.emulation.control.PhysicalModelValue.PhysicalType", &[("POSITION", 0), ("ROTATION", 1), ("MAGNETIC_FIELD", 2), ("TEMPERATURE", 3), ("PROXIMITY", 4), ("LIGHT", 5), ("PRESSURE", 6), ("HUMIDITY", 7), ("VELOCITY", 8), ("AMBIENT_MOTION", 9), ("HINGE_ANGLE0", 10), ("HINGE_ANGLE1", 11), ("HINGE_ANGLE2", 12), ("ROLLABLE0", 13), ("ROLLABLE1", 14), ("ROLLABLE2", 15), ("POSTURE", 16), ("HEART_RATE", 17), ("RGBC_LIGHT", 18), ("WRIST_TILT", 19)]),
    (".android.emulation.control.Touch.EventExpiration", &[("EVENT_EXPIRATION_UNSPECIFIED", 0), ("NEVER_EXPIRE", 1)]),
    (".android.emulation.control.KeyboardEvent.KeyCodeType", &[("Usb", 0), ("Evdev", 1), ("XKB", 2), ("Win", 3), ("Mac", 4)]),
    (".android.emulation.control.KeyboardEvent.KeyEventType", &[("keydown", 0), ("keyup", 1), ("keypress", 2)]),
    (".android.emulation.control.BatteryState.BatteryCharger", &[("NONE", 0), ("AC", 1), ("USB", 2), ("WIRELESS", 3)]),
    (".android.emulation.control.BatteryState.BatteryHealth", &[("GOOD", 0), ("FAILED", 1), ("DEAD", 2), ("OVERVOLTAGE", 3), ("OVERHEATED", 4)]),
    (".android.emulation.control.BatteryState.BatteryStatus", &[("UNKNOWN", 0), ("CHARGING", 1), ("DISCHARGING", 2), ("NOT_CHARGING", 3), ("FULL", 4)]),
    (".android.emulation.control.ImageFormat.ImgFormat", &[("PNG", 0), ("RGBA8888", 1), ("RGB888", 2)]),
    (".android.emulation.control.ImageTransport.TransportChannel", &[("TRANSPORT_CHANNEL_UNSPECIFIED", 0), ("MMAP", 1)]),
    (".android.emulation.control.DisplayModeValue", &[("PHONE", 0), ("FOLDABLE", 1), ("TABLET", 2), ("DESKTOP", 3)]),
    (".android.emulation.control.Rotation.SkinRotation", &[("PORTRAIT", 0), ("LANDSCAPE", 1), ("REVERSE_PORTRAIT", 2), ("REVERSE_LANDSCAPE", 3)]),
    (".android.emulation.control.DisplayConfiguration.DisplayFlags", &[("DISPLAYFLAGS_UNSPECIFIED", 0), ("VIRTUAL_DISPLAY_FLAG_PUBLIC", 1), ("VIRTUAL_DISPLAY_FLAG_PRESENTATION", 2), ("VIRTUAL_DISPLAY_FLAG_SECURE", 4), ("VIRTUAL_DISPLAY_FLAG_OWN_CONTENT_ONLY", 8), ("VIRTUAL_DISPLAY_FLAG_AUTO_MIRROR", 16)]),
    (".android.emulation.control.VmConfiguration.VmHypervisorType", &[("UNKNOWN", 0), ("NONE", 1), ("KVM", 2), ("HAXM", 3), ("HVF", 4), ("WHPX", 5), ("AEHD", 6)]),
    (".android.emulation.control.VmRunState.RunState", &[("UNKNOWN", 0), ("RUNNING", 1), ("RESTORE_VM", 2), ("PAUSED", 3), ("SAVE_VM", 4), ("SHUTDOWN", 5), ("TERMINATE", 7), ("RESET", 9), ("INTERNAL_ERROR", 10), ("RESTART", 11), ("START", 12), ("STOP", 13)]),
    (".android.emulation.control.AudioFormat.SampleFormat", &[("AUD_FMT_U8", 0), ("AUD_FMT_S16", 1)]),
    (".android.emulation.control.AudioFormat.Channels", &[("Mono", 0), ("Stereo", 1)]),
    (".android.emulation.control.AudioFormat.DeliveryMode", &[("MODE_UNSPECIFIED", 0), ("MODE_REAL_TIME", 1)]),
    (".netsim.packet.HCIPacket.PacketType", &[("HCI_PACKET_UNSPECIFIED", 0), ("COMMAND", 1), ("ACL", 2), ("SCO", 3), ("EVENT", 4), ("ISO", 5)]),
    (".netsim.common.ChipKind", &[("UNSPECIFIED", 0), ("BLUETOOTH", 1), ("WIFI", 2), ("UWB", 3), ("BLUETOOTH_BEACON", 4), ("NFC", 5), ("CELLULAR", 6)]),
];

#[test]
fn emulator_and_netsim_enums_match_reference() {
    let enums = all_enums();
    for &(name, values) in REFERENCE_ENUMS {
        let e = enums
            .get(name)
            .unwrap_or_else(|| panic!("missing enum {name}"));
        let got: Vec<(&str, i32)> = e.value.iter().map(|v| (v.name(), v.number())).collect();
        let mut got_sorted = got.clone();
        got_sorted.sort_by_key(|v| v.1);
        let mut want = values.to_vec();
        want.sort_by_key(|v| v.1);
        assert_eq!(got_sorted, want, "{name}");
    }
}

#[test]
fn vphone_enums_start_with_unspecified() {
    for (name, e) in all_enums() {
        if !name.starts_with(".vphone.") {
            continue;
        }
        let zero = e
            .value
            .iter()
            .find(|v| v.number() == 0)
            .unwrap_or_else(|| panic!("{name} has no zero value"));
        if name == ".vphone.bridge.v1.AppErrorCode" {
            assert_eq!(zero.name(), "APP_ERROR_CODE_NO_ERROR");
        } else {
            assert!(
                zero.name().ends_with("_UNSPECIFIED"),
                "{name}: zero value is {}",
                zero.name()
            );
        }
    }
}

#[test]
fn bridge_control_envelope_covers_every_control_message() {
    let messages = all_messages();
    let envelope = &messages[".vphone.bridge.v1.ControlMessage"];
    let arms: BTreeMap<&str, (i32, &str)> = envelope
        .field
        .iter()
        .map(|f| (f.name(), (f.number(), f.type_name())))
        .collect();
    let p = ".vphone.bridge.v1";
    let expected = [
        ("hello", 1, "Hello"),
        ("welcome", 2, "Welcome"),
        ("active_sensors", 3, "ActiveSensors"),
        ("video_config", 4, "VideoConfig"),
        ("keyframe_request", 5, "KeyframeRequest"),
        ("ping", 6, "ClockPing"),
        ("pong", 7, "ClockPong"),
        ("stats", 8, "Stats"),
        ("close", 9, "Close"),
        ("radio_state", 10, "RadioState"),
        ("audio_state", 11, "AudioState"),
        ("clipboard", 12, "Clipboard"),
    ];
    for (field, number, ty) in expected {
        let want_type = format!("{p}.{ty}");
        assert_eq!(
            arms.get(field),
            Some(&(number, want_type.as_str())),
            "ControlMessage.{field}"
        );
    }
    assert_eq!(arms.len(), expected.len());
    // Every arm is in the one oneof.
    assert!(envelope.field.iter().all(|f| f.oneof_index == Some(0)));
}
