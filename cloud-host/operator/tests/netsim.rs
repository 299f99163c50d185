//! The netsim `PacketStreamer` attach points of an in-process host, driven
//! by a real gRPC client: which stacks may attach as
//! which phone, and how a stack without a radio is answered (within
//! Android's 2 s command budget). The radio path itself is covered end to
//! end with bumble in `tests/tests/bluetooth.rs`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use sensor_proto::netsim::common::ChipKind;
use sensor_proto::netsim::packet::packet_request::RequestType;
use sensor_proto::netsim::packet::packet_response::ResponseType;
use sensor_proto::netsim::packet::packet_streamer_client::PacketStreamerClient;
use sensor_proto::netsim::packet::{HciPacket, PacketRequest, PacketResponse};
use sensor_proto::netsim::startup::{Chip, ChipInfo};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Streaming};
use vphone_operator::ServedHost as Host;

async fn start(dir: &Path) -> Host {
    let host = common::start_host(dir).await;
    host.phones
        .wait_running("phone-1", Duration::from_secs(20))
        .await
        .unwrap();
    host
}

fn chip_info(name: &str, kind: ChipKind) -> PacketRequest {
    PacketRequest {
        request_type: Some(RequestType::InitialInfo(ChipInfo {
            name: name.to_owned(),
            chip: Some(Chip {
                kind: kind as i32,
                ..Chip::default()
            }),
            ..ChipInfo::default()
        })),
    }
}

fn hci(h4: &[u8]) -> PacketRequest {
    PacketRequest {
        request_type: Some(RequestType::HciPacket(HciPacket {
            packet_type: i32::from(h4[0]),
            packet: h4[1..].to_vec().into(),
        })),
    }
}

struct Stack {
    tx: mpsc::Sender<PacketRequest>,
    rx: Streaming<PacketResponse>,
}

/// A client on `phone`'s attach point.
async fn attach_point(host: &Host, phone: &str) -> PacketStreamerClient<Channel> {
    let addr = host
        .attach
        .endpoint(phone)
        .expect("the phone has an attach point");
    PacketStreamerClient::connect(format!("http://{addr}"))
        .await
        .expect("the phone's attach point accepts connections")
}

/// Opens a stream on `phone-1`'s attach point and sends `first`; the
/// server's verdict on it.
async fn attach(host: &Host, first: PacketRequest) -> Result<Stack, tonic::Status> {
    attach_to(attach_point(host, "phone-1").await, first).await
}

/// Opens a stream with `client` and sends `first`.
async fn attach_to(
    mut client: PacketStreamerClient<Channel>,
    first: PacketRequest,
) -> Result<Stack, tonic::Status> {
    let (tx, rx) = mpsc::channel(16);
    tx.send(first).await.unwrap();
    let rx = client
        .stream_packets(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(Stack { tx, rx })
}

async fn next(stack: &mut Stack) -> ResponseType {
    tokio::time::timeout(Duration::from_secs(5), stack.rx.message())
        .await
        .expect("a response within 5 s")
        .expect("no stream error")
        .expect("stream open")
        .response_type
        .expect("a response type")
}

#[tokio::test]
async fn other_chips_and_packets_before_chip_info_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path()).await;

    let e = attach(&host, chip_info("phone-1", ChipKind::Wifi))
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    assert!(e.message().contains("chip kind WIFI"), "{}", e.message());

    let e = attach(&host, hci(&[0x01, 0x03, 0x0C, 0x00]))
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("initial_info"), "{}", e.message());
    host.shutdown().await;
}

/// The attach point decides the phone, not the name a stack claims: a
/// stranger naming `phone-1` on another phone's attach point becomes that
/// phone's stack, and `phone-1`'s own stack still attaches to `phone-1`.
#[tokio::test]
async fn a_stack_claiming_another_phones_name_cannot_take_its_radio() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path()).await;
    host.phones
        .create(host_core::phones::PhoneSpec {
            name: "phone-2".into(),
            backend: host_core::registry::Backend::Sim,
            display: host_core::phones::DEFAULT_DISPLAY,
            avd: None,
            start: true,
        })
        .await
        .unwrap();
    host.phones
        .wait_running("phone-2", Duration::from_secs(20))
        .await
        .unwrap();
    let stranger = attach_to(
        attach_point(&host, "phone-2").await,
        chip_info("phone-1", ChipKind::Bluetooth),
    )
    .await
    .expect("phone-2's attach point admits a stack, as phone-2's");
    let own = attach(&host, chip_info("phone-1", ChipKind::Bluetooth))
        .await
        .expect("phone-1's own stack attaches");
    let deadline = Instant::now() + Duration::from_secs(5);
    while (host.bluetooth.info("phone-1").stack.is_none()
        || host.bluetooth.info("phone-2").stack.is_none())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (one, two) = (
        host.bluetooth.info("phone-1").stack,
        host.bluetooth.info("phone-2").stack,
    );
    assert!(
        one.is_some() && two.is_some(),
        "each phone has its own stack: {one:?} {two:?}"
    );
    // A deleted phone's attach point is gone with it.
    drop(stranger);
    let gone = host.attach.endpoint("phone-2").unwrap();
    host.phones.delete("phone-2", true).await.unwrap();
    assert_eq!(host.attach.endpoint("phone-2"), None);
    assert!(
        tokio::net::TcpStream::connect(gone).await.is_err(),
        "nothing listens on a deleted phone's attach point"
    );
    drop(own);
    host.shutdown().await;
}

