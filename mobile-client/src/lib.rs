//! The vphone handset library: the parts of the companion (`vphone-companion`)
//! that run on the physical handset and do not need the network session.
//!
//! - [`config`]: the companion's config directory, the enrollment string
//!   (`vphone://HOST:PORT?pin=<64 hex>&token=<token>`), the saved
//!   [`config::CompanionConfig`] (`config.toml`, mode 0600) and the
//!   handset identity (`identity/`).
//! - [`sensors`]: sensor sources ([`sensors::synthetic`],
//!   [`sensors::replay`] with the recording format, [`sensors::iio`] for
//!   Linux IIO sysfs) behind [`sensors::SensorSource`], and the
//!   [`sensors::Sampler`] that turns the host's `ActiveSensors` into
//!   numbered `SensorBatch`es (sans-IO, plus the tokio driver
//!   [`sensors::run_sampler`]).
//! - [`keys`]: desktop key names to Android keycodes.
//! - [`session`]: the live session (`Companion`): connect, clock sync,
//!   sensors and input up, H.264 video down with glass-to-glass numbers.
//! - [`video`]: H.264 decoding, `.h264` recording, PNG frames.
//! - [`radio`]: lending the handset's Bluetooth radio to the phone: the
//!   sans-IO relay core (policy, flow control, credit queue) and its async
//!   driver between the session's hci channel and the radio transport.
//! - [`adapters`]: local Bluetooth adapters (sysfs, BlueZ with the `bluez`
//!   feature) and a BLE scan, for `vphone-companion radios`.
//! - `viewer` (feature `viewer`, on by default): the desktop window. Without
//!   the feature the crate builds and runs headless, with no GUI libraries.
//!
//! All errors are [`ClientError`]. Logging uses `tracing`.

pub mod adapters;
pub mod audio;
pub mod config;
mod error;
pub mod keys;
pub mod radio;
pub mod sensors;
pub mod session;
pub mod video;
#[cfg(feature = "viewer")]
pub mod viewer;

pub use error::ClientError;

/// Re-exported wire types used in this crate's API.
pub use sensor_proto::bridge as proto;
