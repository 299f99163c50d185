//! # host-core: the vphone host's core
//!
//! Everything a host does except the sim phone (crate `sim-phone`), the
//! operator API (crate `vphone-operator`) and the binaries: the phone actor
//! and the backend trait with the Android Emulator backend ([`phones`],
//! [`backend`]), the SQLite [`registry`], handset admission ([`access`],
//! [`enroll`]), the session [`router`], the Bluetooth links ([`bluetooth`]),
//! what a phone shows of the host ([`status`]), [`metrics`], [`config`] and
//! [`daemon::Host::start`], which assembles them.

pub mod access;
pub mod backend;
pub mod bluetooth;
pub mod config;
pub mod daemon;
pub mod emu_client;
pub mod enroll;
mod error;
pub mod files;
pub mod keymap;
pub mod lease;
pub mod metrics;
pub mod phones;
pub mod procnet;
mod region;
pub mod registry;
pub mod router;
pub mod secret;
pub mod status;
pub mod threads;
pub mod web;
/// The video pipeline (the `vphone-media` crate, shared with the handset).
pub use vphone_media as video;

pub use error::{ErrorKind, HostError};

/// The wall clock (`unix_ms` is the time base of the registry, the audit
/// and the operator API).
pub use device_bridge::clock::{unix_ms, unix_ns};
