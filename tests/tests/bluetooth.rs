//! Bluetooth passthrough end to end, with real Bluetooth stacks (bumble):
//! a bumble central attached to `vphone-host` as phone-1's stack (through
//! the netsim PacketStreamer), the companion lending bumble controller B
//! over QUIC, and a bumble peripheral on controller A whose characteristic
//! needs an encrypted, authenticated link (LE Secure Connections).
//!
//! These tests share one machine-wide resource (CPU for the Python stacks)
//! and run one at a time (`.config/nextest.toml`, test group `bumble`).

use std::path::Path;
use std::time::{Duration, Instant};

use bt_raw::btsnoop::{Direction, Record, read_all};
use mobile_client::radio::{RadioOptions, RadioSpec};
use mobile_client::sensors::SourceSpec;
use mobile_client::session::{Companion, ConnectOptions};
use sim_phone::render::BluetoothView;
use vphone_testkit::net::{FaultProxy, Faults, Loss};
use vphone_tests::bumble::{PERIPHERAL, SECRET, Script, Testbed, binary};
use vphone_tests::{Handset, TestHost, eventually};

const FLOW: Duration = Duration::from_secs(30);

fn companion_options(handset: &Handset, radio: &str, snoop: Option<&Path>) -> ConnectOptions {
    let mut o = handset.options(SourceSpec::Synthetic { seed: 7 });
    o.phone = Some("phone-1".into());
    let mut r = RadioOptions::new(radio.parse::<RadioSpec>().expect("radio spec"));
    r.snoop = snoop.map(Path::to_path_buf);
    o.radio = Some(r);
    o
}

/// The central's transport: phone-1's own Bluetooth attach point.
fn stack_spec(t: &TestHost) -> String {
    let addr = t
        .host
        .attach
        .endpoint("phone-1")
        .expect("phone-1 has an attach point");
    format!("android-netsim:{addr},name=phone-1")
}

/// The central's full flow: found, connected, unencrypted read refused,
/// paired, encrypted + authenticated, the secret read.
async fn expect_encrypted_read(central: &mut Script) {
    central.expect("connected", FLOW).await;
    let before = central.expect("read_before_pairing", FLOW).await;
    assert_eq!(
        before.json["result"], "INSUFFICIENT_ENCRYPTION",
        "{}",
        before.json
    );
    central.expect("paired", FLOW).await;
    let enc = central.expect("encrypted", FLOW).await;
    assert_eq!(enc.json["authenticated"], true, "{}", enc.json);
    let value = central.expect("value", FLOW).await;
    assert_eq!(value.json["value"], SECRET);
    central.expect("done", FLOW).await;
}

/// Records without the denied vendor command 0xFC01 and the host's refusal,
/// as two sequences: stack -> radio and radio -> stack. Each direction's order
/// is the same at both ends; how the two directions interleave depends on
/// where the capture is taken (a packet crossing the tunnel one way can pass
/// one crossing it the other way).
fn without_denied(records: &[Record]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (up, down): (Vec<_>, Vec<_>) = kept(records)
        .into_iter()
        .partition(|(from_radio, _)| *from_radio);
    (
        down.into_iter().map(|(_, b)| b).collect(),
        up.into_iter().map(|(_, b)| b).collect(),
    )
}

fn kept(records: &[Record]) -> Vec<(bool, Vec<u8>)> {
    records
        .iter()
        .filter(|r| {
            let d = &r.bytes;
            let denied_cmd = d.len() >= 3 && d[0] == 0x01 && d[1..3] == [0x01, 0xFC];
            let refusal = d.len() >= 7 && d[0] == 0x04 && d[1] == 0x0F && d[5..7] == [0x01, 0xFC];
            !denied_cmd && !refusal
        })
        .map(|r| (r.direction == Direction::ControllerToHost, r.bytes.clone()))
        .collect()
}

