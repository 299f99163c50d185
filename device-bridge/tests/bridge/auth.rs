//! The auth matrix.

use std::time::{Duration, SystemTime};

use device_bridge::proto::AppErrorCode;
use device_bridge::{BridgeError, ClientSession, HandsetIdentity, HostIdentity};

use crate::common::{Host, within};

fn refused_code(result: Result<ClientSession, BridgeError>) -> AppErrorCode {
    match result {
        Err(BridgeError::Refused { code, reason }) => {
            assert!(
                !reason.is_empty(),
                "a refusal carries a reason for the user"
            );
            code
        }
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, got a session"),
    }
}

#[tokio::test]
async fn enrolled_handset_gets_a_session() -> anyhow::Result<()> {
    let host = Host::start()?;
    let identity = HandsetIdentity::generate()?;
    host.auth.enroll(identity.fingerprint(), "alice");
    let client = ClientSession::connect(host.client_config(&identity)).await?;
    let server = within(5, "accept", host.server.accept())
        .await?
        .expect("session");
    assert_eq!(server.handset(), identity.fingerprint());
    assert_eq!(server.id(), client.id());
    assert_eq!(client.welcome().phone_name, "sim");
    assert!(!client.welcome().resumed);
    assert_eq!(server.hello().handset_name, "test handset");
    Ok(())
}

#[tokio::test]
async fn token_enrolls_once_then_the_certificate_suffices() -> anyhow::Result<()> {
    let host = Host::start()?;
    let identity = HandsetIdentity::generate()?;
    let mut config = host.client_config(&identity);
    config.enrollment_token = Some(host.auth.mint_token(Duration::from_secs(60))?);
    let first = ClientSession::connect(config).await?;
    assert!(host.auth.handset(&identity.fingerprint()).is_some());
    drop(first);
    // No token any more: the certificate is enough.
    let second = ClientSession::connect(host.client_config(&identity)).await?;
    assert!(second.is_connected());
    Ok(())
}

#[tokio::test]
async fn unknown_certificate_is_refused_without_a_session() -> anyhow::Result<()> {
    let host = Host::start()?;
    let identity = HandsetIdentity::generate()?;
    let code = refused_code(ClientSession::connect(host.client_config(&identity)).await);
    assert_eq!(code, AppErrorCode::Unauthorized);
    assert_eq!(host.server.session_count(), 0);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), host.server.accept())
            .await
            .is_err(),
        "no session may be created for a refused handset"
    );
    Ok(())
}

#[tokio::test]
async fn revoked_handset_is_refused() -> anyhow::Result<()> {
    let host = Host::start()?;
    let identity = HandsetIdentity::generate()?;
    host.auth.enroll(identity.fingerprint(), "bob");
    assert!(host.auth.revoke(identity.fingerprint()));
    let code = refused_code(ClientSession::connect(host.client_config(&identity)).await);
    assert_eq!(code, AppErrorCode::Revoked);
    assert_eq!(host.server.session_count(), 0);
    Ok(())
}

#[tokio::test]
async fn expired_enrollment_is_refused() -> anyhow::Result<()> {
    let host = Host::start()?;
    let identity = HandsetIdentity::generate()?;
    host.auth.enroll(identity.fingerprint(), "carol");
    host.auth.set_expiry(
        identity.fingerprint(),
        SystemTime::now() - Duration::from_secs(1),
    );
    let code = refused_code(ClientSession::connect(host.client_config(&identity)).await);
    assert_eq!(code, AppErrorCode::Unauthorized);
    Ok(())
}

#[tokio::test]
async fn wrong_host_pin_is_reported_with_both_pins() -> anyhow::Result<()> {
    let host = Host::start()?;
    let identity = HandsetIdentity::generate()?;
    host.auth.enroll(identity.fingerprint(), "dave");
    let mut config = host.client_config(&identity);
    let other = HostIdentity::generate()?.pin();
    config.host_pin = other;
    match ClientSession::connect(config).await {
        Err(BridgeError::PinMismatch { expected, actual }) => {
            assert_eq!(expected, other);
            assert_eq!(actual, host.identity.pin());
        }
        Err(e) => panic!("expected PinMismatch, got {e}"),
        Ok(_) => panic!("connected to a host with the wrong pin"),
    }
    assert_eq!(host.server.session_count(), 0);
    Ok(())
}

#[tokio::test]
async fn reused_token_is_refused() -> anyhow::Result<()> {
    let host = Host::start()?;
    let token = host.auth.mint_token(Duration::from_secs(60))?;
    let first = HandsetIdentity::generate()?;
    let mut config = host.client_config(&first);
    config.enrollment_token = Some(token.clone());
    let _session = ClientSession::connect(config).await?;
    let second = HandsetIdentity::generate()?;
    let mut config = host.client_config(&second);
    config.enrollment_token = Some(token);
    let code = refused_code(ClientSession::connect(config).await);
    assert_eq!(code, AppErrorCode::TokenReused);
    assert!(host.auth.handset(&second.fingerprint()).is_none());
    Ok(())
}

#[tokio::test]
async fn expired_and_forged_tokens_are_refused() -> anyhow::Result<()> {
    let host = Host::start()?;
    let identity = HandsetIdentity::generate()?;
    let mut config = host.client_config(&identity);
    config.enrollment_token = Some(
        host.auth
            .mint_token_until(SystemTime::now() - Duration::from_secs(5))?,
    );
    let code = refused_code(ClientSession::connect(config.clone()).await);
    assert_eq!(code, AppErrorCode::TokenExpired);
    config.enrollment_token = Some("vpe1.00112233".into());
    let code = refused_code(ClientSession::connect(config).await);
    assert_eq!(code, AppErrorCode::TokenInvalid);
    assert!(host.auth.handset(&identity.fingerprint()).is_none());
    Ok(())
}

#[tokio::test]
async fn operator_provided_chain_works_with_the_leaf_pin() -> anyhow::Result<()> {
    use std::sync::Arc;

    use device_bridge::{BridgeServer, BridgeServerConfig, MemoryAuthorizer, TransportSettings};

    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(vec![])?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let leaf_key = rcgen::KeyPair::generate()?;
    let leaf = rcgen::CertificateParams::new(vec!["vphone.example".to_owned()])?
        .signed_by(&leaf_key, &issuer)?;
    let chain = format!("{}{}", leaf.pem(), ca_cert.pem());
    let identity = HostIdentity::from_pem(chain.as_bytes(), leaf_key.serialize_pem().as_bytes())?;

    let auth = Arc::new(MemoryAuthorizer::generate()?);
    let mut config = BridgeServerConfig::new(identity.clone(), auth.clone());
    config.transport = TransportSettings::for_tests();
    let server = BridgeServer::bind("127.0.0.1:0".parse()?, config)?;
    let handset = HandsetIdentity::generate()?;
    auth.enroll(handset.fingerprint(), "e");
    let mut client_config =
        device_bridge::BridgeClientConfig::new(server.local_addr()?, identity.pin(), handset);
    client_config.transport = TransportSettings::for_tests();
    let client = ClientSession::connect(client_config).await?;
    assert!(client.is_connected());
    Ok(())
}
