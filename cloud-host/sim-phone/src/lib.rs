//! The built-in "sim" phone: a stand-in for a real Android guest where
//! Android cannot run.
//!
//! The sim phone draws its own screen (the "Sensor Lab" app) from a
//! [`SceneState`] with a deterministic software [`Renderer`]: the same scene
//! always produces bit-identical pixels, so tests can compare frames exactly
//! and locate on-screen elements with the geometry helpers
//! ([`bubble_center`], [`level_center_and_radius`], [`ripple_dot_radius`]) and
//! the reserved colours ([`RIPPLE_RGB`], [`BUBBLE_RGB`]).

mod backend;
pub mod geometry;
pub mod phone;
pub mod render;
pub mod scene;

pub use backend::{SimBackend, SimKind};

pub use phone::{Frame, MicHeard, SimPhone, SimPhoneConfig, SimService, SimStats, sound};

pub use render::{
    BUBBLE_RGB, BluetoothView, DEFAULT_HEIGHT, DEFAULT_WIDTH, Gps, LISTENED_SENSORS, MAX_DIMENSION,
    MIN_HEIGHT, MIN_WIDTH, RIPPLE_LIFETIME_MS, RIPPLE_RGB, Renderer, Ripple, SceneState,
    SensorName, StatusClock, bubble_center, bubble_radius, encode_png, level_center_and_radius,
    listened_sensors, ripple_dot_radius,
};
