//! Small helpers: hex, randomness, clocks.

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

/// A random secret as lowercase hex: 32 bytes from the system CSPRNG
/// (tokens that authenticate loopback APIs, the operator's admin token).
///
/// # Errors
///
/// [`BridgeError::Identity`] if the OS has no entropy source.
pub fn random_token() -> Result<String, BridgeError> {
    Ok(hex_encode(&random_bytes::<32>()?))
}

/// Host wall clock, nanoseconds since the Unix epoch (0 before 1970).
pub(crate) fn unix_nanos() -> u64 {
    u64::try_from(crate::clock::unix_ns()).unwrap_or(0)
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
}
