//! The browser mapping of the bridge's messages: what a browser handset
//! and the host say on a WebTransport session.
//!
//! * control: the first bidirectional stream, opened by the page; one JSON
//!   object per line (`\n`-delimited, at most [`MAX_LINE`] bytes), tagged
//!   by `"t"`. Up: [`Up`]; down: [`Down`].
//! * sensors: datagrams, one JSON [`SensorDatagram`] each (latest wins).
//! * video: one unidirectional stream per group of pictures, host -> page:
//!   [`VIDEO_MAGIC`], width and height (u32 BE each), the GOP id (u64 BE),
//!   then per frame a u32 BE length of what follows, a flags byte (bit 0:
//!   keyframe), the capture time (host clock, Unix µs, u64 BE), the frame's
//!   seq (u64 BE) and the H.264 Annex B access unit.
//! * sound (a page whose `hello` said `audio`): datagrams host -> page,
//!   `A`, the frame's seq (u64 BE), its capture time (host clock, Unix µs,
//!   u64 BE), then one Opus packet (48 kHz mono, 20 ms).
//!
//! The page's times are its own clock (`performance.timeOrigin +
//! performance.now()`, in ns); the page estimates host minus page with
//! `ping`/`pong` and reports it in `stats`, exactly as the native companion
//! does with `ClockPing`/`Stats`.

use sensor_proto::bridge::{
    AppErrorCode, AudioAbilities, AudioCodec, Hello, KeyAction, KeyframeRequest, Location,
    PROTOCOL_VERSION, Pointer, Screen, SensorCapability, SensorSample, Stats, Touch, TouchAction,
    VideoCodec, control_message, input_message,
};
use serde::{Deserialize, Serialize};

/// Why a peer's message was refused: the code the session closes with and
/// a reason for the page.
pub type Rejection = (AppErrorCode, String);

/// Longest control line either side accepts.
pub const MAX_LINE: usize = 64 * 1024;
/// The first byte of a sound datagram.
pub const AUDIO_TAG: u8 = b'A';
/// The first bytes of every video stream.
pub const VIDEO_MAGIC: &[u8; 4] = b"VPHV";
/// Bytes of a video stream's header: magic, width, height, GOP id.
pub const VIDEO_STREAM_HEADER: usize = 4 + 4 + 4 + 8;
/// What a page signs to prove it holds its key: this prefix, then the
/// host's challenge nonce.
pub const PROOF_CONTEXT: &[u8] = b"vphone web handset proof v1\n";

/// Page -> host on the control stream.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "t", rename_all = "snake_case", deny_unknown_fields)]
pub enum Up {
    /// The first message: who the page is and what it offers.
    Hello(WebHello),
    /// The signature over [`PROOF_CONTEXT`] + the challenge nonce (WebCrypto
    /// ECDSA P-256 with SHA-256, IEEE P1363 `r || s`, base64).
    Proof {
        /// Base64 signature.
        sig: String,
    },
    /// Clock sync; the host answers with `pong`.
    Ping {
        /// Echoed.
        id: u64,
        /// The page's send time, ns.
        c: u64,
    },
    /// The page's decoder needs a keyframe.
    Keyframe {},
    /// The page's counters and its clock offset (host minus page, ns).
    Stats {
        /// Host clock minus page clock, ns.
        offset_ns: i64,
        /// Frames decoded so far.
        #[serde(default)]
        decoded: u64,
        /// The page's glass-to-glass estimate of the last frame, µs.
        #[serde(default)]
        g2g_us: u32,
    },
    /// A touch in phone pixels.
    Touch {
        /// `down`, `move`, `up` or `cancel`.
        action: String,
        /// The pointer the action is about.
        id: u32,
        /// Every pointer down after the action.
        pointers: Vec<WebPointer>,
        /// Page time, ns.
        #[serde(default)]
        ts: u64,
    },
    /// A key event (Android key code).
    Key {
        /// Android key code.
        code: i32,
        /// `down`, `up` or `press`.
        action: String,
        /// Text the key types, if any.
        #[serde(default)]
        text: Option<String>,
        /// Page time, ns.
        #[serde(default)]
        ts: u64,
    },
    /// A location fix (Geolocation API).
    Location {
        /// Degrees.
        lat: f64,
        /// Degrees.
        lon: f64,
        /// Metres, if known.
        #[serde(default)]
        alt: Option<f64>,
        /// Metres, if known.
        #[serde(default)]
        accuracy: Option<f64>,
        /// m/s, if known.
        #[serde(default)]
        speed: Option<f64>,
        /// Degrees, if known.
        #[serde(default)]
        bearing: Option<f64>,
        /// Page time, ns.
        #[serde(default)]
        ts: u64,
    },
}

