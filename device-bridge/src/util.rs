//! Small helpers: hex, randomness, clocks.

use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::SecureRandom as _;

use crate::BridgeError;

/// Lowercase hex of `bytes`.
pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Decodes hex (either case); `None` on odd length or a non-hex digit.
pub(crate) fn hex_decode(hex: &[u8]) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.chunks(2)
        .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}

/// `N` random bytes from the system CSPRNG.
///
/// # Errors
///
/// [`BridgeError::Identity`] if the OS has no entropy source.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], BridgeError> {
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| BridgeError::Identity("the system random number generator failed".into()))?;
    Ok(out)
}

/// Host wall clock, nanoseconds since the Unix epoch (0 before 1970).
pub(crate) fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Nice value for bulk video threads (rendering, encoding, decoding).
pub const BULK_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority to [`BULK_NICE`] (never
/// raises it), for
/// bulk video work (rendering, encoding, decoding) that shares a machine
/// with latency-sensitive sensor, input and HCI traffic: on a busy machine
/// the scheduler then lets those threads preempt the video at once instead
/// of after a time slice. A frame that ends up late is dropped downstream;
/// a late sensor sample or HCI reply is not recoverable. Lowering a
/// priority needs no privilege; failure (or a non-Linux OS) only leaves
/// the thread as it was, logged at debug.
pub fn bulk_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = Some(rustix::thread::gettid());
        // On Linux the nice value is per thread: PRIO_PROCESS with a thread id
        // changes only that thread. A thread already nicer stays as it is.
        let now = rustix::process::getpriority_process(tid).unwrap_or(0);
        if now < BULK_NICE
            && let Err(e) = rustix::process::setpriority_process(tid, BULK_NICE)
        {
            tracing::debug!(error = %e, "cannot lower the thread's priority");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let data = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex_encode(&data), "0001abff");
        assert_eq!(hex_decode(b"0001ABff").as_deref(), Some(&data[..]));
        assert!(hex_decode(b"abc").is_none());
        assert!(hex_decode(b"zz").is_none());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn bulk_priority_lowers_only_the_calling_thread() {
        let before = rustix::process::getpriority_process(None).expect("own priority");
        let bulk = std::thread::spawn(|| {
            bulk_thread_priority();
            rustix::process::getpriority_process(Some(rustix::thread::gettid()))
                .expect("thread priority")
        })
        .join()
        .expect("thread");
        assert_eq!(bulk, BULK_NICE.max(before));
        assert_eq!(
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("own"),
            before,
            "the caller's other threads keep their priority"
        );
    }
}
