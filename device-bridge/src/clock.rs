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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_agree() {
        let (ms, us, ns) = (unix_ms(), unix_us(), unix_ns());
        assert!(ms > 1_700_000_000_000, "after 2023: {ms}");
        assert!(us / 1_000 >= ms && ns / 1_000 >= us);
    }
}
