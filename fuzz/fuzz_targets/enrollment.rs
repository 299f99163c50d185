//! The strings a person pastes or a host hands out: enrollment strings
//! (`vphone://HOST:PORT?pin=..&token=..`), enrollment tokens, certificate
//! fingerprints, and the emulator's discovery file. An enrollment string
//! that parses survives being written out again; a token verifies only if
//! its key minted it.
#![no_main]

use std::str::FromStr;
use std::time::SystemTime;

use device_bridge::{Fingerprint, TokenKey};
use libfuzzer_sys::fuzz_target;
use mobile_client::config::Enrollment;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(e) = Enrollment::from_str(text) {
        let again = host_core::enroll::enrollment_string(&e.host, &e.pin.to_string(), &e.token);
        let back = Enrollment::from_str(&again).expect("a written enrollment string parses");
        assert_eq!(back, e);
        let _ = format!("{e:?}");
    }
    let key = TokenKey::from_bytes([7; 32]);
    assert!(
        key.verify(text, SystemTime::now()).is_err(),
        "only a token this key minted verifies"
    );
    if let Ok(fp) = Fingerprint::from_str(text) {
        assert_eq!(Fingerprint::from_str(&fp.to_string()).ok(), Some(fp));
    }
    let _ = host_core::backend::emulator::parse_discovery(text);
});
