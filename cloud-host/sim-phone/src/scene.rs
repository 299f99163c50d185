//! The sim phone's screen model: what the "Sensor Lab" screen shows
//! ([`SceneState`]), its size limits and the colours reserved for tests.

/// Default sim phone screen width in pixels.
pub const DEFAULT_WIDTH: u32 = 720;
/// Default sim phone screen height in pixels.
pub const DEFAULT_HEIGHT: u32 = 1280;
/// Smallest supported screen width in pixels.
pub const MIN_WIDTH: u32 = 240;
/// Smallest supported screen height in pixels.
pub const MIN_HEIGHT: u32 = 320;
/// Largest supported screen width or height in pixels.
pub const MAX_DIMENSION: u32 = 8192;

/// Colour of touch ripples: the solid centre dot of every visible ripple is
/// drawn in exactly this RGB (opaque, radius [`ripple_dot_radius`](crate::ripple_dot_radius)), centred
/// on the touch point. No other element of the screen uses this colour.
/// The ripple's expanding disc and ring are translucent tints of it, so they
/// never produce this exact value over the (non-ripple) background.
pub const RIPPLE_RGB: [u8; 3] = [255, 0, 255];

/// Colour of the bubble of the bubble level (an opaque filled circle of
/// radius [`bubble_radius`](crate::bubble_radius) centred at [`bubble_center`](crate::bubble_center)). No other element
/// of the screen uses this colour.
pub const BUBBLE_RGB: [u8; 3] = [0, 200, 100];

/// A touch ripple is drawn while its age is below this many milliseconds
/// (see [`Ripple::is_visible`]); its ring grows and fades over this time.
pub const RIPPLE_LIFETIME_MS: u32 = 600;

/// Standard gravity used to map accelerometer readings to the bubble level.
pub(crate) const GRAVITY: f32 = 9.81;

/// What the sim phone's Bluetooth area shows: the host's status of the
/// phone's link, as is.
pub use host_core::status::RadioStatus as BluetoothView;

/// A GPS fix as shown on screen.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Gps {
    /// Latitude in degrees (shown with 6 decimals).
    pub lat: f64,
    /// Longitude in degrees (shown with 6 decimals).
    pub lon: f64,
    /// Altitude in metres above WGS84.
    pub alt: f64,
    /// Ground speed in m/s.
    pub speed: f32,
    /// Bearing in degrees, clockwise from true north.
    pub bearing: f32,
}

/// A touch ripple: a marker where a touch landed.
///
/// Drawn as a solid dot of colour [`RIPPLE_RGB`] centred exactly at
/// `(x, y)`, plus a translucent disc and ring whose radius grows with
/// `age_ms` and which fade out over [`RIPPLE_LIFETIME_MS`]. The caller ages
/// ripples and prunes invisible ones; the renderer skips invisible ones.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Ripple {
    /// Touch x in screen pixels (0 = left edge).
    pub x: f32,
    /// Touch y in screen pixels (0 = top edge).
    pub y: f32,
    /// Milliseconds since the touch landed.
    pub age_ms: u32,
    /// Pointer id of the touch (for the caller's bookkeeping).
    pub id: i32,
}

impl Ripple {
    /// Whether this ripple is still drawn (`age_ms < RIPPLE_LIFETIME_MS`).
    pub fn is_visible(&self) -> bool {
        self.age_ms < RIPPLE_LIFETIME_MS
    }
}

/// What the sim phone's status-bar clock shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StatusClock {
    /// `HH:MM:SS UTC`, the sim's default: a viewer sees the screen live,
    /// and every phone's screen changes once a second.
    #[default]
    Seconds,
    /// `HH:MM UTC`, as Android's status bar shows it: a resting screen stays
    /// still for a minute.
    Minutes,
}

impl StatusClock {
    /// How often the clock turns, µs.
    #[must_use]
    pub fn period_us(self) -> u64 {
        match self {
            Self::Seconds => 1_000_000,
            Self::Minutes => 60_000_000,
        }
    }
}

/// Everything the sim phone's screen shows. Rendering is a pure function of
/// this value and the screen size.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct SceneState {
    /// Wall clock, Unix seconds; the status bar shows it as `HH:MM:SS UTC`
    /// or `HH:MM UTC` (see [`StatusClock`]).
    pub clock_unix_s: i64,
    /// What the status-bar clock shows.
    pub clock_face: StatusClock,
    /// Battery level in percent (values above 100 are shown as 100).
    pub battery_percent: u8,
    /// Whether the battery is charging (a bolt is drawn on the battery).
    pub charging: bool,
    /// Bluetooth state.
    pub bluetooth: BluetoothView,
    /// Accelerometer, m/s², including gravity, Android axes (+x right, +y up
    /// the screen, +z out of the screen). Lying flat reads about `[0, 0, 9.81]`.
    pub accel: [f32; 3],
    /// Gyroscope, rad/s, Android axes.
    pub gyro: [f32; 3],
    /// Magnetometer, µT, Android axes.
    pub mag: [f32; 3],
    /// Orientation in degrees: azimuth, pitch, roll.
    pub orientation: [f32; 3],
    /// Latest GPS fix, if any.
    pub gps: Option<Gps>,
    /// Touch ripples, drawn in order, on top of everything.
    pub touches: Vec<Ripple>,
    /// Last key event, e.g. `"KEYCODE_A (29) down"`.
    pub last_key: Option<String>,
    /// Name of the attached (driving) handset, if any.
    pub session: Option<String>,
    /// What the microphone hears, as the screen shows it (`None`: nothing
    /// has fed it yet).
    pub mic: Option<String>,
    /// The clipboard's text (`None` when empty).
    pub clipboard: Option<String>,
}

impl SceneState {
    /// The ripples that are still visible (see [`Ripple::is_visible`]).
    pub fn visible_ripples(&self) -> impl Iterator<Item = &Ripple> + '_ {
        self.touches.iter().filter(|r| r.is_visible())
    }

    /// Drops ripples that are no longer visible.
    pub fn prune_ripples(&mut self) {
        self.touches.retain(Ripple::is_visible);
    }
}

/// A sensor the Sensor Lab screen listens to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SensorName {
    /// Accelerometer (m/s², including gravity).
    Accelerometer,
    /// Gyroscope (rad/s).
    Gyroscope,
    /// Magnetometer (µT).
    Magnetometer,
    /// Orientation (azimuth, pitch, roll in degrees).
    Orientation,
    /// GPS location.
    Gps,
}

/// The sensors the Sensor Lab screen listens to and their sampling rates in
/// Hz; the host asks the handset to sample only these.
pub const LISTENED_SENSORS: [(SensorName, u32); 5] = [
    (SensorName::Accelerometer, 60),
    (SensorName::Gyroscope, 60),
    (SensorName::Magnetometer, 60),
    (SensorName::Orientation, 60),
    (SensorName::Gps, 1),
];

/// The sensors the Sensor Lab screen listens to, with rates in Hz
/// (same as [`LISTENED_SENSORS`]).
pub fn listened_sensors() -> Vec<(SensorName, u32)> {
    LISTENED_SENSORS.to_vec()
}