/// The page's `hello`. Its `Debug` hides the enrollment token.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebHello {
    /// The name the page gives itself (the registry's name wins).
    pub name: String,
    /// The page's public key, SubjectPublicKeyInfo DER, base64.
    pub spki: String,
    /// The single-use enrollment token from the link, on the first visit.
    #[serde(default)]
    pub token: Option<String>,
    /// The phone to drive; empty = the handset's only or first phone.
    #[serde(default)]
    pub phone: String,
    /// Sensors the browser has, by short name (`accelerometer`, ...).
    #[serde(default)]
    pub sensors: Vec<String>,
    /// The page's viewport, CSS pixels × devicePixelRatio.
    #[serde(default)]
    pub width: u32,
    /// See `width`.
    #[serde(default)]
    pub height: u32,
    /// The browser's user agent, for the audit.
    #[serde(default)]
    pub client: String,
    /// The page plays the phone's sound (Opus through WebCodecs).
    #[serde(default)]
    pub audio: bool,
}

impl std::fmt::Debug for WebHello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebHello")
            .field("name", &self.name)
            .field("spki", &self.spki)
            .field(
                "token",
                &if self.token.is_some() {
                    "<redacted>"
                } else {
                    "<none>"
                },
            )
            .field("phone", &self.phone)
            .field("sensors", &self.sensors)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("client", &self.client)
            .field("audio", &self.audio)
            .finish()
    }
}

/// One pointer of a touch.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebPointer {
    /// Pointer id.
    pub id: u32,
    /// Phone pixels.
    pub x: f32,
    /// Phone pixels.
    pub y: f32,
    /// 0..1; 0 = unknown.
    #[serde(default)]
    pub p: f32,
}

/// Host -> page on the control stream.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Down {
    /// Sign this (base64) to prove the key.
    Challenge {
        /// Base64 nonce.
        nonce: String,
    },
    /// Admitted.
    Welcome {
        /// Session id.
        session: String,
        /// The phone driven.
        phone: String,
        /// The phone's screen, pixels.
        width: u32,
        /// The phone's screen, pixels.
        height: u32,
        /// The handset's name in the host's registry.
        handset: String,
        /// The host's version.
        host_version: String,
    },
    /// Not admitted, or the session ended: why. `code` is the
    /// `AppErrorCode` name without its prefix (`REVOKED`, `PHONE_BUSY`, ...).
    Closed {
        /// Machine-readable cause.
        code: String,
        /// Human-readable cause.
        message: String,
    },
    /// The sensors the phone listens to (send only these).
    Active {
        /// Sensors and their rates.
        sensors: Vec<WebActiveSensor>,
        /// Whether the phone wants location.
        location: bool,
    },
    /// The video the host sends.
    Video {
        /// WebCodecs codec string.
        codec: String,
        /// Pixels.
        width: u32,
        /// Pixels.
        height: u32,
        /// Frame-rate cap.
        max_fps: u32,
    },
    /// Answer to `ping`.
    Pong {
        /// Echoed.
        id: u64,
        /// Echoed page send time, ns.
        c: u64,
        /// Host receive time, Unix ns.
        r: u64,
        /// Host send time, Unix ns.
        s: u64,
    },
}

