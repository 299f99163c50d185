//! Strangers cannot exhaust the host: connections that have not been
//! admitted are capped per source and in total, may make the host buffer
//! only a small window, and get one deadline for TLS and `Hello` together;
//! an enrolled handset from elsewhere still gets in meanwhile.

use std::time::{Duration, Instant};

use device_bridge::proto::AppErrorCode;
use device_bridge::{AdmissionLimits, ClientSession, HandsetIdentity, TransportSettings};

use crate::common::{Host, within};

#[tokio::test]
async fn strangers_are_capped_per_source_buffer_little_and_time_out_while_a_handset_gets_in()
-> anyhow::Result<()> {
    let host = Host::start()?;
    let per_source = AdmissionLimits::default().max_unadmitted_per_source;
    let window = TransportSettings::default().unadmitted_window as usize;

    // 20 strangers from 127.0.0.3, each with a fresh certificate the host
    // never enrolled, none of which ever sends its Hello.
    let mut endpoint = quinn::Endpoint::client("127.0.0.3:0".parse()?)?;
    let started = Instant::now();
    let (mut held, mut refused) = (Vec::new(), 0);
    for _ in 0..20 {
        let identity = HandsetIdentity::generate()?;
        endpoint.set_default_client_config(device_bridge::tls::client_config(
            &identity,
            host.identity.pin(),
            &TransportSettings::for_tests(),
        )?);
        let connecting = endpoint.connect(host.addr, device_bridge::tls::SERVER_NAME)?;
        match within(5, "the handshake", connecting).await? {
            Ok(conn) => held.push(conn),
            Err(quinn::ConnectionError::ConnectionClosed(c))
                if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
            {
                refused += 1;
            }
            Err(e) => anyhow::bail!("a stranger's connection failed oddly: {e}"),
        }
    }
    assert_eq!(
        held.len(),
        per_source,
        "unadmitted connections held per source"
    );
    assert_eq!(refused, 20 - per_source);
    assert_eq!(host.server.refused_connections(), (20 - per_source) as u64);

    // Each held stranger tries to park 1 MiB in the host, all at once (one
    // after another would outlast the handshake deadline): the host grants
    // no more than its unadmitted window.
    let mut parking = tokio::task::JoinSet::new();
    for conn in &held {
        let conn = conn.clone();
        parking.spawn(async move {
            let (_control, _) = conn.open_bi().await?;
            let (mut junk, _) = conn.open_bi().await?;
            let chunk = vec![0xA5_u8; 16 * 1024];
            let mut written = 0;
            let deadline = Instant::now() + Duration::from_millis(500);
            while written < 1024 * 1024 && Instant::now() < deadline {
                match tokio::time::timeout_at(deadline.into(), junk.write(&chunk)).await {
                    Ok(Ok(n)) => written += n,
                    _ => break,
                }
            }
            anyhow::Ok(written)
        });
    }
    let mut parked = Vec::new();
    while let Some(written) = parking.join_next().await {
        parked.push(written??);
    }
    assert!(
        parked.iter().all(|w| *w > 0),
        "every stranger got to write something: {parked:?}"
    );
    for written in &parked {
        assert!(
            *written <= window,
            "a stranger parked {written} bytes in the host (window {window}): {parked:?}"
        );
    }

    // Meanwhile an enrolled handset (from 127.0.0.1) is admitted.
    let identity = HandsetIdentity::generate()?;
    host.auth.enroll(identity.fingerprint(), "owner");
    let owner = within(5, "the owner's session", async {
        ClientSession::connect(host.client_config(&identity)).await
    })
    .await??;

    // The strangers are closed at the handshake deadline (3 s in tests),
    // TLS and the missing Hello counted together.
    for conn in &held {
        match within(6, "the host to close a stranger", conn.closed()).await? {
            quinn::ConnectionError::ApplicationClosed(c) => assert_eq!(
                c.error_code.into_inner(),
                AppErrorCode::ProtocolViolation as u64,
                "{c:?}"
            ),
            other => anyhow::bail!("a stranger ended without the host closing it: {other}"),
        }
    }
    let lasted = started.elapsed();
    assert!(
        lasted < Duration::from_secs(6),
        "strangers were held {lasted:?}"
    );
    // Their places are free again: the next stranger gets a handshake.
    let identity = HandsetIdentity::generate()?;
    endpoint.set_default_client_config(device_bridge::tls::client_config(
        &identity,
        host.identity.pin(),
        &TransportSettings::for_tests(),
    )?);
    let again = within(5, "a later stranger's handshake", async {
        endpoint
            .connect(host.addr, device_bridge::tls::SERVER_NAME)?
            .await
            .map_err(anyhow::Error::from)
    })
    .await?;
    assert!(again.is_ok(), "{again:?}");
    assert!(owner.is_connected());
    Ok(())
}
