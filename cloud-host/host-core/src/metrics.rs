//! The host's counters, shared by the session router, the Bluetooth links
//! and the operator API that exports them on `/metrics`.
//!
//! They are `prometheus-client` counters (an `Arc`'d atomic each), so
//! incrementing one is a relaxed atomic add and the operator API registers
//! clones of them for its exposition without copying values around.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// Counters exported on `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Sessions ever attached.
    pub sessions_attached: Counter,
    /// Bytes received from handsets.
    pub bytes_up: Counter,
    /// Bytes sent to handsets.
    pub bytes_down: Counter,
    /// Video frames sent.
    pub frames_sent: Counter,
    /// Sensor samples applied to phones.
    pub sensor_samples: Counter,
    /// Sensor samples dropped (stale, flooded, invalid).
    pub sensor_dropped: Counter,
    /// HCI packets relayed (both directions).
    pub hci_packets: Counter,
    /// Bluetooth stacks dropped because they stopped reading.
    pub bt_stacks_dropped: Counter,
    /// Operator calls refused for a missing or wrong token.
    pub auth_failures: Counter,
    /// Frames of phones' sound sent to handsets.
    pub audio_frames_down: Counter,
    /// Frames of handsets' microphones fed into phones.
    pub audio_frames_up: Counter,
}

impl Metrics {
    /// Registers every counter in `registry` (which prefixes `vphone_`;
    /// the exposition appends `_total`).
    pub fn register(&self, registry: &mut Registry) {
        for (name, help, c) in [
            (
                "sessions_attached",
                "Sessions attached since start",
                &self.sessions_attached,
            ),
            ("bytes_up", "Bytes received from handsets", &self.bytes_up),
            ("bytes_down", "Bytes sent to handsets", &self.bytes_down),
            ("frames_sent", "Video frames sent", &self.frames_sent),
            (
                "sensor_samples",
                "Sensor samples applied",
                &self.sensor_samples,
            ),
            (
                "sensor_dropped",
                "Sensor samples dropped",
                &self.sensor_dropped,
            ),
            ("hci_packets", "HCI packets relayed", &self.hci_packets),
            (
                "bt_stacks_dropped",
                "Bluetooth stacks dropped because they stopped reading",
                &self.bt_stacks_dropped,
            ),
            (
                "audio_frames_down",
                "Frames of phones' sound sent to handsets",
                &self.audio_frames_down,
            ),
            (
                "audio_frames_up",
                "Frames of handsets' microphones fed into phones",
                &self.audio_frames_up,
            ),
            (
                "operator_auth_failures",
                "Operator calls refused",
                &self.auth_failures,
            ),
        ] {
            registry.register(name, help, c.clone());
        }
    }
}