/// One sensor the phone listens to.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct WebActiveSensor {
    /// Short name.
    pub kind: String,
    /// Samples per second wanted.
    pub rate_hz: f32,
}

/// One sensor datagram from the page.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SensorDatagram {
    /// The samples.
    pub s: Vec<WebSample>,
}

/// One sensor sample from the page.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebSample {
    /// Short name (`accelerometer`, ...).
    pub k: String,
    /// Per-sensor sequence number from 1 (latest wins).
    pub n: u64,
    /// Page time, ns.
    pub ts: u64,
    /// Values in the native companion's units.
    pub v: Vec<f32>,
}

/// The short name of a sensor kind (`SENSOR_KIND_ACCELEROMETER` ->
/// `accelerometer`).
#[must_use]
pub fn sensor_name(kind: sensor_proto::bridge::SensorKind) -> String {
    kind.as_str_name()
        .trim_start_matches("SENSOR_KIND_")
        .to_ascii_lowercase()
}

/// The sensor kind of a short name, if it is one.
#[must_use]
pub fn sensor_kind(name: &str) -> Option<sensor_proto::bridge::SensorKind> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return None;
    }
    sensor_proto::bridge::SensorKind::from_str_name(&format!(
        "SENSOR_KIND_{}",
        name.to_ascii_uppercase()
    ))
    .filter(|k| *k != sensor_proto::bridge::SensorKind::Unspecified)
}

/// The name of an error code without its prefix (`APP_ERROR_CODE_REVOKED`
/// -> `REVOKED`).
#[must_use]
pub fn code_name(code: AppErrorCode) -> String {
    code.as_str_name()
        .trim_start_matches("APP_ERROR_CODE_")
        .to_owned()
}

/// One control line from the page.
///
/// # Errors
/// `MALFORMED_MESSAGE` for anything that is not one of [`Up`].
pub fn decode_line(line: &[u8]) -> Result<Up, Rejection> {
    serde_json::from_slice(line)
        .map_err(|e| (AppErrorCode::MalformedMessage, format!("control: {e}")))
}

/// What a control message means once the session is admitted.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Answer with a `pong` (clock sync).
    Ping {
        /// Echoed.
        id: u64,
        /// The page's send time, ns.
        c: u64,
    },
    /// For the host app's control queue (keyframe request, stats).
    Control(control_message::Msg),
    /// For the host app's input queue.
    Input(input_message::Event),
}

