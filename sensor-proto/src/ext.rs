//! Hand-written helpers on generated types: enum <-> wire-number mappings
//! and H4 packet checks that every user of the contracts needs alike.

use bytes::Bytes;

use crate::ProtoError;
use crate::bridge::{AppErrorCode, CloseReason, SensorKind, StreamKind};
use crate::emulator::sensor_value::SensorType;
use crate::netsim::packet::HciPacket as NetsimHciPacket;
use crate::netsim::packet::hci_packet::PacketType;

impl AppErrorCode {
    /// The QUIC application error code (CONNECTION_CLOSE, RESET_STREAM,
    /// STOP_SENDING) for this value.
    #[must_use]
    pub fn code(self) -> u64 {
        // Every value is declared non-negative in bridge.proto.
        u64::try_from(self as i32).unwrap_or(0)
    }

    /// The value for a received QUIC application error code, `None` if the
    /// code is not one of ours.
    #[must_use]
    pub fn from_code(code: u64) -> Option<Self> {
        i32::try_from(code)
            .ok()
            .and_then(|v| Self::try_from(v).ok())
    }
}

impl CloseReason {
    /// The QUIC application error code to close the connection with after
    /// sending a `Close` with this reason.
    #[must_use]
    pub fn app_error_code(self) -> AppErrorCode {
        match self {
            Self::Unspecified | Self::Normal => AppErrorCode::NoError,
            Self::ProtocolError => AppErrorCode::ProtocolViolation,
            Self::Unauthorized => AppErrorCode::Unauthorized,
            Self::Revoked => AppErrorCode::Revoked,
            Self::PhoneBusy => AppErrorCode::PhoneBusy,
            Self::PhoneNotFound => AppErrorCode::PhoneNotFound,
            Self::NotAssigned => AppErrorCode::NotAssigned,
            Self::Kicked => AppErrorCode::Kicked,
            Self::Shutdown => AppErrorCode::Shutdown,
            Self::ResumeExpired => AppErrorCode::ResumeExpired,
            Self::MessageTooLarge => AppErrorCode::MessageTooLarge,
            Self::TokenInvalid => AppErrorCode::TokenInvalid,
            Self::TokenReused => AppErrorCode::TokenReused,
            Self::TokenExpired => AppErrorCode::TokenExpired,
            Self::IdleTimeout => AppErrorCode::IdleTimeout,
            Self::VersionUnsupported => AppErrorCode::VersionUnsupported,
            Self::PhoneStopped => AppErrorCode::PhoneStopped,
            Self::InternalError => AppErrorCode::InternalError,
            Self::Redirect => AppErrorCode::Redirect,
        }
    }
}

impl AppErrorCode {
    /// The `Close.reason` that goes with this error code (several protocol
    /// errors share `PROTOCOL_ERROR`).
    #[must_use]
    pub fn close_reason(self) -> CloseReason {
        match self {
            Self::NoError => CloseReason::Normal,
            Self::ProtocolViolation
            | Self::MalformedMessage
            | Self::BadH4
            | Self::UnknownSensor
            | Self::WrongStreamDirection => CloseReason::ProtocolError,
            Self::MessageTooLarge => CloseReason::MessageTooLarge,
            Self::Unauthorized => CloseReason::Unauthorized,
            Self::Revoked => CloseReason::Revoked,
            Self::TokenInvalid => CloseReason::TokenInvalid,
            Self::TokenReused => CloseReason::TokenReused,
            Self::TokenExpired => CloseReason::TokenExpired,
            Self::PhoneBusy => CloseReason::PhoneBusy,
            Self::PhoneNotFound => CloseReason::PhoneNotFound,
            Self::NotAssigned => CloseReason::NotAssigned,
            Self::Kicked => CloseReason::Kicked,
            Self::Shutdown => CloseReason::Shutdown,
            Self::ResumeExpired => CloseReason::ResumeExpired,
            Self::IdleTimeout => CloseReason::IdleTimeout,
            Self::VersionUnsupported => CloseReason::VersionUnsupported,
            Self::PhoneStopped => CloseReason::PhoneStopped,
            Self::InternalError => CloseReason::InternalError,
            Self::Redirect => CloseReason::Redirect,
        }
    }
}

impl StreamKind {
    /// The byte that starts a stream of this kind.
    #[must_use]
    pub fn to_byte(self) -> u8 {
        u8::try_from(self as i32).unwrap_or(0)
    }

    /// The kind announced by a stream's first byte; `None` for an unknown
    /// byte or `UNSPECIFIED`.
    #[must_use]
    pub fn from_byte(byte: u8) -> Option<Self> {
        match Self::try_from(i32::from(byte)) {
            Ok(Self::Unspecified) | Err(_) => None,
            Ok(kind) => Some(kind),
        }
    }
}

impl SensorKind {
    /// How many floats `SensorSample.values` holds for this kind (`None`
    /// for `UNSPECIFIED`).
    #[must_use]
    pub fn value_count(self) -> Option<usize> {
        match self {
            Self::Unspecified => None,
            Self::Accelerometer | Self::Gyroscope | Self::Magnetometer | Self::Orientation => {
                Some(3)
            }
            Self::Light
            | Self::Proximity
            | Self::Pressure
            | Self::AmbientTemperature
            | Self::RelativeHumidity
            | Self::HeartRate => Some(1),
            Self::AccelerometerUncalibrated
            | Self::GyroscopeUncalibrated
            | Self::MagnetometerUncalibrated => Some(6),
        }
    }