/// The LTK of every LE_Enable_Encryption (0x2019) command in a capture.
fn ltks(records: &[Record]) -> Vec<Vec<u8>> {
    records
        .iter()
        .filter(|r| r.bytes.len() == 32 && r.bytes[..4] == [0x01, 0x19, 0x20, 28])
        .map(|r| r.bytes[16..32].to_vec())
        .collect()
}

fn tshark_ltk_lines(path: &Path) -> Vec<String> {
    let out = std::process::Command::new("tshark")
        .args(["-r", path.to_str().unwrap(), "-V"])
        .output()
        .expect("running tshark (scripts/setup installs it)");
    assert!(out.status.success(), "tshark failed on {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with("Long Term Key:"))
        .map(|l| l.trim().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_and_encrypted_read_through_vphone_with_matching_redacted_captures() {
    let mut t = TestHost::start().await;
    let dir = t.scratch("bt");
    let bed = Testbed::start(&dir).await;
    let handset = t.enroll("radio-handset", &["phone-1"]);
    let handset_snoop = dir.join("handset.btsnoop");
    let companion = Companion::connect(companion_options(
        &handset,
        &bed.radio_spec(),
        Some(&handset_snoop),
    ))
    .await
    .expect("companion connects with its radio");
    t.radio_attached("phone-1").await;
    let (_, sim) = t.phone("phone-1").await;
    assert_eq!(sim.bluetooth(), BluetoothView::RadioAttached);

    // The operator captures on the host with vphonectl.
    let host_snoop = dir.join("host.btsnoop");
    let mut vphonectl = Script::spawn(
        "vphonectl",
        &binary("vphonectl"),
        &[
            "--data-dir".into(),
            t.data_dir().display().to_string(),
            "--json".into(),
            "bt".into(),
            "snoop".into(),
            "phone-1".into(),
            "--out".into(),
            host_snoop.display().to_string(),
        ],
        &dir,
        &dir.join("vphonectl.log"),
    );
    eventually(Duration::from_secs(10), || async {
        match std::fs::metadata(&host_snoop) {
            Ok(m) if m.len() >= 16 => Ok(()),
            _ => Err(format!(
                "vphonectl has not opened its capture; its stderr: {}",
                std::fs::read_to_string(dir.join("vphonectl.log")).unwrap_or_default()
            )),
        }
    })
    .await
    .expect("vphonectl captures");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The phone's stack: a vendor command first, then the whole flow.
    let mut central = bed.central(&stack_spec(&t), &["--vendor-probe"]);
    let vendor = central.expect("vendor_reply", FLOW).await;
    assert_eq!(vendor.json["kind"], "command_status", "{}", vendor.json);
    assert_eq!(
        vendor.json["status"], 1,
        "Unknown HCI Command: {}",
        vendor.json
    );
    assert!(
        vendor.json["ms"].as_f64().unwrap() < 500.0,
        "the refusal came at once: {}",
        vendor.json
    );
    central.expect("found", FLOW).await;
    expect_encrypted_read(&mut central).await;
    assert_eq!(central.wait(Duration::from_secs(10)).await, Some(0));
    tokio::time::sleep(Duration::from_millis(500)).await;

    vphonectl.signal("INT");
    assert_eq!(vphonectl.wait(Duration::from_secs(5)).await, Some(0));
    let report = companion.finish().await.expect("companion finishes");
    let radio = report.radio.expect("radio stats");
    assert_eq!(radio.denied_commands, 1, "{radio:?}");
    assert!(radio.error.is_none(), "{radio:?}");

    let host = read_all(std::fs::File::open(&host_snoop).unwrap()).expect("host capture");
    let mut hand = read_all(std::fs::File::open(&handset_snoop).unwrap()).expect("handset capture");
    assert!(host.len() > 50, "the host captured {} packets", host.len());
    // Given back, the handset reset its radio (the stack's state must not
    // outlive the loan); the host never sees that.
    let released = hand.split_off(hand.len() - 2);
    assert_eq!(released[0].bytes, [0x01, 0x03, 0x0C, 0x00], "HCI_Reset");
    assert_eq!(
        (released[1].bytes[1], &released[1].bytes[4..]),
        (0x0E, &[0x03, 0x0C, 0x00][..]),
        "its Command Complete: {:02x?}",
        released[1].bytes
    );
    // Byte for byte equal in each direction, apart from the denied command
    // and its refusal.
    assert_eq!(host.len(), hand.len() + 2);
    let (host_down, host_up) = without_denied(&host);
    let (hand_down, hand_up) = without_denied(&hand);
    assert_eq!(host_down, hand_down, "stack -> radio differs");
    assert_eq!(host_up, hand_up, "radio -> stack differs");
    // The central encrypted the link: its LTK is in both files, zeroed.
    for (name, recs, path) in [
        ("host", &host, &host_snoop),
        ("handset", &hand, &handset_snoop),
    ] {
        let keys = ltks(recs);
        assert_eq!(keys.len(), 1, "{name}: one LE_Enable_Encryption");
        assert_eq!(keys[0], vec![0; 16], "{name}: the LTK is redacted");
        assert_eq!(
            tshark_ltk_lines(path),
            vec!["Long Term Key: 00000000000000000000000000000000".to_owned()],
            "{name}: tshark decodes the capture"
        );
    }
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handset_rebinds_mid_connection_and_the_encrypted_link_survives() {
    let mut t = TestHost::start().await;
    let dir = t.scratch("bt");
    let bed = Testbed::start(&dir).await;
    let handset = t.enroll("radio-handset", &["phone-1"]);
    let companion = Companion::connect(companion_options(&handset, &bed.radio_spec(), None))
        .await
        .expect("companion connects with its radio");
    t.radio_attached("phone-1").await;
    let mut central = bed.central(&stack_spec(&t), &["--hold"]);
    expect_encrypted_read(&mut central).await;
    let (_, sim) = t.phone("phone-1").await;
    assert_eq!(
        sim.bluetooth(),
        BluetoothView::Connected {
            peer_name: PERIPHERAL.into(),
            address: "F1:F1:F1:F1:F1:F1".into(),
            encrypted: true,
        }
    );

    // The handset moves to a new UDP port (a network change) mid-connection.
    let before = companion.session().local_addr().unwrap();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    companion.session().rebind(socket).expect("rebind");
    central.send("read").await;
    let value = central.expect("value", FLOW).await;
    assert_eq!(value.json["value"], SECRET);
    assert_ne!(companion.session().local_addr().unwrap(), before);
    assert!(
        !central.seen().iter().any(|l| l.event() == "disconnected"),
        "the BLE connection stayed up: {:?}",
        central.seen().iter().map(|l| &l.json).collect::<Vec<_>>()
    );
    central.send("quit").await;
    assert_eq!(central.wait(Duration::from_secs(10)).await, Some(0));
    companion.finish().await.expect("companion finishes");
    t.shutdown().await;
}

/// A host, the testbed, and a companion lending controller B to phone-1
/// through a fault proxy seeded with `seed` (faults off for now), with the
/// radio attached.
async fn lending_through_a_proxy(seed: u64) -> (TestHost, Testbed, FaultProxy, Companion) {
    let mut t = TestHost::start().await;
    let bed = Testbed::start(&t.scratch("bt")).await;
    let handset = t.enroll("radio-handset", &["phone-1"]);
    let proxy = FaultProxy::start(handset.host_addr(), seed)
        .await
        .expect("proxy");
    handset.point_at(proxy.addr());
    let companion = Companion::connect(companion_options(&handset, &bed.radio_spec(), None))
        .await
        .expect("companion connects with its radio through the proxy");
    t.radio_attached("phone-1").await;
    (t, bed, proxy, companion)
}

/// A 1 s blackout between handset and host (a tunnel, a lift) while the
/// phone holds an encrypted BLE link through the handset's radio: the link
/// is still up and encrypted afterwards, and a read works, because the
/// radio-lost bound (1.5 s without a heartbeat) outlasts the blackout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_blackout_keeps_the_encrypted_link() {
    let (t, bed, proxy, companion) = lending_through_a_proxy(0x5eed_0b1e).await;
    let mut central = bed.central(&stack_spec(&t), &["--hold"]);
    expect_encrypted_read(&mut central).await;

    proxy.blackout(true);
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.blackout(false);
    let stats = proxy.stats();
    assert!(
        stats.up.blacked_out + stats.down.blacked_out > 0,
        "the blackout dropped packets: {stats:?}"
    );

    central.send("read").await;
    let value = central.expect("value", FLOW).await;
    assert_eq!(value.json["value"], SECRET);
    assert!(
        !central.seen().iter().any(|l| l.event() == "disconnected"),
        "the BLE connection stayed up: {:?}",
        central.seen().iter().map(|l| &l.json).collect::<Vec<_>>()
    );
    let (_, sim) = t.phone("phone-1").await;
    assert!(
        matches!(
            sim.bluetooth(),
            BluetoothView::Connected {
                encrypted: true,
                ..
            }
        ),
        "{:?}",
        sim.bluetooth()
    );
    central.send("quit").await;
    assert_eq!(central.wait(Duration::from_secs(10)).await, Some(0));
    companion.finish().await.expect("companion finishes");
    t.shutdown().await;
}

/// Pairing, an encrypted read, a write read back and a stream of
/// notifications, all through
/// 5% loss each way, 25 ms +- 10 ms of jitter and 5% reordered between
/// handset and host: the peripheral's counter arrives at the phone's stack
/// with no gap and no duplicate, because the bridge carries HCI on a
/// reliable stream, in order, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_arrive_without_gap_or_duplicate_through_loss_and_jitter() {
    let (t, bed, proxy, companion) = lending_through_a_proxy(0x5eed_0c0c).await;
    proxy.set_both(Faults {
        loss: Loss::Random(0.05),
        reorder: 0.05,
        reorder_by: Duration::from_millis(30),
        ..Faults::delay(Duration::from_millis(25), Duration::from_millis(10))
    });
    let mut central = bed.central(
        &stack_spec(&t),
        &[
            "--write",
            "written-through-loss",
            "--notifications",
            "300",
            "--timeout",
            "90",
        ],
    );
    let flow = Duration::from_secs(60);
    expect_encrypted_read(&mut central).await;
    let written = central
        .seen()
        .iter()
        .find(|l| l.event() == "written")
        .map(|l| l.json.clone())
        .expect("the central wrote the note");
    assert_eq!(written["value"], "written-through-loss", "{written}");
    let n = central
        .seen()
        .iter()
        .find(|l| l.event() == "notifications")
        .map(|l| l.json.clone())
        .expect("the central reported its notifications");
    let count = n["count"].as_u64().unwrap_or(0);
    assert!(count >= 300, "{n}");
    assert_eq!(
        n["last"].as_u64().unwrap_or(0) - n["first"].as_u64().unwrap_or(0) + 1,
        count,
        "every value from the first to the last, once: {n}"
    );
    assert_eq!(n["gaps"], 0, "no notification lost: {n}");
    assert_eq!(n["duplicates"], 0, "none doubled: {n}");
    let stats = proxy.stats();
    assert!(
        stats.up.lost + stats.down.lost > 20 && stats.up.reordered + stats.down.reordered > 20,
        "the proxy did lose and reorder packets: {stats:?}"
    );
    eprintln!("notifications through 5% loss and jitter: {n}; proxy {stats:?}");
    assert_eq!(central.wait(flow).await, Some(0));
    companion.finish().await.expect("companion finishes");
    t.shutdown().await;
}

fn spawn_companion(dir: &Path, handset: &Handset, radio: &str, n: u32) -> Script {
    Script::spawn(
        "vphone-companion",
        &binary("vphone-companion"),
        &[
            "--config-dir".into(),
            handset.dir.display().to_string(),
            "connect".into(),
            "--headless".into(),
            "--phone".into(),
            "phone-1".into(),
            "--radio".into(),
            radio.into(),
        ],
        dir,
        &dir.join(format!("companion-{n}.log")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_companion_is_reported_within_2_s_and_a_new_one_brings_bluetooth_back() {
    let mut t = TestHost::start().await;
    let dir = t.scratch("bt");
    let bed = Testbed::start(&dir).await;
    let handset = t.enroll("radio-handset", &["phone-1"]);
    let companion = spawn_companion(&dir, &handset, &bed.radio_spec(), 1);
    t.radio_attached("phone-1").await;
    let mut central = bed.central(&stack_spec(&t), &["--hold"]);
    expect_encrypted_read(&mut central).await;

    // SIGKILL: no goodbye from the handset. The phone's stack must learn
    // within 2 s that its connection and its controller are gone.
    let killed = Instant::now();
    companion.signal("KILL");
    let disc = central.expect("disconnected", Duration::from_secs(5)).await;
    let told = disc.at.duration_since(killed);
    assert!(
        told < Duration::from_secs(2),
        "the stack was told after {told:?}"
    );
    assert_eq!(disc.json["reason"], 8, "connection timeout: {}", disc.json);
    // The central gives up on a dropped link (exit 1), as a stack that lost
    // its controller would.
    assert_eq!(central.wait(Duration::from_secs(10)).await, Some(1));
    drop(companion);

    // A new companion lends the same controller; the stack starts again
    // (Android restarts its Bluetooth process after a hardware error) and
    // connects, pairs and reads as before.
    let _companion = spawn_companion(&dir, &handset, &bed.radio_spec(), 2);
    t.radio_attached("phone-1").await;
    let mut central = bed.central(&stack_spec(&t), &[]);
    expect_encrypted_read(&mut central).await;
    assert_eq!(central.wait(Duration::from_secs(10)).await, Some(0));
    assert_eq!(t.host.bluetooth.info("phone-1").radio_losses, 1);
    t.shutdown().await;
}

/// A 5 s blackout, past the QUIC idle timeout (4 s): the phone's stack is
/// told within 2 s that its link and controller are gone; when the network
/// returns, the companion (a real `vphone-companion`, untouched) comes back
/// by itself (it resumes its session on a new connection) and lends its
/// radio again, and the stack connects, pairs and reads as before. Nobody
/// restarts anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_five_second_blackout_the_companion_comes_back_and_bluetooth_works() {
    let mut t = TestHost::start().await;
    let dir = t.scratch("bt");
    let bed = Testbed::start(&dir).await;
    let handset = t.enroll("radio-handset", &["phone-1"]);
    let proxy = FaultProxy::start(handset.host_addr(), 0x5eed_0b5e)
        .await
        .expect("proxy");
    handset.point_at(proxy.addr());
    let _companion = spawn_companion(&dir, &handset, &bed.radio_spec(), 1);
    let said = || std::fs::read_to_string(dir.join("companion-1.log")).unwrap_or_default();
    t.radio_attached("phone-1").await;
    let mut central = bed.central(&stack_spec(&t), &["--hold"]);
    expect_encrypted_read(&mut central).await;

    let dark = Instant::now();
    proxy.blackout(true);
    let disc = central.expect("disconnected", Duration::from_secs(5)).await;
    let told = disc.at.duration_since(dark);
    assert!(
        told < Duration::from_secs(2),
        "the stack was told after {told:?}"
    );
    assert_eq!(central.wait(Duration::from_secs(10)).await, Some(1));
    tokio::time::sleep_until((dark + Duration::from_secs(5)).into()).await;
    proxy.blackout(false);

    eventually(Duration::from_secs(30), || async {
        match t.host.bluetooth.info("phone-1").radio_session {
            Some(_) => Ok(()),
            None => Err(format!(
                "no radio lent again yet; the companion said: {}",
                said()
            )),
        }
    })
    .await
    .expect("the companion comes back by itself and lends its radio again");
    let mut central = bed.central(&stack_spec(&t), &[]);
    expect_encrypted_read(&mut central).await;
    assert_eq!(central.wait(Duration::from_secs(10)).await, Some(0));
    assert!(
        said().contains("the session resumed on a new one"),
        "the companion says what happened: {}",
        said()
    );
    t.shutdown().await;
}

/// Sustained HCI traffic never makes a live radio's heartbeat look missing:
/// heartbeats travel ahead of data on the host's link. (The stack here
/// floods ACL without flow control, faster than bumble's controller takes
/// it; once the handset's path stays full for the command deadline the host
/// may drop the radio for that, with that reason, never for a heartbeat.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_hci_traffic_never_fakes_a_lost_radio() {
    use sensor_proto::netsim::common::ChipKind;
    use sensor_proto::netsim::packet::packet_request::RequestType;
    use sensor_proto::netsim::packet::packet_streamer_client::PacketStreamerClient;
    use sensor_proto::netsim::packet::{HciPacket, PacketRequest};
    use sensor_proto::netsim::startup::{Chip, ChipInfo};

    fn hci(h4: &[u8]) -> PacketRequest {
        PacketRequest {
            request_type: Some(RequestType::HciPacket(HciPacket {
                packet_type: i32::from(h4[0]),
                packet: h4[1..].to_vec().into(),
            })),
        }
    }

    let mut t = TestHost::start().await;
    let dir = t.scratch("bt");
    let bed = Testbed::start(&dir).await;
    let handset = t.enroll("radio-handset", &["phone-1"]);
    let companion = Companion::connect(companion_options(&handset, &bed.radio_spec(), None))
        .await
        .expect("companion connects with its radio");
    t.radio_attached("phone-1").await;

    // A stack of our own on phone-1's attach point that reads everything
    // it is sent, resets its controller, then streams ACL data.
    let addr = t.host.attach.endpoint("phone-1").expect("attach point");
    let mut client = PacketStreamerClient::connect(format!("http://{addr}"))
        .await
        .expect("the attach point accepts connections");
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tx.send(PacketRequest {
        request_type: Some(RequestType::InitialInfo(ChipInfo {
            name: "phone-1".into(),
            chip: Some(Chip {
                kind: ChipKind::Bluetooth as i32,
                ..Chip::default()
            }),
            ..ChipInfo::default()
        })),
    })
    .await
    .unwrap();
    let mut inbound = client
        .stream_packets(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("the stack attaches")
        .into_inner();
    let reader = tokio::spawn(async move {
        let mut n = 0_u64;
        while let Ok(Some(_)) = inbound.message().await {
            n += 1;
        }
        n
    });
    tx.send(hci(&[0x01, 0x03, 0x0C, 0x00])).await.unwrap();
    let mut acl = vec![0x02, 0x01, 0x00, 0x1B, 0x00];
    acl.extend([0xA5; 27]);
    let t0 = Instant::now();
    let mut sent = 0_u64;
    while t0.elapsed() < Duration::from_secs(8) {
        for _ in 0..64 {
            tx.send(hci(&acl)).await.unwrap();
            sent += 1;
        }
        let info = t.host.bluetooth.info("phone-1");
        assert!(
            !info
                .last_radio_loss
                .as_deref()
                .is_some_and(|why| why.contains("heartbeat")),
            "the radio passed for silent after {sent} ACL packets in {:?}: {info:?}",
            t0.elapsed()
        );
    }
    let info = t.host.bluetooth.info("phone-1");
    assert!(
        info.to_radio > 10_000,
        "the stack kept the link busy: {info:?}"
    );
    eprintln!("{sent} ACL packets in 8 s; link: {info:?}");
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    companion.finish().await.expect("companion finishes");
    t.shutdown().await;
}