/// No TCP listener unless configured; the development listener, when on,
/// never tells a client which phones exist.
#[tokio::test]
async fn the_development_listener_is_off_by_default_and_says_nothing_about_other_phones() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path()).await;
    assert_eq!(host.netsim_addr, None);
    host.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = host_core::config::HostConfig::loopback(dir.path().to_path_buf());
    cfg.netsim_listen = Some("127.0.0.2:0".parse().unwrap());
    let listeners = host_core::daemon::Listeners::bind(&cfg).await.unwrap();
    let host = Host::start(&cfg, listeners, sim_phone::SimKind::default().backends())
        .await
        .unwrap();
    let addr = host.netsim_addr.expect("the development listener is on");
    let client = PacketStreamerClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let e = attach_to(client, chip_info("ghost", ChipKind::Bluetooth))
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("'ghost'"), "{}", e.message());
    assert!(
        !e.message().contains("phone-1"),
        "a refusal must not list the phones: {}",
        e.message()
    );
    host.shutdown().await;
}

/// A process of another local user is refused at a phone's attach point,
/// with nothing about the phone or its link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_local_user_is_refused_at_an_attach_point() {
    if !vphone_testkit::tools::require_root("running a client as another user") {
        return;
    }
    let python = std::env::var("VPHONE_PYTHON")
        .unwrap_or_else(|_| format!("{}/../../.venv/bin/python", env!("CARGO_MANIFEST_DIR")));
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path()).await;
    let addr = host.attach.endpoint("phone-1").unwrap();
    // bumble's netsim stubs, a real gRPC client, run as `nobody`.
    let probe = format!(
        r#"
import asyncio, grpc
from bumble.transport.grpc_protobuf.netsim.packet_streamer_pb2_grpc import PacketStreamerStub
from bumble.transport.grpc_protobuf.netsim.packet_streamer_pb2 import PacketRequest
from bumble.transport.grpc_protobuf.netsim.startup_pb2 import ChipInfo, Chip
from bumble.transport.grpc_protobuf.netsim.common_pb2 import ChipKind
async def main():
    async with grpc.aio.insecure_channel("{addr}") as ch:
        call = PacketStreamerStub(ch).StreamPackets()
        await call.write(PacketRequest(initial_info=ChipInfo(name="phone-1", chip=Chip(kind=ChipKind.BLUETOOTH))))
        try:
            await call.read()
            print("attached")
        except grpc.aio.AioRpcError as e:
            print(e.code().name, e.details())
asyncio.run(main())
"#
    );
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &python,
            "-c",
            &probe,
        ])
        .env("HOME", "/tmp")
        .output()
        .expect("setpriv");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("PERMISSION_DENIED only the host's own phone processes"),
        "nobody must be refused: {said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(host.bluetooth.info("phone-1").stack.is_none());
    host.shutdown().await;
}

#[tokio::test]
async fn one_stack_per_phone_and_the_next_one_after_it_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path()).await;
    let first = attach(&host, chip_info("phone-1", ChipKind::Bluetooth))
        .await
        .unwrap();
    // The attach is processed by the link actor; give it a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let e = attach(&host, chip_info("phone-1", ChipKind::Bluetooth))
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(
        e.message()
            .contains("phone 'phone-1' already has a Bluetooth stack attached"),
        "{}",
        e.message()
    );
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok(s) = attach(&host, chip_info("phone-1", ChipKind::Bluetooth)).await {
            again = Some(s);
            break;
        }
    }
    assert!(again.is_some(), "a new stack attaches once the first left");
    host.shutdown().await;
}

