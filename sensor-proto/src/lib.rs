//! vphone wire contracts: every `.proto` of the project and its generated
//! Rust code (prost messages, tonic clients and servers).
//!
//! The protos live in `sensor-proto/proto/`, in paths that mirror their
//! packages, and are compiled at build time with `protox` (no `protoc`).
//! Every `bytes` field is generated as [`bytes::Bytes`]. Every service has
//! both a client (`<service>_client::<Service>Client`) and a server
//! (`<service>_server::{<Service>, <Service>Server}`).
//!
//! # The four families
//!
//! 1. [`bridge`] (`vphone.bridge.v1`): what the physical handset and the
//!    cloud host exchange on their single QUIC connection: the control stream
//!    of length-delimited [`bridge::ControlMessage`]s (`Hello`, `Welcome`,
//!    `ActiveSensors`, `VideoConfig`, clock sync, `Stats`, `Close`, ...),
//!    sensor datagrams ([`bridge::Datagram`]), the input stream
//!    ([`bridge::InputMessage`]), per-GOP video streams
//!    ([`bridge::VideoStreamHeader`], [`bridge::VideoFrameHeader`] + NAL
//!    bytes), the HCI passthrough stream ([`bridge::HciMessage`]) and the
//!    QUIC application error codes ([`bridge::AppErrorCode`]). Streams other
//!    than control start with one [`bridge::StreamKind`] byte. Use
//!    [`framing`] to cut streams into messages.
//! 2. [`operator`] (`vphone.operator.v1`): the gRPC service `Operator` that
//!    the host offers to the `vphonectl` CLI (phones, handsets, enrollment,
//!    sessions, host stats, Bluetooth snoop).
//! 3. [`emulator`] (`android.emulation.control`): the subset of the Android
//!    Emulator's `EmulatorController` gRPC service vphone uses, wire
//!    compatible with a real emulator (same package, method names, field
//!    numbers and types). The host's emulator client uses
//!    [`emulator::emulator_controller_client::EmulatorControllerClient`];
//!    the built-in "sim" phone implements
//!    [`emulator::emulator_controller_server::EmulatorController`], whose
//!    methods default to `UNIMPLEMENTED` (streaming methods return
//!    [`tonic::codegen::BoxStream`]).
//! 4. [`netsim`] (`netsim.packet`, `netsim.startup`, `netsim.common`): the
//!    netsim `PacketStreamer` service that the emulator's
//!    `-packet-streamer-endpoint` and bumble's `android-netsim` transport
//!    speak, which the host serves to relay the phone's HCI traffic to the
//!    handset's radio.
//!
//! [`FILE_DESCRIPTOR_SET`] holds the encoded descriptors of all of them
//! (for gRPC reflection and tests).

pub use bytes;
pub use prost;
pub use tonic;

mod error;
mod ext;
pub mod framing;
pub mod layout;
pub mod names;

pub use error::ProtoError;
pub use ext::MAX_ACL_PAYLOAD;

/// The encoded `google.protobuf.FileDescriptorSet` of every proto in this
/// crate (with imports, i.e. `google/protobuf/empty.proto`, and source info).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));

/// `vphone.bridge.v1`: handset <-> host messages on the QUIC connection.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    unused_qualifications
)]
pub mod bridge {
    include!(concat!(env!("OUT_DIR"), "/vphone.bridge.v1.rs"));

    /// The bridge protocol version this crate describes
    /// (`Hello.protocol_version`, `Welcome.protocol_version`).
    pub const PROTOCOL_VERSION: u32 = 1;

    /// The longest `Clipboard.text` either side sends, bytes of UTF-8.
    pub const CLIPBOARD_MAX_BYTES: usize = 16 * 1024;

    impl input_message::Event {
        /// One finger (pointer 0) going `action` at `(x, y)` phone pixels,
        /// with a fingertip's pressure and contact size.
        #[must_use]
        pub fn one_finger(action: TouchAction, x: f32, y: f32, timestamp_ns: u64) -> Self {
            Self::Touch(Touch {
                action: action as i32,
                action_pointer_id: 0,
                pointers: vec![Pointer {
                    id: 0,
                    x,
                    y,
                    pressure: 0.8,
                    major_px: 8.0,
                    minor_px: 8.0,
                }],
                timestamp_ns,
            })
        }

        /// A press (down and up) of an Android keycode.
        #[must_use]
        pub fn key_press(keycode: i32, timestamp_ns: u64) -> Self {
            Self::Key(Key {
                keycode,
                action: KeyAction::Press as i32,
                text: None,
                meta_state: 0,
                timestamp_ns,
            })
        }
    }
}

/// `vphone.operator.v1`: the `Operator` gRPC service for `vphonectl`.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    unused_qualifications
)]
pub mod operator {
    include!(concat!(env!("OUT_DIR"), "/vphone.operator.v1.rs"));
}

/// `android.emulation.control`: the Android Emulator's `EmulatorController`
/// (the subset vphone uses).
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    unused_qualifications
)]
pub mod emulator {
    include!(concat!(env!("OUT_DIR"), "/android.emulation.control.rs"));
}

