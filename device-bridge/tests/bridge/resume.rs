//! Surviving the network: resume after a cut, resume window expiry,
//! migration to a new socket.

use std::time::{Duration, Instant};

use device_bridge::proto::{AppErrorCode, Key, input_message};
use device_bridge::{BridgeError, ClientSession, ServerSession};

use vphone_testkit::net::FaultProxy;

use crate::common::{Host, acl, acl_index, new_socket, within};

const PACKETS: u32 = 10_000;

/// A host with a 10 s resume window and an enrolled handset `name`
/// connected to it through a fault proxy seeded with `seed`.
async fn behind_a_proxy(
    seed: u64,
    name: &str,
) -> anyhow::Result<(Host, FaultProxy, ClientSession, ServerSession)> {
    let host = Host::start_with(Duration::from_secs(10))?;
    let proxy = FaultProxy::start(host.addr, seed).await?;
    let identity = device_bridge::HandsetIdentity::generate()?;
    host.auth.enroll(identity.fingerprint(), name);
    let mut config = host.client_config(&identity);
    config.server_addr = proxy.addr();
    let client = ClientSession::connect(config).await?;
    let server = within(5, "accept", host.server.accept())
        .await?
        .expect("session");
    Ok((host, proxy, client, server))
}

/// Keys typed while the network is cut, on a connection that then dies:
/// after the resume every one of them reaches the host, once, in order
/// (the handset sends its recent input again on the new connection; the
/// host drops what it already has by seq).
#[tokio::test]
async fn input_survives_a_network_cut_exactly_once() -> anyhow::Result<()> {
    let (_host, proxy, client, server) = behind_a_proxy(2, "typist").await?;
    let press = |code: i32| {
        input_message::Event::Key(Key {
            keycode: code,
            ..Key::default()
        })
    };

    let typing = {
        let client = client.clone();
        let proxy = &proxy;
        async move {
            for code in 0..40 {
                client.send_input(press(code)).await?;
                tokio::time::sleep(Duration::from_millis(10)).await;
                if code == 19 {
                    // Cut longer than the idle timeout: the connection dies
                    // with the next keys in flight.
                    proxy.blackout(true);
                }
                if code == 29 {
                    tokio::time::sleep(Duration::from_millis(1200)).await;
                    proxy.blackout(false);
                }
            }
            anyhow::Ok(())
        }
    };
    let receiving = async {
        let mut got = Vec::new();
        while got.len() < 40 {
            let m = within(20, "input", server.recv_input()).await??;
            match m.event {
                Some(input_message::Event::Key(k)) => got.push((m.seq, k.keycode)),
                other => anyhow::bail!("unexpected input {other:?}"),
            }
        }
        anyhow::Ok(got)
    };
    let (typed, got) = tokio::join!(typing, receiving);
    typed?;
    let got = got?;
    assert_eq!(
        got,
        (0..40).map(|c| (c as u64 + 1, c)).collect::<Vec<_>>(),
        "every key once, in order"
    );
    assert!(client.stats().connections >= 2, "the session resumed");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), server.recv_input())
            .await
            .is_err(),
        "nothing arrives twice"
    );
    Ok(())
}

#[tokio::test]
async fn hci_transfer_survives_a_network_cut_exactly_once() -> anyhow::Result<()> {
    let (host, proxy, client, server) = behind_a_proxy(1, "roamer").await?;

    // Both directions at once, paced so the cut lands mid-transfer.
    let down = {
        let server = server.clone();
        tokio::spawn(async move {
            for i in 0..PACKETS {
                server.send_hci(acl(i, 600)).await?;
                if i % 200 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            anyhow::Ok(())
        })
    };
    let up = {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 0..PACKETS {
                client.send_hci(acl(i, 300)).await?;
                if i % 200 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            anyhow::Ok(())
        })
    };
    let host_rx = {
        let server = server.clone();
        tokio::spawn(async move {
            let mut got = Vec::with_capacity(PACKETS as usize);
            while got.len() < PACKETS as usize {
                got.push(acl_index(&within(20, "hci up", server.recv_hci()).await??));
            }
            anyhow::Ok(got)
        })
    };
    let mut got = Vec::with_capacity(PACKETS as usize);
    let mut cut_at = None;
    while got.len() < PACKETS as usize {
        let p = within(20, "hci down", client.recv_hci()).await??;
        got.push(acl_index(&p));
        if got.len() == 3000 {
            // Black-hole the network for longer than the idle timeout:
            // both sides lose the connection; the handset reconnects.
            proxy.blackout(true);
            cut_at = Some(Instant::now());
            let proxy_ref = &proxy;
            tokio::time::sleep(Duration::from_millis(1200)).await;
            proxy_ref.blackout(false);
        }
    }
    assert!(cut_at.is_some());
    assert_eq!(
        got,
        (0..PACKETS).collect::<Vec<_>>(),
        "handset: every packet once, in order"
    );
    let host_got = host_rx.await??;
    assert_eq!(
        host_got,
        (0..PACKETS).collect::<Vec<_>>(),
        "host: every packet once, in order"
    );
    down.await??;
    up.await??;

    // Same session, a second connection, no new session at the host.
    assert_eq!(client.stats().connections, 2);
    assert_eq!(server.stats().connections, 2);
    assert!(client.welcome().resumed);
    assert!(server.is_connected());
    assert!(
        tokio::time::timeout(Duration::from_millis(100), host.server.accept())
            .await
            .is_err()
    );
    let resent = client.stats().hci_resent + server.stats().hci_resent;
    let dups = client.stats().hci_duplicates + server.stats().hci_duplicates;
    println!("resent {resent}, duplicates dropped {dups}");
    Ok(())
}

