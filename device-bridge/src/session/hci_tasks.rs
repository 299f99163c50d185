//! The HCI stream of one link: sequence-numbered packets, cumulative
//! acks, a bounded unacknowledged window, replay after a resume.

use std::sync::Arc;

use bt_raw::H4Packet;
use bytes::BytesMut;
use quinn::SendStream;
use sensor_proto::bridge::{AppErrorCode, HciAck, HciMessage, hci_message};

use crate::hci::Incoming;
use crate::wire::{self, FrameReader};

use super::*;

pub(super) async fn hci_reader(core: Arc<Core>, link: Arc<Link>, mut reader: FrameReader) {
    loop {
        loop {
            let msg = match reader.try_next::<HciMessage>() {
                Ok(Some(msg)) => msg,
                Ok(None) => break,
                Err(fail) => return core.read_failed(&link, fail, "hci"),
            };
            match msg.msg {
                Some(hci_message::Msg::Packet(p)) => {
                    let seq = p.seq;
                    let packet = match H4Packet::parse(p.h4) {
                        Ok(packet) => packet,
                        Err(e) => {
                            return core.fail(
                                &link,
                                AppErrorCode::BadH4,
                                format!("hci packet seq {seq} is not a valid H4 packet: {e}"),
                            );
                        }
                    };
                    let verdict = lock(&core.hci_rx).check(seq);
                    match verdict {
                        Err(v) => {
                            return core.fail(
                                &link,
                                AppErrorCode::ProtocolViolation,
                                v.to_string(),
                            );
                        }
                        Ok(Incoming::Duplicate) => bump(&core.counters.hci_duplicates),
                        Ok(Incoming::Deliver) => {
                            let Ok(permit) = core.hci_in.tx.reserve().await else {
                                return;
                            };
                            lock(&core.hci_rx).delivered(seq);
                            permit.send(packet);
                            bump(&core.counters.hci_received);
                            if seq % ACK_EVERY == 0 {
                                core.hci_ack_due.notify_one();
                            }
                        }
                    }
                }
                Some(hci_message::Msg::Ack(ack)) => {
                    let freed = lock(&core.hci_tx).on_ack(ack.acked);
                    match freed {
                        Ok(0) => {}
                        Ok(_) => core.hci_window.notify_one(),
                        Err(v) => {
                            return core.fail(
                                &link,
                                AppErrorCode::ProtocolViolation,
                                v.to_string(),
                            );
                        }
                    }
                }
                None => {
                    return core.fail(
                        &link,
                        AppErrorCode::MalformedMessage,
                        "empty or unknown hci message".into(),
                    );
                }
            }
        }
        if lock(&core.hci_rx).ack_due() {
            core.hci_ack_due.notify_one();
        }
        match reader.fill().await {
            Ok(true) => {}
            Ok(false) => {
                return core.fail(
                    &link,
                    AppErrorCode::ProtocolViolation,
                    format!("the {} finished the hci stream", core.role.peer()),
                );
            }
            Err(fail) => return core.read_failed(&link, fail, "hci"),
        }
    }
}

pub(super) fn window_open(core: &Core) -> bool {
    let tx = lock(&core.hci_tx);
    tx.unacked_len() < MAX_UNACKED_PACKETS && tx.unacked_bytes() < MAX_UNACKED_BYTES
}

pub(super) async fn hci_writer(core: Arc<Core>, link: Arc<Link>, mut send: SendStream) {
    // Only one writer at a time: a previous link's writer must be gone
    // before this one replays the unacknowledged packets.
    let mut out = core.hci_out_rx.lock().await;
    let replay = lock(&core.hci_tx).unacked_messages();
    if !replay.is_empty() {
        tracing::debug!(session = %core.id, packets = replay.len(), "replaying unacknowledged hci packets");
    }
    let mut buf = BytesMut::with_capacity(HCI_BATCH_BYTES * 2);
    for packet in replay {
        wire::put_frame(
            &mut buf,
            &HciMessage {
                msg: Some(hci_message::Msg::Packet(packet)),
            },
        );
        bump(&core.counters.hci_resent);
        if buf.len() >= HCI_BATCH_BYTES && flush(&core, &link, &mut send, &mut buf).await.is_err() {
            return;
        }
    }
    if flush(&core, &link, &mut send, &mut buf).await.is_err() {
        return;
    }
    loop {
        let open = window_open(&core);
        tokio::select! {
            biased;
            packet = out.recv(), if open => {
                let Some(packet) = packet else { return };
                push_packet(&core, &mut buf, packet);
                while buf.len() < HCI_BATCH_BYTES && window_open(&core) {
                    match out.try_recv() {
                        Ok(packet) => push_packet(&core, &mut buf, packet),
                        Err(_) => break,
                    }
                }
            }
            () = core.hci_ack_due.notified() => {}
            () = core.hci_window.notified(), if !open => {}
            _ = link.conn.closed() => return,
        }
        let ack = lock(&core.hci_rx).take_ack();
        if let Some(acked) = ack {
            wire::put_frame(
                &mut buf,
                &HciMessage {
                    msg: Some(hci_message::Msg::Ack(HciAck { acked })),
                },
            );
        }
        if flush(&core, &link, &mut send, &mut buf).await.is_err() {
            return;
        }
    }
}

pub(super) fn push_packet(core: &Core, buf: &mut BytesMut, packet: H4Packet) {
    let msg = lock(&core.hci_tx).push(packet);
    wire::put_frame(
        buf,
        &HciMessage {
            msg: Some(hci_message::Msg::Packet(msg)),
        },
    );
}

pub(super) async fn flush(
    core: &Core,
    link: &Link,
    send: &mut SendStream,
    buf: &mut BytesMut,
) -> Result<(), ()> {
    if buf.is_empty() {
        return Ok(());
    }
    let chunk = buf.split().freeze();
    match send.write_chunk(chunk).await {
        Ok(()) => Ok(()),
        Err(quinn::WriteError::Stopped(code)) => {
            core.fail(
                link,
                AppErrorCode::ProtocolViolation,
                format!("{} stopped the hci stream (code {code})", core.role.peer()),
            );
            Err(())
        }
        Err(_) => Err(()),
    }
}
