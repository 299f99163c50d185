//! Compiles every `.proto` under `proto/` with protox (no `protoc` needed),
//! writes the encoded `FileDescriptorSet` to `OUT_DIR`, and generates prost
//! messages plus tonic clients and servers for every service.

use std::collections::HashSet;
use std::path::PathBuf;

use prost::Message as _;
use prost_types::{FileDescriptorProto, FileDescriptorSet};

/// Every proto file, relative to `proto/` (which is the include root, so
/// these are also the descriptor file names).
const PROTOS: &[&str] = &[
    "vphone/bridge/v1/bridge.proto",
    "vphone/operator/v1/operator.proto",
    "android/emulation/control/emulator_controller.proto",
    "netsim/common.proto",
    "netsim/hci_packet.proto",
    "netsim/startup.proto",
    "netsim/packet_streamer.proto",
];

/// Messages with secret fields: no derived `Debug` (see `src/lib.rs`).
const SECRET_BEARING: &[&str] = &[
    ".vphone.bridge.v1.Hello",
    ".vphone.bridge.v1.Welcome",
    ".vphone.operator.v1.EnrollHandsetResponse",
    ".vphone.bridge.v1.Clipboard",
    ".android.emulation.control.ClipData",
];

/// Files whose services get default `UNIMPLEMENTED` method bodies: vphone's
/// "sim" phone implements only part of the emulator's API.
const DEFAULT_STUBS: &[&str] = &["android/emulation/control/emulator_controller.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = manifest_dir.join("proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", proto_dir.join(proto).display());
    }

    let fds = protox::compile(PROTOS, [&proto_dir])?;
    std::fs::write(out_dir.join("file_descriptor_set.bin"), fds.encode_to_vec())?;

    // Well-known types come from prost's extern paths (Empty maps to `()`),
    // so they are not generated here.
    let ours = |f: &FileDescriptorProto| !f.package().starts_with("google.protobuf");
    let stubs: HashSet<&str> = DEFAULT_STUBS.iter().copied().collect();
    let (with_stubs, without_stubs): (Vec<_>, Vec<_>) = fds
        .file
        .into_iter()
        .filter(ours)
        .partition(|f| stubs.contains(f.name()));

    for (files, default_stubs) in [(with_stubs, true), (without_stubs, false)] {
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .build_transport(true)
            .generate_default_stubs(default_stubs)
            .bytes(".")
            // Messages that carry secrets get a hand-written Debug that
            // redacts them (src/lib.rs, `secrets`).
            .skip_debug(SECRET_BEARING)
            .compile_fds(FileDescriptorSet { file: files })?;
    }
    Ok(())
}
