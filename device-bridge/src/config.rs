//! Transport tuning shared by both sides.

use std::sync::Arc;
use std::time::Duration;

use quinn::{IdleTimeout, VarInt};

use crate::BridgeError;

/// Sensor datagrams queued for sending, bytes: a few packets' worth.
const DATAGRAM_SEND_BUFFER: usize = 4 * 1024;
/// Datagrams (sensor samples) the host buffers per connection before its
/// router reads them: about a second of six sensors at 200 Hz.
const SERVER_DATAGRAM_BUFFER: usize = 128 * 1024;

/// QUIC transport timing and window settings.
///
/// The defaults notice a dead peer within about 4 s (keep-alive every 1 s,
/// idle timeout 4 s) and allow well over 100 MB/s on a LAN. Tests shorten
/// the timeouts. Construct with [`Default::default`] and adjust fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TransportSettings {
    /// How often to send a keep-alive when nothing else is sent.
    pub keep_alive_interval: Duration,
    /// The connection is considered dead after this long without hearing
    /// from the peer (the smaller of both sides' values applies).
    pub idle_timeout: Duration,
    /// Time allowed for the TLS handshake plus `Hello`/`Welcome`.
    pub handshake_timeout: Duration,
    /// Initial RTT estimate before the first measurement.
    pub initial_rtt: Duration,
    /// Per-stream receive window, bytes.
    pub stream_window: u32,
    /// Connection-wide receive and send window, bytes.
    pub connection_window: u32,
    /// The host's connection-wide receive window until a handset is
    /// admitted, bytes: what a stranger can make the host buffer.
    pub unadmitted_window: u32,
}

impl Default for TransportSettings {
    fn default() -> Self {
        Self {
            keep_alive_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(4),
            handshake_timeout: Duration::from_secs(5),
            initial_rtt: Duration::from_millis(20),
            stream_window: 8 * 1024 * 1024,
            connection_window: 32 * 1024 * 1024,
            unadmitted_window: 64 * 1024,
        }
    }
}

/// Which side a transport config is for (they differ in stream limits).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Side {
    Client,
    Server,
}

impl TransportSettings {
    /// Short timeouts for tests on loopback: keep-alive 100 ms, idle 600 ms.
    #[must_use]
    pub fn for_tests() -> Self {
        Self {
            keep_alive_interval: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(600),
            handshake_timeout: Duration::from_secs(3),
            initial_rtt: Duration::from_millis(5),
            ..Self::default()
        }
    }

    pub(crate) fn quinn(&self, side: Side) -> Result<Arc<quinn::TransportConfig>, BridgeError> {
        let mut t = quinn::TransportConfig::default();
        let idle = IdleTimeout::try_from(self.idle_timeout)
            .map_err(|_| BridgeError::InvalidArgument("idle timeout too large".into()))?;
        t.max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(self.keep_alive_interval))
            .initial_rtt(self.initial_rtt)
            .stream_receive_window(VarInt::from_u32(self.stream_window))
            .receive_window(VarInt::from_u32(self.connection_window))
            .send_window(u64::from(self.connection_window))
            .datagram_receive_buffer_size(Some(1024 * 1024))
            // Datagrams carry sensor samples, where the newest wins. quinn
            // fills each packet with queued datagrams before any stream
            // data, so under loss (a small congestion window) a deep queue
            // of stale samples starved the input and HCI streams for
            // seconds. Keep a few packets' worth; quinn drops the oldest
            // queued datagram to make room for a new one.
            .datagram_send_buffer_size(DATAGRAM_SEND_BUFFER);
        match side {
            // The host accepts: the control + hci bidi streams and the input
            // uni stream, plus a little slack so that a stream of the wrong
            // kind is seen (and answered with a specific error) rather than
            // silently blocked.
            // Until admitted, a connection may make the host buffer only
            // `unadmitted_window` bytes of stream data and a few datagrams;
            // the window opens to `connection_window` on admission.
            Side::Server => {
                t.max_concurrent_bidi_streams(VarInt::from_u32(4))
                    .max_concurrent_uni_streams(VarInt::from_u32(4))
                    .receive_window(VarInt::from_u32(self.unadmitted_window))
                    .datagram_receive_buffer_size(Some(SERVER_DATAGRAM_BUFFER));
            }
            // The handset accepts: video GOP streams (several may overlap
            // while an old one is being reset), nothing bidirectional.
            Side::Client => {
                t.max_concurrent_bidi_streams(VarInt::from_u32(0))
                    .max_concurrent_uni_streams(VarInt::from_u32(32));
            }
        }
        Ok(Arc::new(t))
    }
}