#[tokio::test]
async fn session_ends_when_the_resume_window_passes() -> anyhow::Result<()> {
    let host = Host::start_with(Duration::from_millis(800))?;
    let proxy = FaultProxy::start(host.addr, 1).await?;
    let identity = device_bridge::HandsetIdentity::generate()?;
    host.auth.enroll(identity.fingerprint(), "gone");
    let mut config = host.client_config(&identity);
    config.server_addr = proxy.addr();
    let client = ClientSession::connect(config).await?;
    let server = within(5, "accept", host.server.accept())
        .await?
        .expect("session");
    proxy.blackout(true);
    let started = Instant::now();
    let end = within(5, "host-side end", server.ended()).await?;
    assert_eq!(end.code, AppErrorCode::ResumeExpired);
    // idle timeout (0.6 s) + window (0.8 s), with slack.
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(host.server.session_count(), 0);
    let end = within(5, "handset-side end", client.ended()).await?;
    assert_eq!(end.code, AppErrorCode::ResumeExpired);
    assert!(matches!(
        client
            .send_input(input_message::Event::Key(Key::default()))
            .await,
        Err(BridgeError::SessionEnded(_))
    ));
    Ok(())
}

#[tokio::test]
async fn closing_ends_both_sides_without_resume() -> anyhow::Result<()> {
    let host = Host::start()?;
    let (client, server) = host.enrolled_pair().await?;
    server
        .close(
            device_bridge::proto::CloseReason::Kicked,
            "kicked by the operator",
        )
        .await;
    let end = within(5, "handset end", client.ended()).await?;
    assert_eq!(end.code, AppErrorCode::Kicked);
    assert!(end.by_peer);
    assert_eq!(end.reason, "kicked by the operator");
    Ok(())
}

#[tokio::test]
async fn session_migrates_to_a_new_socket_without_a_new_handshake() -> anyhow::Result<()> {
    let host = Host::start()?;
    let (client, server) = host.enrolled_pair().await?;
    let before = server.remote_address().expect("connected");
    let n = 3000u64;
    let sender = {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 1..=n {
                client
                    .send_input(input_message::Event::Key(Key {
                        timestamp_ns: i,
                        ..Key::default()
                    }))
                    .await?;
                client
                    .send_hci(acl(u32::try_from(i).unwrap_or(0), 100))
                    .await?;
                if i % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            anyhow::Ok(())
        })
    };
    let mut rebound = false;
    for i in 1..=n {
        let msg = within(5, "input", server.recv_input()).await??;
        assert_eq!(msg.seq, i);
        let p = within(5, "hci", server.recv_hci()).await??;
        assert_eq!(u64::from(acl_index(&p)), i);
        if i == n / 3 {
            client.rebind(new_socket()?)?;
            rebound = true;
        }
    }
    assert!(rebound);
    sender.await??;
    let after = server.remote_address().expect("still connected");
    assert_ne!(before.port(), after.port(), "the host sees the new address");
    assert_eq!(after.port(), client.local_addr()?.port());
    assert_eq!(
        client.stats().connections,
        1,
        "no reconnect, no new handshake"
    );
    assert_eq!(server.stats().connections, 1);
    Ok(())
}
