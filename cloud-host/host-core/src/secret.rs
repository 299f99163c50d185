//! How secrets show in `Debug`: never. Types that hold a token write their
//! own `Debug` and show each secret field as [`Redacted`].

use std::fmt;

/// A secret field in `Debug` output: `<redacted>` when it is set, `<none>`
/// when it is not.
#[derive(Clone, Copy, Eq, PartialEq)]
pub struct Redacted(pub bool);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0 { "<redacted>" } else { "<none>" })
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::PhoneEndpoint;
    use crate::enroll::MintedToken;

    #[test]
    fn tokens_never_show_in_debug() {
        let endpoint = PhoneEndpoint {
            grpc_addr: "127.0.0.1:1".into(),
            token: Some("SECRET-PHONE".into()),
        };
        let minted = MintedToken {
            id: "t1".into(),
            expires_at_ms: 1,
            text: "vpe1.SECRET-MINTED".into(),
        };
        let discovery = crate::backend::emulator::Discovery {
            grpc_port: Some(1),
            token: Some("SECRET-DISCOVERY".into()),
        };
        for text in [
            format!("{endpoint:?}"),
            format!("{minted:#?}"),
            format!("{discovery:?}"),
        ] {
            assert!(text.contains("<redacted>"), "{text}");
            assert!(!text.contains("SECRET"), "{text}");
        }
    }
}
