//! # cloud-host: vphone's host side
//!
//! * [`sim`]: the built-in software phone's deterministic screen renderer.
//! * [`emu_client`]: the one EmulatorController gRPC client for every backend.
//! * [`registry`]: the SQLite registry of phones, handsets, enrollment tokens
//!   and the session audit, with versioned migrations.
//!
//! The daemon `vphone-host`, the operator CLI `vphonectl`, the phone backends
//! and the operator API are being built on top of these.

pub mod access;
pub mod backend;
pub mod bluetooth;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod emu_client;
pub mod enroll;
mod error;
pub mod keymap;
pub mod metrics;
pub mod operator;
pub mod phones;
mod region;
pub mod registry;
pub mod router;
pub mod sim;
pub mod status;
mod threads;
/// The video pipeline (the `vphone-media` crate, shared with the handset).
pub use vphone_media as video;

pub use error::HostError;

/// Now, in milliseconds since the Unix epoch (0 if the clock is before it):
/// the time base of the registry, the audit and the operator API.
pub(crate) fn unix_ms() -> i64 {
    unix_ns() / 1_000_000
}

/// Now, in nanoseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
