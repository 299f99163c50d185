//! The registry-backed authorizer, called as the QUIC server calls it: who
//! may enroll under which name, and which name a session then carries.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use device_bridge::{AuthRequest, Authorizer, Fingerprint, TokenKey};
use host_core::access::RegistryAuthorizer;
use host_core::registry::{PhoneGrant, PhoneRecord, Registry, TokenRecord};
use host_core::router::Sessions;
use sensor_proto::bridge::{AppErrorCode, Hello};

struct Fixture {
    registry: Arc<Registry>,
    key: TokenKey,
    auth: RegistryAuthorizer,
}

fn fixture() -> Fixture {
    let registry = Arc::new(Registry::open_in_memory().unwrap());
    registry
        .insert_phone(&PhoneRecord::sim("phone-1", 1))
        .unwrap();
    let key = TokenKey::generate().unwrap();
    let auth =
        RegistryAuthorizer::new(registry.clone(), key.clone(), Arc::new(Sessions::default()));
    Fixture {
        registry,
        key,
        auth,
    }
}

/// A fresh token for phone-1, naming the handset `name` (or not).
fn token(f: &Fixture, name: Option<&str>) -> String {
    let (verified, token) = f.key.mint(Duration::from_secs(60)).unwrap();
    f.registry
        .insert_token(
            &TokenRecord {
                id: verified.id.to_string(),
                name: name.map(str::to_owned),
                grant: PhoneGrant::Only(vec!["phone-1".into()]),
                expires_at_ms: i64::MAX,
                used_at_ms: None,
            },
            1,
        )
        .unwrap();
    token
}

fn hello(name: &str, token: Option<String>) -> Hello {
    Hello {
        handset_name: name.into(),
        enrollment_token: token,
        ..Hello::default()
    }
}

fn request(handset: u8, hello: &Hello) -> AuthRequest<'_> {
    AuthRequest::new(
        Fingerprint::from_bytes([handset; 32]),
        hello,
        SocketAddr::from(([127, 0, 0, 1], 5000)),
    )
}

#[test]
fn a_self_declared_name_that_would_not_print_as_itself_is_refused_and_nothing_is_stored() {
    let f = fixture();
    for bad in [
        "pixel\n2026-12-05 INFO enrolled admin".to_owned(),
        "\u{1b}[2J\u{1b}[31mpwned".to_owned(),
        "x".repeat(64 * 1024 - 100),
        "evil\u{202E}gpj.exe".to_owned(),
    ] {
        let h = hello(&bad, Some(token(&f, None)));
        let refusal = f.auth.authorize(&request(1, &h)).unwrap_err();
        assert_eq!(refusal.code, AppErrorCode::MalformedMessage, "{refusal}");
        assert!(
            refusal.message.contains("handset name") && refusal.message.contains("--name"),
            "{refusal}"
        );
        assert!(
            !refusal.message.contains(&bad),
            "the refusal does not echo the name back: {refusal}"
        );
    }
    assert!(
        f.registry.handsets().unwrap().is_empty(),
        "nothing enrolled"
    );
    // The same token still works with a printable name.
    let h = hello("Anna's phone", Some(token(&f, None)));
    let granted = f.auth.authorize(&request(1, &h)).unwrap();
    assert_eq!(granted.handset_name.as_deref(), Some("Anna's phone"));
}

#[test]
fn the_session_carries_the_registry_name_not_the_declared_one() {
    let f = fixture();
    let h = hello("declared", Some(token(&f, Some("operator-name"))));
    let granted = f.auth.authorize(&request(2, &h)).unwrap();
    assert_eq!(granted.handset_name.as_deref(), Some("operator-name"));
    // Later connections declare anything; the session still shows the
    // registry's name, and a name that is not printable changes nothing.
    let h = hello("\u{1b}[31mimpostor", None);
    let granted = f.auth.authorize(&request(2, &h)).unwrap();
    assert_eq!(granted.handset_name.as_deref(), Some("operator-name"));
}

#[test]
fn a_handset_named_after_anothers_fingerprint_cannot_make_it_unrevokable() {
    let f = fixture();
    let victim = Fingerprint::from_bytes([3; 32]).to_string();
    let h = hello("victim", Some(token(&f, None)));
    f.auth.authorize(&request(3, &h)).unwrap();
    let h = hello(&victim, Some(token(&f, None)));
    f.auth.authorize(&request(4, &h)).unwrap();
    let revoked = f.registry.revoke_handset(&victim, 10).unwrap();
    assert_eq!(revoked.fingerprint, victim);
    assert_eq!(revoked.name, "victim");
    let refusal = f
        .auth
        .authorize(&request(3, &hello("victim", None)))
        .unwrap_err();
    assert_eq!(refusal.code, AppErrorCode::Revoked);
    // The other one is untouched, and revocable by its own fingerprint.
    assert!(f.auth.authorize(&request(4, &hello("", None))).is_ok());
}
