//! The radio relay between an in-process bridge session (standing in for the
//! host) and a real controller: bumble's virtual controllers over H4/TCP.
//!
//! Needs the Python venv with bumble that `scripts/setup` creates (`.venv` at
//! the workspace root, or `VPHONE_PYTHON`); without it the test fails and
//! says so.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bt_raw::H4Packet;
use bt_raw::btsnoop::{Direction, read_all};
use bt_raw::packet::Event;
use bt_raw::transport::RadioSpec;
use device_bridge::{
    BridgeClientConfig, BridgeServer, BridgeServerConfig, ClientSession, HandsetIdentity,
    HostIdentity, MemoryAuthorizer, ServerSession, TransportSettings,
};
use mobile_client::ClientError;
use mobile_client::proto::{Hello, RadioState, control_message};
use mobile_client::radio::{LentRadio, RadioOptions, RadioRelay};
use vphone_testkit::net::FaultProxy;

/// The venv's Python (`VPHONE_PYTHON`, else `<workspace>/.venv/bin/python`).
fn python() -> PathBuf {
    let path = std::env::var_os("VPHONE_PYTHON").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup (it creates .venv with bumble), or set VPHONE_PYTHON",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two bumble controllers on one virtual radio, each an H4 TCP server.
fn bumble_controllers() -> (Killed, u16) {
    let (p1, p2) = (free_port(), free_port());
    let child = Command::new(python())
        .args([
            "-m",
            "bumble.apps.controllers",
            &format!("tcp-server:127.0.0.1:{p1}"),
            &format!("tcp-server:127.0.0.1:{p2}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting bumble's controllers");
    (Killed(child), p1)
}

/// Retries `attempt` every 100 ms while bumble starts up (for up to 30 s),
/// and fails at once, saying so, if bumble's process exits.
async fn while_bumble_starts<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    child: &mut Killed,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match attempt().await {
            Ok(r) => return r,
            Err(e) => {
                if let Ok(Some(status)) = child.0.try_wait() {
                    panic!(
                        "bumble's controllers exited ({status}); is bumble installed in the venv?"
                    );
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "bumble's controller never accepted: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Opens the radio, retrying while bumble starts up.
async fn open_radio(opts: &RadioOptions, child: &mut Killed) -> LentRadio {
    while_bumble_starts(child, || LentRadio::open(opts)).await
}

/// An H4 TCP relay in front of a controller that holds each chunk the
/// controller sends for `delay` before passing it on (bytes towards the
/// controller pass at once). A slow controller makes command credits
/// observable: while its reply is on the way, the relay must hold the next
/// command. Connects to the controller first (retrying while bumble starts),
/// then serves one handset connection on the returned port.
async fn slow_replies(controller: u16, delay: Duration, child: &mut Killed) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = while_bumble_starts(child, || {
        tokio::net::TcpStream::connect(("127.0.0.1", controller))
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let Ok((handset, _)) = listener.accept().await else {
            return;
        };
        let (mut up_rx, mut up_tx) = upstream.into_split();
        let (mut hs_rx, mut hs_tx) = handset.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut hs_rx, &mut up_tx).await;
        });
        let (chunks_tx, mut chunks) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some((due, chunk)) = chunks.recv().await {
                tokio::time::sleep_until(due).await;
                let chunk: Vec<u8> = chunk;
                if hs_tx.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        let mut buf = vec![0u8; 4096];
        loop {
            match up_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let due = tokio::time::Instant::now() + delay;
                    if chunks_tx.send((due, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    port
}

async fn bridge_pair() -> (BridgeServer, ClientSession, ServerSession) {
    bridge_pair_via(None).await
}

/// A host and a connected handset session; with `proxy`, the handset talks
/// to the host through a [`FaultProxy`] (returned too).
async fn bridge_pair_via(
    proxy: Option<&mut Option<FaultProxy>>,
) -> (BridgeServer, ClientSession, ServerSession) {
    let identity = HostIdentity::generate().unwrap();
    let auth = Arc::new(MemoryAuthorizer::generate().unwrap());
    let mut config = BridgeServerConfig::new(identity.clone(), auth.clone());
    config.transport = TransportSettings::for_tests();
    let server = BridgeServer::bind("127.0.0.1:0".parse().unwrap(), config).unwrap();
    let mut addr: SocketAddr = server.local_addr().unwrap();
    if let Some(slot) = proxy {
        let p = FaultProxy::start(addr, 1).await.unwrap();
        addr = p.addr();
        *slot = Some(p);
    }
    let handset = HandsetIdentity::generate().unwrap();
    auth.enroll(handset.fingerprint(), "radio handset");
    let mut cc = BridgeClientConfig::new(addr, identity.pin(), handset);
    cc.transport = TransportSettings::for_tests();
    cc.hello = Hello {
        handset_name: "radio handset".into(),
        radio_available: true,
        ..Hello::default()
    };
    let client = ClientSession::connect(cc).await.unwrap();
    let session = tokio::time::timeout(Duration::from_secs(5), server.accept())
        .await
        .expect("accept in time")
        .expect("server open");
    (server, client, session)
}

async fn next_radio_state(host: &ServerSession) -> RadioState {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(2), host.recv_control())
            .await
            .expect("a RadioState within 2 s")
            .expect("control message");
        if let Some(control_message::Msg::RadioState(r)) = m.msg {
            return r;
        }
    }
}

/// The next event the "phone's stack" (the host side) gets.
async fn next_event(host: &ServerSession) -> H4Packet {
    tokio::time::timeout(Duration::from_secs(5), host.recv_hci())
        .await
        .expect("an HCI packet within 5 s")
        .expect("hci")
}

fn cmd(op: u16) -> H4Packet {
    H4Packet::command(op, &[]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_reaches_bumble_and_a_vendor_command_is_refused_here() {
    let (mut controllers, port) = bumble_controllers();
    let dir = tempfile::tempdir().unwrap();
    let snoop_path = dir.path().join("handset.btsnoop");
    let mut opts = RadioOptions::new(format!("tcp:127.0.0.1:{port}").parse().unwrap());
    opts.snoop = Some(snoop_path.clone());
    let radio = open_radio(&opts, &mut controllers).await;

    let (_server, client, host) = bridge_pair().await;
    assert!(host.hello().radio_available);
    let relay = RadioRelay::start(client.clone(), radio);
    assert_eq!(
        next_radio_state(&host).await,
        RadioState {
            available: true,
            lent: true
        }
    );

    // HCI_Reset from the phone's stack reaches the controller; its Command
    // Complete comes back unchanged.
    host.send_hci(cmd(0x0C03)).await.unwrap();
    let ev = next_event(&host).await;
    let cc = Event::new(&ev)
        .unwrap()
        .command_complete()
        .expect("Command Complete");
    assert_eq!((cc.opcode.0, cc.return_params), (0x0C03, &[0x00][..]));

    // A vendor command is refused by the handset at once (bumble itself
    // would never answer it).
    host.send_hci(cmd(0xFC01)).await.unwrap();
    let ev = next_event(&host).await;
    let st = Event::new(&ev)
        .unwrap()
        .command_status()
        .expect("Command Status");
    assert_eq!((st.opcode.0, st.status), (0xFC01, 0x01));

    // An allowed command after the refusal still works (no credit lost).
    host.send_hci(cmd(0x1001)).await.unwrap();
    let ev = next_event(&host).await;
    let cc = Event::new(&ev).unwrap().command_complete().unwrap();
    assert_eq!((cc.opcode.0, cc.return_params[0]), (0x1001, 0x00));

    // The heartbeat keeps coming while lending.
    for _ in 0..2 {
        assert!(next_radio_state(&host).await.lent);
    }

    let stats = relay.stop().await;
    // The goodbye: available, no longer lent (heartbeats may precede it).
    let mut last = next_radio_state(&host).await;
    while last.lent {
        last = next_radio_state(&host).await;
    }
    assert_eq!(
        last,
        RadioState {
            available: true,
            lent: false
        }
    );
    assert_eq!(stats.packets_from_phone, 3);
    assert_eq!(stats.packets_to_radio, 2);
    assert_eq!(stats.packets_from_radio, 2);
    assert_eq!(stats.denied_commands, 1);
    assert_eq!(stats.queue_len, 0);
    assert_eq!(stats.error, None);
    assert_eq!(stats.snoop_records, 6);
    assert!(stats.radio_state_messages >= 4, "{stats:?}");
    assert!(stats.reset_on_release, "{stats:?}");

    // The handset's capture: what the controller saw, nothing of the denial,
    // and last the reset that ended the loan, answered by bumble.
    let recs = read_all(std::fs::File::open(&snoop_path).unwrap()).unwrap();
    let dirs: Vec<Direction> = recs.iter().map(|r| r.direction).collect();
    assert_eq!(
        dirs,
        [
            Direction::HostToController,
            Direction::ControllerToHost,
            Direction::HostToController,
            Direction::ControllerToHost,
            Direction::HostToController,
            Direction::ControllerToHost
        ]
    );
    assert_eq!(recs[0].bytes, cmd(0x0C03).as_bytes());
    assert_eq!(recs[2].bytes, cmd(0x1001).as_bytes());
    assert_eq!(recs[4].bytes, cmd(0x0C03).as_bytes(), "reset on release");
    let released = H4Packet::parse(recs[5].bytes.clone()).unwrap();
    let cc = Event::new(&released).unwrap().command_complete().unwrap();
    assert_eq!((cc.opcode.0, cc.return_params), (0x0C03, &[0x00][..]));
    assert!(
        recs.iter()
            .all(|r| r.bytes.get(1..3) != Some(&[0x01, 0xFC][..]))
    );
    client
        .close(mobile_client::proto::CloseReason::Normal, "done")
        .await;
}

#[tokio::test]
async fn a_radio_that_is_not_there_fails_early_with_advice() {
    let port = free_port();
    let spec: RadioSpec = format!("tcp:127.0.0.1:{port}").parse().unwrap();
    let err = LentRadio::open(&RadioOptions::new(spec)).await.unwrap_err();
    assert!(matches!(err, ClientError::Radio { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("tcp:127.0.0.1:{port}"))
            && msg.contains("connection refused — is the controller running?"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_bad_policy_file_is_refused_before_anything_opens() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, "base = \"open\"\n").unwrap();
    let mut opts = RadioOptions::new("tcp:127.0.0.1:1".parse().unwrap());
    opts.policy_file = Some(policy);
    let msg = LentRadio::open(&opts).await.unwrap_err().to_string();
    assert!(
        msg.contains("p.toml") && msg.contains("unknown variant"),
        "{msg}"
    );
}

/// Commands the host sends while the network is cut arrive after the resume,
/// exactly once; the handset holds those beyond the controller's command
/// credits and releases them as replies come back, so every reply arrives,
/// in order, and no credit leaks (the queue is empty at the end).
///
/// The controller's replies take 200 ms (a relay in front of bumble holds
/// them), so the replayed burst always meets a spent credit: with bumble's
/// sub-millisecond replies, whether the second command had to wait depended
/// on how the scheduler interleaved the relay and the session reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_and_its_credit_queue_survive_a_resume() {
    let (mut controllers, controller) = bumble_controllers();
    let port = slow_replies(controller, Duration::from_millis(200), &mut controllers).await;
    let opts = RadioOptions::new(format!("tcp:127.0.0.1:{port}").parse().unwrap());
    let radio = LentRadio::open(&opts)
        .await
        .expect("the relay in front of bumble");
    let mut proxy = None;
    let (_server, client, host) = bridge_pair_via(Some(&mut proxy)).await;
    let proxy = proxy.expect("proxy");
    let relay = RadioRelay::start(client.clone(), radio);
    assert!(next_radio_state(&host).await.lent);
    host.send_hci(cmd(0x0C03)).await.unwrap();
    let ev = next_event(&host).await;
    assert_eq!(
        Event::new(&ev)
            .unwrap()
            .command_complete()
            .unwrap()
            .opcode
            .0,
        0x0C03
    );

    // Cut the network for longer than the idle timeout; meanwhile the stack
    // sends three commands back to back (beyond the one command credit).
    proxy.blackout(true);
    let ops = [0x1001u16, 0x1009, 0x1005];
    for op in ops {
        host.send_hci(cmd(op)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    proxy.blackout(false);

    let mut replies = Vec::new();
    while replies.len() < ops.len() {
        let ev = next_event(&host).await;
        if let Some(cc) = Event::new(&ev).unwrap().command_complete() {
            replies.push(cc.opcode.0);
        }
    }
    assert_eq!(replies, ops);
    assert_eq!(client.stats().connections, 2, "the session resumed");
    // The heartbeat goes on after the resume.
    assert!(next_radio_state(&host).await.lent);
    let stats = relay.stop().await;
    assert_eq!(stats.packets_to_radio, 4);
    // The replayed burst meets one command credit held by a slow reply:
    // the second and third commands wait for it.
    assert_eq!(stats.queued_for_credits, 2, "{stats:?}");
    assert_eq!(stats.queue_peak, 2, "{stats:?}");
    assert_eq!(stats.queue_len, 0);
    assert_eq!(stats.error, None);
}