#[tokio::test]
async fn without_a_radio_commands_fail_fast_and_bad_packets_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path()).await;
    let mut stack = attach(&host, chip_info("phone-1", ChipKind::Bluetooth))
        .await
        .unwrap();

    // A packet whose length field lies: an error response, the stream stays.
    stack.tx.send(hci(&[0x01, 0x03, 0x0C, 0x05])).await.unwrap();
    match next(&mut stack).await {
        ResponseType::Error(e) => assert!(e.starts_with("HCI packet rejected"), "{e}"),
        other => panic!("expected an error, got {other:?}"),
    }

    // HCI_Reset with no handset radio: refused with Hardware Failure (0x03)
    // in a Command Complete for Reset, well inside Android's 2 s.
    let t0 = Instant::now();
    stack.tx.send(hci(&[0x01, 0x03, 0x0C, 0x00])).await.unwrap();
    let r = next(&mut stack).await;
    let waited = t0.elapsed();
    let ResponseType::HciPacket(p) = r else {
        panic!("expected an HCI packet, got {r:?}")
    };
    assert_eq!(p.packet_type, 4);
    assert_eq!(&p.packet[..], &[0x0E, 0x04, 0x01, 0x03, 0x0C, 0x03]);
    assert!(
        waited >= Duration::from_millis(1000) && waited < Duration::from_millis(2000),
        "the command waited {waited:?} for a radio before the refusal"
    );
    assert_eq!(host.bluetooth.info("phone-1").answered_locally, 1);

    // Data without a radio is dropped and counted, not answered.
    stack
        .tx
        .send(hci(&[0x02, 0x40, 0x00, 0x01, 0x00, 0xAA]))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while host.bluetooth.info("phone-1").dropped == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(host.bluetooth.info("phone-1").dropped, 1);
    host.shutdown().await;
}

/// A stack that stops reading (a hung guest, a stack that shrinks its
/// window to nothing) is dropped within a bound and counted, and the phone
/// takes its next stack at once: it never holds the phone.
#[tokio::test]
async fn a_stack_that_stops_reading_is_dropped_and_the_phone_takes_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path()).await;
    // The stack advertises a small receive window, as a stingy or hung
    // guest's transport does.
    let addr = host.attach.endpoint("phone-1").unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .initial_stream_window_size(Some(8 * 1024))
        .initial_connection_window_size(Some(8 * 1024))
        .connect()
        .await
        .unwrap();
    let Stack { tx, rx: mut stuck } = attach_to(
        PacketStreamerClient::new(channel),
        chip_info("phone-1", ChipKind::Bluetooth),
    )
    .await
    .unwrap();
    // With no radio, the commands past the 16 that wait for one are
    // refused at once: a stack that sends them and never reads its answers
    // fills its queue.
    let flood = tokio::spawn(async move {
        for _ in 0..40_000 {
            // HCI_Read_Local_Version_Information
            if tx.send(hci(&[0x01, 0x01, 0x10, 0x00])).await.is_err() {
                break;
            }
        }
        tx
    });
    let t0 = Instant::now();
    while host.bluetooth.info("phone-1").stacks_dropped == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the stack that stopped reading still holds phone-1 after 20 s: {:?}",
            host.bluetooth.info("phone-1")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let info = host.bluetooth.info("phone-1");
    assert_eq!(info.stacks_dropped, 1, "{info:?}");
    assert_eq!(info.stack, None, "{info:?}");

    // The next stack attaches at once and is answered as usual.
    let mut next_stack = tokio::time::timeout(
        Duration::from_secs(5),
        attach(&host, chip_info("phone-1", ChipKind::Bluetooth)),
    )
    .await
    .expect("the next stack's attach is not held up")
    .expect("the next stack attaches");
    next_stack
        .tx
        .send(hci(&[0x01, 0x03, 0x0C, 0x00]))
        .await
        .unwrap();
    let ResponseType::HciPacket(p) = next(&mut next_stack).await else {
        panic!("expected an HCI packet")
    };
    assert_eq!(&p.packet[..], &[0x0E, 0x04, 0x01, 0x03, 0x0C, 0x03]);

    // When the dropped stack reads again it learns why, after at most what
    // was already queued for it.
    let mut read = 0_u32;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), stuck.message()).await {
            Ok(Ok(Some(_))) => read += 1,
            Ok(Ok(None)) => panic!("the dropped stack's stream ended without a status"),
            Ok(Err(status)) => break status,
            Err(_) => panic!("the dropped stack's stream neither ended nor said why"),
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("stopped reading"),
        "{}",
        status.message()
    );
    assert!(
        read > 0,
        "what was queued before the drop is still delivered"
    );
    flood.abort();
    host.shutdown().await;
}
