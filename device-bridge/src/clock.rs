//! The wall clock as vphone's messages carry it: time since the Unix epoch,
//! 0 for a clock set before 1970, saturating far in the future. One place,
//! used by both ends.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, nanoseconds since the Unix epoch.
pub fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Now, microseconds since the Unix epoch.
pub fn unix_us() -> i64 {
    unix_ns() / 1_000
}

/// Now, milliseconds since the Unix epoch.
pub fn unix_ms() -> i64 {
    unix_ns() / 1_000_000
}

/// One clock-sync exchange, NTP style: the client sent at `client_send_ns`,
/// the server received at `server_recv_ns` and answered at
/// `server_send_ns`, the client received at `client_recv_ns`. Returns the
/// round trip and the offset (server minus client), in ns. The server's
/// numbers come from the peer: anything they say is computed without
/// overflow, and an impossible exchange (a negative round trip, a result
/// beyond `i64`) gives `None`.
#[must_use]
pub fn ping_estimate(
    client_send_ns: u64,
    server_recv_ns: u64,
    server_send_ns: u64,
    client_recv_ns: i64,
) -> Option<(i64, i64)> {
    let (t0, t1, t2, t3) = (
        i128::from(client_send_ns),
        i128::from(server_recv_ns),
        i128::from(server_send_ns),
        i128::from(client_recv_ns),
    );
    let rtt = (t3 - t0) - (t2 - t1);
    let offset = ((t1 - t0) + (t2 - t3)) / 2;
    if rtt < 0 {
        return None;
    }
    Some((i64::try_from(rtt).ok()?, i64::try_from(offset).ok()?))
}

/// Microseconds from `then_us` (a peer's timestamp, already on this clock)
/// to `now_us`; `None` when `then_us` is 0 (not stamped), after `now_us`, or
/// out of range.
#[must_use]
pub fn elapsed_us(then_us: i128, now_us: i128) -> Option<u64> {
    if then_us <= 0 || then_us > now_us {
        return None;
    }
    u64::try_from(now_us - then_us).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_numbers_never_overflow() {
        // An honest exchange: 0.5 ms each way, the server 4.5 ms ahead.
        let (rtt, off) = ping_estimate(1_000_000, 6_000_000, 6_100_000, 2_100_000).unwrap();
        assert_eq!((rtt, off), (1_000_000, 4_500_000));
        // Hostile or broken numbers: no panic, no wrapped nonsense.
        assert_eq!(ping_estimate(0, u64::MAX, 0, i64::MAX), None);
        assert_eq!(ping_estimate(u64::MAX, 0, u64::MAX, i64::MIN), None);
        assert_eq!(ping_estimate(5, 10, 1_000, 6), None, "negative round trip");
        assert_eq!(elapsed_us(0, 10), None);
        assert_eq!(elapsed_us(11, 10), None);
        assert_eq!(elapsed_us(4, 10), Some(6));
        assert_eq!(elapsed_us(1, i128::MAX), None);
    }

    #[test]
    fn units_agree() {
        let (ms, us, ns) = (unix_ms(), unix_us(), unix_ns());
        assert!(ms > 1_700_000_000_000, "after 2023: {ms}");
        assert!(us / 1_000 >= ms && ns / 1_000 >= us);
    }
}
