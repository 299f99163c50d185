//! The host's counters, shared by the session router, the Bluetooth links
//! and the operator API that exports them on `/metrics`.

use std::sync::atomic::AtomicU64;

/// Counters exported on `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Sessions ever attached.
    pub sessions_total: AtomicU64,
    /// Bytes received from handsets.
    pub bytes_up: AtomicU64,
    /// Bytes sent to handsets.
    pub bytes_down: AtomicU64,
    /// Video frames sent.
    pub frames_sent: AtomicU64,
    /// Sensor samples applied to phones.
    pub sensor_samples: AtomicU64,
    /// Sensor samples dropped (stale, flooded, invalid).
    pub sensor_dropped: AtomicU64,
    /// HCI packets relayed (both directions).
    pub hci_packets: AtomicU64,
    /// Operator calls refused for a missing or wrong token.
    pub auth_failures: AtomicU64,
}
