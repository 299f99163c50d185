//! The netsim `PacketStreamer` server of an in-process host, driven by a real
//! gRPC client: which stacks may attach, and how a stack without a radio is
//! answered (within Android's 2 s command budget). The radio path itself is
//! covered end to end with bumble in `tests/tests/bluetooth.rs`.

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

/// Opens a stream and sends `first`; the server's verdict on it.
async fn attach(host: &Host, first: PacketRequest) -> Result<Stack, tonic::Status> {
    let mut client = PacketStreamerClient::connect(format!("http://{}", host.netsim_addr))
        .await
        .unwrap();
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
async fn unknown_names_and_other_chips_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path()).await;

    let e = attach(&host, chip_info("ghost", ChipKind::Bluetooth))
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(
        e.message()
            .contains("no phone named 'ghost' on this host (phones: phone-1)"),
        "{}",
        e.message()
    );

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