/// The meaning of `up` after admission.
///
/// # Errors
/// `PROTOCOL_VIOLATION` for a second `hello` or `proof`; `MALFORMED_MESSAGE`
/// for an unknown touch or key action or more than 10 pointers.
pub fn after_admission(up: Up) -> Result<Action, Rejection> {
    let bad = |why: String| Err((AppErrorCode::MalformedMessage, why));
    let event = match up {
        Up::Hello(_) | Up::Proof { .. } => {
            return Err((
                AppErrorCode::ProtocolViolation,
                "hello and proof come once, first".into(),
            ));
        }
        Up::Ping { id, c } => return Ok(Action::Ping { id, c }),
        Up::Keyframe {} => {
            return Ok(Action::Control(control_message::Msg::KeyframeRequest(
                KeyframeRequest::default(),
            )));
        }
        Up::Stats {
            offset_ns,
            decoded,
            g2g_us,
        } => {
            return Ok(Action::Control(control_message::Msg::Stats(Stats {
                clock_offset_ns: offset_ns,
                frames_decoded: decoded,
                glass_to_glass_us: g2g_us,
                ..Stats::default()
            })));
        }
        Up::Touch {
            action,
            id,
            pointers,
            ts,
        } => {
            let action = match action.as_str() {
                "down" => TouchAction::Down,
                "move" => TouchAction::Move,
                "up" => TouchAction::Up,
                "cancel" => TouchAction::Cancel,
                _ => {
                    return bad(format!(
                        "touch.action '{action}' is not down, move, up or cancel"
                    ));
                }
            };
            if pointers.len() > 10 {
                return bad("a touch has at most 10 pointers".into());
            }
            input_message::Event::Touch(Touch {
                action: action as i32,
                action_pointer_id: id,
                pointers: pointers
                    .iter()
                    .map(|p| Pointer {
                        id: p.id,
                        x: p.x,
                        y: p.y,
                        pressure: p.p,
                        major_px: 0.0,
                        minor_px: 0.0,
                    })
                    .collect(),
                timestamp_ns: ts,
            })
        }
        Up::Key {
            code,
            action,
            text,
            ts,
        } => {
            let action = match action.as_str() {
                "down" => KeyAction::Down,
                "up" => KeyAction::Up,
                "press" => KeyAction::Press,
                _ => return bad(format!("key.action '{action}' is not down, up or press")),
            };
            input_message::Event::Key(sensor_proto::bridge::Key {
                keycode: code,
                action: action as i32,
                text,
                meta_state: 0,
                timestamp_ns: ts,
            })
        }
        Up::Location {
            lat,
            lon,
            alt,
            accuracy,
            speed,
            bearing,
            ts,
        } => input_message::Event::Location(Location {
            latitude_deg: lat,
            longitude_deg: lon,
            altitude_m: alt,
            speed_mps: speed,
            bearing_deg: bearing,
            accuracy_m: accuracy,
            satellites: 0,
            timestamp_ns: ts,
        }),
    };
    Ok(Action::Input(event))
}

/// The samples of one sensor datagram (before the latest-wins filter).
///
/// # Errors
/// `MALFORMED_MESSAGE` for anything that is not a [`SensorDatagram`] or a
/// sample with more than 16 values or a non-finite one; `UNKNOWN_SENSOR`
/// for a name that is no sensor.
pub fn decode_sensors(payload: &[u8]) -> Result<Vec<SensorSample>, Rejection> {
    let parsed: SensorDatagram = serde_json::from_slice(payload).map_err(|e| {
        (
            AppErrorCode::MalformedMessage,
            format!("sensor datagram: {e}"),
        )
    })?;
    parsed
        .s
        .into_iter()
        .map(|s| {
            let kind = sensor_kind(&s.k).ok_or_else(|| {
                (
                    AppErrorCode::UnknownSensor,
                    format!("sensor '{}' is not a sensor this host knows", s.k),
                )
            })?;
            if s.v.len() > 16 || s.v.iter().any(|v| !v.is_finite()) {
                return Err((
                    AppErrorCode::MalformedMessage,
                    format!("sensor '{}': at most 16 finite values", s.k),
                ));
            }
            Ok(SensorSample {
                kind: kind as i32,
                seq: s.n,
                timestamp_ns: s.ts,
                values: s.v,
            })
        })
        .collect()
}

