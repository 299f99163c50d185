//! The stand-in's Bluetooth chip: what the emulator does with
//! `-packet-streamer-endpoint HOST:PORT`. It opens netsim's
//! `PacketStreamer.StreamPackets` there, introduces a Bluetooth chip named
//! after the AVD, and relays HCI between that stream and the guest's
//! Bluetooth stack.
//!
//! The guest's stack is whatever connects to the stand-in's "virtual HCI"
//! (H4 over TCP on 127.0.0.1; its port is written to `standin-hci.port` in
//! the AVD's directory): in the tests, a bumble host stack. In the real
//! emulator this is the guest kernel's virtio HCI device.

use std::time::Duration;

use bt_raw::h4::{Decoded, H4Decoder, H4Packet, PacketType};
use sensor_proto::netsim::common::ChipKind;
use sensor_proto::netsim::packet::packet_request::RequestType;
use sensor_proto::netsim::packet::packet_response::ResponseType;
use sensor_proto::netsim::packet::packet_streamer_client::PacketStreamerClient;
use sensor_proto::netsim::packet::{HciPacket, PacketRequest};
use sensor_proto::netsim::startup::{Chip, ChipInfo, DeviceInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::log;

/// Serves the guest's HCI on `guest` and relays it to the PacketStreamer
/// at `endpoint` as chip `avd`. Like the emulator's netsim client
/// (`packet_streamer_client.cc`, `PacketStreamTransport.cpp`): when a
/// stream ends it opens a new one at once and introduces the chip again;
/// when it cannot connect it tries four more times, 1, 2, 4 and 8 s apart,
/// then gives up ("Unable to reconnect to packet streamer for device").
pub(crate) async fn run(endpoint: String, avd: String, guest: TcpListener) {
    let (to_chip, mut from_guest) = mpsc::channel::<H4Packet>(1024);
    let (to_guest, from_chip) = mpsc::channel::<H4Packet>(1024);
    tokio::spawn(serve_guest(guest, to_chip, from_chip));
    let mut failures = 0;
    loop {
        match stream(&endpoint, &avd, &mut from_guest, &to_guest).await {
            Ok(()) => {
                log::info(&format!("netsim stream at {endpoint} ended"));
                failures = 0;
            }
            Err(Attach::Refused(e)) => {
                log::warn(&format!("netsim stream at {endpoint}: {e}"));
                failures = 0;
            }
            Err(Attach::Unreachable(e)) => {
                if failures == 4 {
                    log::warn(&format!(
                        "Unable to reconnect to packet streamer for device: {avd} ({e})"
                    ));
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1 << failures)).await;
                failures += 1;
            }
        }
    }
}

/// Why a stream could not go on.
enum Attach {
    /// No connection to the endpoint.
    Unreachable(String),
    /// Connected, then refused or broken.
    Refused(String),
}

/// One `StreamPackets` call, until it ends.
async fn stream(
    endpoint: &str,
    avd: &str,
    from_guest: &mut mpsc::Receiver<H4Packet>,
    to_guest: &mpsc::Sender<H4Packet>,
) -> Result<(), Attach> {
    let mut client = PacketStreamerClient::connect(format!("http://{endpoint}"))
        .await
        .map_err(|e| Attach::Unreachable(format!("cannot connect: {e}")))?;
    let (tx, rx) = mpsc::channel::<PacketRequest>(1024);
    tx.send(PacketRequest {
        request_type: Some(RequestType::InitialInfo(ChipInfo {
            name: avd.to_owned(),
            chip: Some(Chip {
                kind: ChipKind::Bluetooth as i32,
                manufacturer: "Google".to_owned(),
                product_name: "Android Emulator Bluetooth".to_owned(),
                ..Chip::default()
            }),
            device_info: Some(DeviceInfo {
                name: avd.to_owned(),
                kind: "EMULATOR".to_owned(),
                ..DeviceInfo::default()
            }),
            // The emulator leaves it unset (it is not in its sources).
            is_host_reconnect: false,
        })),
    })
    .await
    .map_err(|_| Attach::Refused("request queue closed".to_owned()))?;
    let mut inbound = client
        .stream_packets(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| {
            Attach::Refused(format!(
                "StreamPackets refused: {} ({:?})",
                s.message(),
                s.code()
            ))
        })?
        .into_inner();
    log::info(&format!(
        "Bluetooth chip '{avd}' attached to the packet streamer at {endpoint}"
    ));
    loop {
        tokio::select! {
            pkt = from_guest.recv() => {
                let Some(pkt) = pkt else { return Ok(()) };
                let req = PacketRequest {
                    request_type: Some(RequestType::HciPacket(HciPacket {
                        packet_type: i32::from(pkt.kind().byte()),
                        packet: pkt.body().to_vec().into(),
                    })),
                };
                if tx.send(req).await.is_err() {
                    return Err(Attach::Refused("stream closed".to_owned()));
                }
            }
            msg = inbound.message() => {
                match msg {
                    Ok(Some(resp)) => match resp.response_type {
                        Some(ResponseType::HciPacket(h)) => {
                            let kind = u8::try_from(h.packet_type)
                                .ok()
                                .and_then(|b| PacketType::from_byte(b).ok());
                            match kind.map(|k| H4Packet::from_parts(k, &h.packet)) {
                                Some(Ok(p)) => {
                                    // The guest may be between connections:
                                    // its controller traffic is then lost, as
                                    // on a real bus with no host.
                                    let _ = to_guest.try_send(p);
                                }
                                _ => log::warn("dropped a malformed HCI packet from the packet streamer"),
                            }
                        }
                        Some(ResponseType::Error(e)) => log::warn(&format!("packet streamer error: {e}")),
                        _ => {}
                    },
                    Ok(None) => return Ok(()),
                    Err(s) => return Err(Attach::Refused(format!("{} ({:?})", s.message(), s.code()))),
                }
            }
        }
    }
}

/// Accepts the guest's stack, one connection at a time.
async fn serve_guest(
    listener: TcpListener,
    to_chip: mpsc::Sender<H4Packet>,
    mut from_chip: mpsc::Receiver<H4Packet>,
) {
    loop {
        let Ok((mut conn, peer)) = listener.accept().await else {
            return;
        };
        log::info(&format!("guest Bluetooth stack connected from {peer}"));
        // Whatever the chip sent while no stack listened is stale.
        while from_chip.try_recv().is_ok() {}
        let mut decoder = H4Decoder::new();
        let mut buf = vec![0u8; 4096];
        loop {
            tokio::select! {
                n = conn.read(&mut buf) => {
                    let n = match n {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    decoder.push(&buf[..n]);
                    while let Some(d) = decoder.poll() {
                        match d {
                            Decoded::Packet(p) => {
                                if to_chip.send(p).await.is_err() {
                                    return;
                                }
                            }
                            Decoded::Discarded { bytes, reason } => {
                                log::warn(&format!("guest HCI: dropped {bytes} bytes: {reason}"));
                            }
                        }
                    }
                }
                pkt = from_chip.recv() => {
                    let Some(pkt) = pkt else { return };
                    if conn.write_all(pkt.as_bytes()).await.is_err() {
                        break;
                    }
                }
            }
        }
        log::info("guest Bluetooth stack disconnected");
    }
}