    /// The Android Emulator sensor (`SensorValue.target` for `setSensor`)
    /// that takes this handset sensor's values. The two numberings differ:
    /// never cast one into the other.
    #[must_use]
    pub fn emulator_sensor_type(self) -> Option<SensorType> {
        Some(match self {
            Self::Unspecified => return None,
            Self::Accelerometer => SensorType::Acceleration,
            Self::Gyroscope => SensorType::Gyroscope,
            Self::Magnetometer => SensorType::MagneticField,
            Self::Orientation => SensorType::Orientation,
            Self::Light => SensorType::Light,
            Self::Proximity => SensorType::Proximity,
            Self::Pressure => SensorType::Pressure,
            Self::AmbientTemperature => SensorType::Temperature,
            Self::RelativeHumidity => SensorType::Humidity,
            Self::AccelerometerUncalibrated => SensorType::AccelerationUncalibrated,
            Self::GyroscopeUncalibrated => SensorType::GyroscopeUncalibrated,
            Self::MagnetometerUncalibrated => SensorType::MagneticFieldUncalibrated,
            Self::HeartRate => SensorType::HeartRate,
        })
    }
}

/// The largest ACL payload the bridge carries, bytes: what the HCI layer
/// (`bt-raw`'s default `Limits::max_acl`) accepts, far above any
/// controller's ACL buffer (LE at most 251, BR/EDR 1021). A test in
/// `device-bridge` keeps the two equal.
pub const MAX_ACL_PAYLOAD: usize = 4096;

/// Checks an HCI packet body (without the H4 type byte) against the length
/// in its own header.
fn check_hci_body(packet_type: u8, body: &[u8]) -> Result<(), ProtoError> {
    let (header_len, payload_len) = match packet_type {
        // Command: opcode (2), parameter length (1).
        1 => (3, body.get(2).map(|&l| usize::from(l))),
        // ACL: handle + flags (2), data length (2, little endian), at most
        // what the HCI layer accepts.
        2 => {
            let len = body
                .get(2..4)
                .map(|l| usize::from(u16::from_le_bytes([l[0], l[1]])));
            if len.is_some_and(|l| l > MAX_ACL_PAYLOAD) {
                return Err(ProtoError::BadH4(
                    "ACL payload larger than the HCI layer accepts (4096 bytes)",
                ));
            }
            (4, len)
        }
        // SCO: handle + flags (2), data length (1).
        3 => (3, body.get(2).map(|&l| usize::from(l))),
        // Event: event code (1), parameter length (1).
        4 => (2, body.get(1).map(|&l| usize::from(l))),
        // ISO: handle + flags (2), data length (14 bits, little endian;
        // the top two bits are RFU and set only in a corrupt packet, which
        // the HCI layer, bt-raw, refuses too).
        5 => {
            let raw = body.get(2..4).map(|l| u16::from_le_bytes([l[0], l[1]]));
            if raw.is_some_and(|r| r & 0xc000 != 0) {
                return Err(ProtoError::BadH4("ISO length sets its reserved bits"));
            }
            (4, raw.map(usize::from))
        }
        _ => return Err(ProtoError::BadH4("unknown packet type")),
    };
    match payload_len {
        None => Err(ProtoError::BadH4("shorter than its header")),
        Some(len) if body.len() != header_len + len => Err(ProtoError::BadH4(
            "length field does not match the packet size",
        )),
        Some(_) => Ok(()),
    }
}

/// Checks that `h4` is one whole H4 packet: a known type byte (1 command,
/// 2 ACL, 3 SCO, 4 event, 5 ISO) followed by an HCI packet whose header
/// length matches its size.
///
/// # Errors
///
/// [`ProtoError::BadH4`] otherwise.
pub(crate) fn check_h4(h4: &[u8]) -> Result<(), ProtoError> {
    let (&packet_type, body) = h4.split_first().ok_or(ProtoError::BadH4("empty"))?;
    check_hci_body(packet_type, body)
}

impl crate::bridge::HciPacket {
    /// Checks that `h4` holds one whole, well-formed H4 packet.
    ///
    /// # Errors
    ///
    /// [`ProtoError::BadH4`] (close with `APP_ERROR_CODE_BAD_H4`).
    pub fn check(&self) -> Result<(), ProtoError> {
        check_h4(&self.h4)
    }
}

impl NetsimHciPacket {
    /// Converts an H4 packet (type byte first) into netsim's `HCIPacket`
    /// (type as `packet_type`, body without the type byte).
    ///
    /// # Errors
    ///
    /// [`ProtoError::BadH4`] if `h4` is not one whole, well-formed packet.
    pub fn from_h4(h4: &[u8]) -> Result<Self, ProtoError> {
        check_h4(h4)?;
        Ok(Self {
            packet_type: i32::from(h4[0]),
            packet: Bytes::copy_from_slice(&h4[1..]),
        })
    }

    /// Converts back to an H4 packet (type byte first).
    ///
    /// # Errors
    ///
    /// [`ProtoError::BadH4`] if `packet_type` is not COMMAND, ACL, SCO,
    /// EVENT or ISO, or the body's header length does not match its size.
    pub fn to_h4(&self) -> Result<Vec<u8>, ProtoError> {
        let packet_type = match PacketType::try_from(self.packet_type) {
            Ok(PacketType::HciPacketUnspecified) | Err(_) => {
                return Err(ProtoError::BadH4("unknown packet type"));
            }
            Ok(t) => {
                u8::try_from(t as i32).map_err(|_| ProtoError::BadH4("unknown packet type"))?
            }
        };
        check_hci_body(packet_type, &self.packet)?;
        let mut h4 = Vec::with_capacity(1 + self.packet.len());
        h4.push(packet_type);
        h4.extend_from_slice(&self.packet);
        Ok(h4)
    }
}