/// The bridge's `Hello` for a page's `hello` (what the authorizer and the
/// host app see).
///
/// # Errors
/// `UNKNOWN_SENSOR` for a sensor name that is no sensor.
pub fn to_hello(h: &WebHello) -> Result<Hello, Rejection> {
    let mut capabilities: Vec<SensorCapability> = Vec::new();
    for name in &h.sensors {
        let kind = sensor_kind(name).ok_or_else(|| {
            (
                AppErrorCode::UnknownSensor,
                format!("hello.sensors: '{name}' is not a sensor this host knows"),
            )
        })?;
        if capabilities.iter().any(|c| c.kind == kind as i32) {
            continue;
        }
        capabilities.push(SensorCapability {
            kind: kind as i32,
            max_rate_hz: 100.0,
            name: format!("browser {name}"),
        });
    }
    let client: String = h.client.chars().take(200).collect();
    Ok(Hello {
        protocol_version: PROTOCOL_VERSION,
        handset_name: h.name.clone(),
        capabilities,
        screen: Some(Screen {
            width_px: h.width,
            height_px: h.height,
            density_dpi: 0,
            refresh_rate_hz: 0.0,
        }),
        radio_available: false,
        enrollment_token: h.token.clone(),
        resume_token: None,
        phone_name: h.phone.clone(),
        hci_rx_acked: None,
        video_codecs: vec![VideoCodec::H264 as i32],
        client_version: format!("browser: {client}"),
        audio: h.audio.then(|| AudioAbilities {
            playback: true,
            microphone: false,
            codecs: vec![AudioCodec::Opus as i32],
        }),
        clipboard: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_proto::bridge::SensorKind;

    #[test]
    fn sensor_names_round_trip() {
        for k in [
            SensorKind::Accelerometer,
            SensorKind::Gyroscope,
            SensorKind::Magnetometer,
            SensorKind::Orientation,
        ] {
            assert_eq!(sensor_kind(&sensor_name(k)), Some(k));
        }
        assert_eq!(sensor_kind("unspecified"), None);
        assert_eq!(sensor_kind("ACCELEROMETER"), None);
        assert_eq!(sensor_kind(""), None);
    }

    #[test]
    fn up_messages_parse_and_unknown_fields_are_refused() {
        let up: Up = serde_json::from_str(
            r#"{"t":"touch","action":"down","id":0,"pointers":[{"id":0,"x":1.5,"y":2}]}"#,
        )
        .expect("touch");
        assert!(matches!(up, Up::Touch { ref action, .. } if action == "down"));
        assert!(serde_json::from_str::<Up>(r#"{"t":"keyframe","x":1}"#).is_err());
        assert!(serde_json::from_str::<Up>(r#"{"t":"nope"}"#).is_err());
    }

    #[test]
    fn input_and_sensors_map_to_the_bridge_messages_or_say_why_not() {
        let touch = decode_line(
            br#"{"t":"touch","action":"up","id":3,"pointers":[{"id":3,"x":10,"y":20,"p":0}],"ts":5}"#,
        )
        .and_then(after_admission)
        .expect("touch");
        let Action::Input(input_message::Event::Touch(t)) = touch else {
            panic!("{touch:?}");
        };
        assert_eq!((t.action, t.action_pointer_id), (TouchAction::Up as i32, 3));
        let e = decode_line(br#"{"t":"touch","action":"slide","id":0,"pointers":[]}"#)
            .and_then(after_admission)
            .expect_err("bad action");
        assert_eq!(e.0, AppErrorCode::MalformedMessage);
        let again = decode_line(br#"{"t":"proof","sig":""}"#)
            .and_then(after_admission)
            .expect_err("proof twice");
        assert_eq!(again.0, AppErrorCode::ProtocolViolation);
        let s = decode_sensors(br#"{"s":[{"k":"gyroscope","n":1,"ts":2,"v":[0.1,0.2,0.3]}]}"#)
            .expect("sensors");
        assert_eq!(s[0].kind, SensorKind::Gyroscope as i32);
        for (bad, code) in [
            (
                &br#"{"s":[{"k":"warp","n":1,"ts":2,"v":[]}]}"#[..],
                AppErrorCode::UnknownSensor,
            ),
            (
                &br#"{"s":[{"k":"gyroscope","n":1,"ts":2,"v":[1e999]}]}"#[..],
                AppErrorCode::MalformedMessage,
            ),
            (&b"\xff\x00"[..], AppErrorCode::MalformedMessage),
        ] {
            assert_eq!(decode_sensors(bad).expect_err("refused").0, code);
        }
    }

    #[test]
    fn the_enrollment_token_never_shows_in_debug() {
        let up: Up =
            serde_json::from_str(r#"{"t":"hello","name":"n","spki":"AA","token":"vpe1.SECRET"}"#)
                .expect("hello");
        let shown = format!("{up:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
