//! One gRPC client for every phone backend: it speaks the Android Emulator's
//! `EmulatorController` API, which the real emulator and the sim phone both
//! serve, and adds the emulator's `authorization: Bearer <token>` header.

use std::time::Duration;

use sensor_proto::emulator::emulator_controller_client::EmulatorControllerClient;
use sensor_proto::emulator::{
    AudioFormat, AudioPacket, BatteryState, ClipData, EmulatorStatus, GpsState, Image, ImageFormat,
    ImageTransport, InputEvent, KeyboardEvent, ParameterValue, SensorValue, TouchEvent,
    image_format, image_transport, sensor_value,
};
use tokio::sync::mpsc;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status, Streaming};

use crate::HostError;

/// Adds `authorization: Bearer <token>` to every call when a token is set.
#[derive(Clone, Debug)]
pub struct BearerAuth(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A connected EmulatorController client.
#[derive(Clone, Debug)]
pub struct EmulatorClient {
    inner: EmulatorControllerClient<InterceptedService<Channel, BearerAuth>>,
    target: String,
    auth: BearerAuth,
}

/// HTTP/2 flow-control windows: a 720x1280 RGBA screenshot is 3.7 MB, and
/// with the 64 KiB default it would wait for ~57 window updates.
const STREAM_WINDOW: u32 = 8 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;

fn rpc_error(what: &str, target: &str, s: Status) -> HostError {
    HostError::Unavailable {
        what: "phone call",
        why: format!(
            "{what} on {target} failed: {} ({:?})",
            s.message(),
            s.code()
        ),
    }
}

impl EmulatorClient {
    /// Connects to `addr` (`host:port`), with the bearer token if given.
    ///
    /// # Errors
    /// [`HostError::Io`] when nothing answers at `addr`.
    pub async fn connect(addr: &str, token: Option<&str>) -> Result<Self, HostError> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| HostError::Invalid {
                what: "phone address",
                why: format!("{addr:?}: {e}"),
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW);
        let channel = endpoint.connect().await.map_err(|e| {
            HostError::io(
                format!("connecting to phone gRPC at {addr}"),
                std::io::Error::other(e),
            )
        })?;
        let auth = match token {
            Some(t) => {
                let mut v = format!("Bearer {t}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| HostError::Invalid {
                        what: "phone token",
                        why: "not valid header text".to_owned(),
                    })?;
                // Debug output shows "Sensitive", never the token.
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let auth = BearerAuth(auth);
        let inner = EmulatorControllerClient::with_interceptor(channel, auth.clone())
            .max_decoding_message_size(64 * 1024 * 1024);
        Ok(Self {
            inner,
            target: addr.to_owned(),
            auth,
        })
    }

    /// A client on its own HTTP/2 connection to the same phone, so that
    /// small latency-sensitive calls (sensors) never queue behind
    /// screenshot frames on a shared connection.
    ///
    /// # Errors
    /// [`HostError::Io`] when the phone does not answer.
    pub async fn separate_connection(&self) -> Result<Self, HostError> {
        let token = self
            .auth
            .0
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        Self::connect(&self.target, token.as_deref()).await
    }

    /// `getStatus`.
    ///
    /// # Errors
    /// The call's status, with the phone's address.
    pub async fn status(&self) -> Result<EmulatorStatus, HostError> {
        let r = self.inner.clone().get_status(()).await;
        r.map(tonic::Response::into_inner)
            .map_err(|s| rpc_error("getStatus", &self.target, s))
    }

    /// `getScreenshot` in the given format at native size.
    ///
    /// # Errors
    /// The call's status.
    pub async fn screenshot(&self, format: image_format::ImgFormat) -> Result<Image, HostError> {
        let req = ImageFormat {
            format: format as i32,
            ..ImageFormat::default()
        };
        let r = self.inner.clone().get_screenshot(req).await;
        r.map(tonic::Response::into_inner)
            .map_err(|s| rpc_error("getScreenshot", &self.target, s))
    }

    /// `streamScreenshot`: a new image each time the screen changes.
    ///
    /// # Errors
    /// The call's status.
    pub async fn screenshots(
        &self,
        format: image_format::ImgFormat,
    ) -> Result<Streaming<Image>, HostError> {
        self.stream_screenshot(ImageFormat {
            format: format as i32,
            ..ImageFormat::default()
        })
        .await
    }

    /// `streamScreenshot` with the pixels written into a shared memory
    /// region instead of the messages (`ImageTransport` `MMAP`): `region` is
    /// a file the caller created and sized for `width` x `height` pixels
    /// (the box the image is fitted into, aspect kept); each message then
    /// carries the image's format and no pixels. The emulator (and the sim)
    /// map or write the file; a phone that ignores the transport sends the
    /// pixels in the messages as usual.
    ///
    /// # Errors
    /// The call's status (INVALID_ARGUMENT when the phone rejects the region).
    pub async fn screenshots_into(
        &self,
        format: image_format::ImgFormat,
        (width, height): (u32, u32),
        region: &std::path::Path,
    ) -> Result<Streaming<Image>, HostError> {
        let req = ImageFormat {
            format: format as i32,
            width,
            height,
            transport: Some(ImageTransport {
                channel: image_transport::TransportChannel::Mmap as i32,
                handle: format!("file://{}", region.display()),
            }),
            ..ImageFormat::default()
        };
        self.stream_screenshot(req).await
    }

    async fn stream_screenshot(&self, req: ImageFormat) -> Result<Streaming<Image>, HostError> {
        let r = self.inner.clone().stream_screenshot(req).await;
        r.map(tonic::Response::into_inner)
            .map_err(|s| rpc_error("streamScreenshot", &self.target, s))
    }

    /// `setSensor` with raw values (no physical-model smoothing).
    ///
    /// # Errors
    /// The call's status.
    pub async fn set_sensor(
        &self,
        kind: sensor_value::SensorType,
        values: &[f32],
    ) -> Result<(), HostError> {
        let req = SensorValue {
            target: kind as i32,
            status: 0,
            value: Some(ParameterValue {
                data: values.to_vec(),
            }),
        };
        let r = self.inner.clone().set_sensor(req).await;
        r.map(|_| ())
            .map_err(|s| rpc_error("setSensor", &self.target, s))
    }

    /// `getSensor`.
    ///
    /// # Errors
    /// The call's status.
    pub async fn sensor(&self, kind: sensor_value::SensorType) -> Result<Vec<f32>, HostError> {
        let req = SensorValue {
            target: kind as i32,
            ..SensorValue::default()
        };
        let r = self.inner.clone().get_sensor(req).await;
        r.map(|v| v.into_inner().value.map(|p| p.data).unwrap_or_default())
            .map_err(|s| rpc_error("getSensor", &self.target, s))
    }

    /// `setGps`.
    ///
    /// # Errors
    /// The call's status.
    pub async fn set_gps(&self, gps: GpsState) -> Result<(), HostError> {
        let r = self.inner.clone().set_gps(gps).await;
        r.map(|_| ())
            .map_err(|s| rpc_error("setGps", &self.target, s))
    }

    /// `getGps`.
    ///
    /// # Errors
    /// The call's status.
    pub async fn gps(&self) -> Result<GpsState, HostError> {
        let r = self.inner.clone().get_gps(()).await;
        r.map(tonic::Response::into_inner)
            .map_err(|s| rpc_error("getGps", &self.target, s))
    }

    /// `setBattery`.
    ///
    /// # Errors
    /// The call's status.
    pub async fn set_battery(&self, b: BatteryState) -> Result<(), HostError> {
        let r = self.inner.clone().set_battery(b).await;
        r.map(|_| ())
            .map_err(|s| rpc_error("setBattery", &self.target, s))
    }

    /// `getBattery`.
    ///
    /// # Errors
    /// The call's status.
    pub async fn battery(&self) -> Result<BatteryState, HostError> {
        let r = self.inner.clone().get_battery(()).await;
        r.map(tonic::Response::into_inner)
            .map_err(|s| rpc_error("getBattery", &self.target, s))
    }

    /// `sendTouch`.
    ///
    /// # Errors
    /// The call's status.
    pub async fn send_touch(&self, ev: TouchEvent) -> Result<(), HostError> {
        let r = self.inner.clone().send_touch(ev).await;
        r.map(|_| ())
            .map_err(|s| rpc_error("sendTouch", &self.target, s))
    }

    /// `sendKey`.
    ///
    /// # Errors
    /// The call's status.
    pub async fn send_key(&self, ev: KeyboardEvent) -> Result<(), HostError> {
        let r = self.inner.clone().send_key(ev).await;
        r.map(|_| ())
            .map_err(|s| rpc_error("sendKey", &self.target, s))
    }

    /// `streamAudio`: the phone's sound in `format`, a packet every 20-30 ms.
    ///
    /// # Errors
    /// The call's status (INVALID_ARGUMENT for a format the phone refuses).
    pub async fn audio(&self, format: AudioFormat) -> Result<Streaming<AudioPacket>, HostError> {
        let r = self.inner.clone().stream_audio(format).await;
        r.map(tonic::Response::into_inner)
            .map_err(|s| rpc_error("streamAudio", &self.target, s))
    }

    /// Opens `injectAudio`: packets sent on the returned channel feed the
    /// phone's microphone (the first packet's format counts). The call ends
    /// when the sender is dropped; the returned task yields its result:
    /// [`HostError::Conflict`] when another client holds the microphone
    /// (the emulator's FAILED_PRECONDITION).
    pub fn microphone(
        &self,
    ) -> (
        mpsc::Sender<AudioPacket>,
        tokio::task::JoinHandle<Result<(), HostError>>,
    ) {
        let (tx, rx) = mpsc::channel(16);
        let mut inner = self.inner.clone();
        let target = self.target.clone();
        let task = tokio::spawn(async move {
            inner
                .inject_audio(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .map(|_| ())
                .map_err(|s| match s.code() {
                    Code::FailedPrecondition => HostError::Conflict(format!(
                        "the phone's microphone is taken by another client ({})",
                        s.message()
                    )),
                    _ => rpc_error("injectAudio", &target, s),
                })
        });
        (tx, task)
    }

    /// `getClipboard`.
    ///
    /// # Errors
    /// The call's status.
    pub async fn clipboard(&self) -> Result<String, HostError> {
        let r = self.inner.clone().get_clipboard(()).await;
        r.map(|r| r.into_inner().text)
            .map_err(|s| rpc_error("getClipboard", &self.target, s))
    }

    /// `setClipboard` (not echoed back by `streamClipboard`).
    ///
    /// # Errors
    /// The call's status.
    pub async fn set_clipboard(&self, text: String) -> Result<(), HostError> {
        let r = self.inner.clone().set_clipboard(ClipData { text }).await;
        r.map(|_| ())
            .map_err(|s| rpc_error("setClipboard", &self.target, s))
    }

    /// `streamClipboard`: the current text, then every change the phone
    /// makes.
    ///
    /// # Errors
    /// The call's status.
    pub async fn clipboard_changes(&self) -> Result<Streaming<ClipData>, HostError> {
        let r = self.inner.clone().stream_clipboard(()).await;
        r.map(tonic::Response::into_inner)
            .map_err(|s| rpc_error("streamClipboard", &self.target, s))
    }

    /// Opens `streamInputEvent`: events sent on the returned channel reach the
    /// phone in order. The call ends when the sender is dropped; the returned
    /// task yields its result.
    pub fn input_stream(
        &self,
    ) -> (
        mpsc::Sender<InputEvent>,
        tokio::task::JoinHandle<Result<(), HostError>>,
    ) {
        let (tx, rx) = mpsc::channel(256);
        let mut inner = self.inner.clone();
        let target = self.target.clone();
        let task = tokio::spawn(async move {
            inner
                .stream_input_event(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .map(|_| ())
                .map_err(|s| rpc_error("streamInputEvent", &target, s))
        });
        (tx, task)
    }

    /// Polls `getStatus` until the phone reports `booted`, calling `progress`
    /// with the elapsed time after each try.
    ///
    /// # Errors
    /// [`HostError::Invalid`] naming the timeout when it never boots.
    pub async fn wait_booted(
        &self,
        timeout: Duration,
        progress: impl FnMut(Duration),
    ) -> Result<EmulatorStatus, HostError> {
        self.wait_booted_from(tokio::time::Instant::now(), timeout, progress)
            .await
    }

    /// As [`Self::wait_booted`], for a boot that began at `start` (the
    /// timeout and the progress count from there).
    ///
    /// # Errors
    /// As [`Self::wait_booted`].
    pub async fn wait_booted_from(
        &self,
        start: tokio::time::Instant,
        timeout: Duration,
        mut progress: impl FnMut(Duration),
    ) -> Result<EmulatorStatus, HostError> {
        loop {
            let last = match self.inner.clone().get_status(()).await {
                Ok(s) if s.get_ref().booted => return Ok(s.into_inner()),
                Ok(_) => "getStatus says booted=false".to_owned(),
                // Waiting would not change the answer: say so now.
                Err(s) if matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied) => {
                    return Err(HostError::Denied(format!(
                        "the phone's gRPC API at {} refused our token: {} ({:?})",
                        self.target,
                        without_quoted(s.message()),
                        s.code()
                    )));
                }
                Err(s) => format!("getStatus failed: {} ({:?})", s.message(), s.code()),
            };
            let t = start.elapsed();
            if t >= timeout {
                return Err(HostError::Unavailable {
                    what: "phone boot",
                    why: format!(
                        "{} did not finish booting within {}s (last: {last})",
                        self.target,
                        timeout.as_secs()
                    ),
                });
            }
            progress(t);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// `message` with every `` `quoted` `` part elided: the emulator's
/// authentication errors quote the credentials they were sent.
fn without_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, part) in message.split('`').enumerate() {
        out.push_str(if i % 2 == 1 { "`…`" } else { part });
    }
    out
}

/// `hardwareConfig` key under which a phone (the sim phone does) lists the
/// sensors its screen listens to, as `name@hz` pairs separated by commas.
pub const SENSORS_KEY: &str = "vphone.sensors.listening";

/// The sensors a phone's screen listens to, from `getStatus`'s hardware
/// config (under [`SENSORS_KEY`]): `(sensor name, rate in Hz)`. Empty when the phone does not say (a real
/// emulator), in which case the caller chooses a default set.
pub fn listened_sensors(status: &EmulatorStatus) -> Vec<(String, u32)> {
    status
        .hardware_config
        .as_ref()
        .and_then(|h| h.entry.iter().find(|e| e.key == SENSORS_KEY))
        .map(|e| {
            e.value
                .split(',')
                .filter_map(|p| {
                    let (n, hz) = p.split_once('@')?;
                    Some((n.trim().to_owned(), hz.trim().parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}