/// netsim: the `PacketStreamer` service and the messages it uses.
pub mod netsim {
    /// `netsim.packet`: `PacketStreamer`, `PacketRequest`/`PacketResponse`,
    /// `HCIPacket` (as [`packet::HciPacket`]).
    #[allow(
        clippy::all,
        clippy::pedantic,
        missing_docs,
        unreachable_pub,
        missing_debug_implementations,
        unused_qualifications
    )]
    pub mod packet {
        include!(concat!(env!("OUT_DIR"), "/netsim.packet.rs"));
    }

    /// `netsim.startup`: `ChipInfo`, `Chip`, `DeviceInfo`.
    #[allow(
        clippy::all,
        clippy::pedantic,
        missing_docs,
        unreachable_pub,
        missing_debug_implementations,
        unused_qualifications
    )]
    pub mod startup {
        include!(concat!(env!("OUT_DIR"), "/netsim.startup.rs"));
    }

    /// `netsim.common`: `ChipKind`.
    #[allow(
        clippy::all,
        clippy::pedantic,
        missing_docs,
        unreachable_pub,
        missing_debug_implementations,
        unused_qualifications
    )]
    pub mod common {
        include!(concat!(env!("OUT_DIR"), "/netsim.common.rs"));
    }
}

/// `Debug` for the messages that carry secrets (`Hello`'s enrollment and
/// resume tokens, `Welcome`'s resume token, the enrollment string): every
/// other field as derived `Debug` shows it, each secret only as whether it
/// is there. No log line at any level can print one.
mod secrets {
    use std::fmt;

    use crate::bridge::{Clipboard, Hello, Welcome};
    use crate::emulator::ClipData;
    use crate::operator::EnrollHandsetResponse;

    /// How a secret shows: `<redacted>` when set, `<none>` when not.
    struct Secret(bool);

    impl fmt::Debug for Secret {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(if self.0 { "<redacted>" } else { "<none>" })
        }
    }

    impl fmt::Debug for Hello {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Hello")
                .field("protocol_version", &self.protocol_version)
                .field("handset_name", &self.handset_name)
                .field("capabilities", &self.capabilities)
                .field("screen", &self.screen)
                .field("radio_available", &self.radio_available)
                .field("enrollment_token", &Secret(self.enrollment_token.is_some()))
                .field("resume_token", &Secret(self.resume_token.is_some()))
                .field("phone_name", &self.phone_name)
                .field("hci_rx_acked", &self.hci_rx_acked)
                .field("video_codecs", &self.video_codecs)
                .field("client_version", &self.client_version)
                .field("audio", &self.audio)
                .field("clipboard", &self.clipboard)
                .finish()
        }
    }

    impl fmt::Debug for Welcome {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Welcome")
                .field("session_id", &self.session_id)
                .field("resume_token", &Secret(!self.resume_token.is_empty()))
                .field("resume_window_ms", &self.resume_window_ms)
                .field("phone_name", &self.phone_name)
                .field("display", &self.display)
                .field("resumed", &self.resumed)
                .field("hci_rx_acked", &self.hci_rx_acked)
                .field("protocol_version", &self.protocol_version)
                .field("host_version", &self.host_version)
                .finish()
        }
    }

    /// Clipboard text is the person's: its length shows, never the text.
    struct Text<'a>(&'a str);

    impl fmt::Debug for Text<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "<{} bytes of text>", self.0.len())
        }
    }

    impl fmt::Debug for Clipboard {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Clipboard")
                .field("text", &Text(&self.text))
                .finish()
        }
    }

    impl fmt::Debug for ClipData {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ClipData")
                .field("text", &Text(&self.text))
                .finish()
        }
    }

    impl fmt::Debug for EnrollHandsetResponse {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("EnrollHandsetResponse")
                .field("enrollment", &Secret(!self.enrollment.is_empty()))
                .field("expires_at_unix_ms", &self.expires_at_unix_ms)
                .field("host_pin", &self.host_pin)
                .field("web_link", &Secret(!self.web_link.is_empty()))
                .finish()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn clipboard_text_never_shows_in_debug() {
            let a = Clipboard {
                text: "SECRET-CLIP".into(),
            };
            let b = ClipData {
                text: "SECRET-CLIP".into(),
            };
            let text = format!("{a:?} {b:#?}");
            assert!(!text.contains("SECRET"), "{text}");
            assert!(text.contains("<11 bytes of text>"), "{text}");
        }

        #[test]
        fn secrets_never_show_in_debug() {
            let hello = Hello {
                handset_name: "alice".into(),
                enrollment_token: Some("vpe1.SECRET-ENROLL".into()),
                resume_token: Some(b"SECRET-RESUME".to_vec().into()),
                ..Hello::default()
            };
            let welcome = Welcome {
                session_id: "s1".into(),
                resume_token: b"SECRET-RESUME".to_vec().into(),
                ..Welcome::default()
            };
            let enroll = EnrollHandsetResponse {
                enrollment: "vphone://h:1?pin=00&token=vpe1.SECRET-ENROLL".into(),
                expires_at_unix_ms: 5,
                host_pin: "00".into(),
                web_link: "https://h:1/#enroll=vpe1.SECRET-ENROLL&pin=00".into(),
            };
            for (text, shown) in [
                (format!("{hello:?} {hello:#?}"), "alice"),
                (format!("{welcome:?}"), "s1"),
                (format!("{enroll:?}"), "host_pin"),
            ] {
                assert!(text.contains(shown), "{text}");
                assert!(text.contains("<redacted>"), "{text}");
                assert!(!text.contains("SECRET"), "{text}");
                // Bytes show as decimal lists in derived Debug: "83, 69, 67".
                assert!(!text.contains("83, 69, 67"), "{text}");
            }
            assert!(format!("{:?}", Hello::default()).contains("enrollment_token: <none>"));
        }
    }
}
