//! The tasks that serve one connection (link): the control stream,
//! datagrams (sensors, audio), accepting streams by their kind byte, input.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prost::Message as _;
use sensor_proto::bridge::{
    AppErrorCode, ClockPong, CloseReason, ControlMessage, Datagram, InputMessage, StreamKind,
    control_message,
};

use crate::sensors::SampleVerdict;
use crate::wire::{self, FrameReader, ReadFail};

use super::video::gop_reader;
use super::*;

pub(super) async fn control_reader(core: Arc<Core>, link: Arc<Link>, mut reader: FrameReader) {
    use control_message::Msg;
    loop {
        let msg = match reader.next::<ControlMessage>().await {
            Ok(Some(msg)) => msg,
            Ok(None) => return,
            Err(fail) => return core.read_failed(&link, fail, "control"),
        };
        match msg.msg {
            None => {
                tracing::debug!(session = %core.id, "ignoring an empty or unknown control message")
            }
            Some(Msg::Hello(_) | Msg::Welcome(_)) => {
                return core.fail(
                    &link,
                    AppErrorCode::ProtocolViolation,
                    "Hello/Welcome on an established session".into(),
                );
            }
            Some(Msg::Close(close)) => {
                let reason =
                    CloseReason::try_from(close.reason).unwrap_or(CloseReason::Unspecified);
                core.end(SessionEnd {
                    code: reason.app_error_code(),
                    reason: close.message,
                    by_peer: true,
                });
                return;
            }
            Some(Msg::Ping(ping)) if core.role == Role::Server => {
                let recv_ns = crate::util::unix_nanos();
                let pong = ControlMessage {
                    msg: Some(Msg::Pong(ClockPong {
                        id: ping.id,
                        client_send_ns: ping.client_send_ns,
                        server_recv_ns: recv_ns,
                        server_send_ns: crate::util::unix_nanos(),
                    })),
                };
                if let Ok(bytes) = wire::frame(&pong) {
                    let _ = wire::write(&mut *link.control_tx.lock().await, bytes).await;
                }
            }
            Some(other) => {
                bump(&core.counters.control_received);
                if core
                    .control_in
                    .tx
                    .send(ControlMessage { msg: Some(other) })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

pub(super) async fn datagram_reader(core: Arc<Core>, link: Arc<Link>) {
    // Sound flows to a handset that asked for playback; a microphone to a
    // host whose handset announced one.
    let audio_in_allowed = {
        let a = core.hello.audio.as_ref();
        match core.role {
            Role::Server => a.is_some_and(|a| a.microphone),
            Role::Client => a.is_some_and(|a| a.playback),
        }
    };
    loop {
        let Ok(datagram) = link.conn.read_datagram().await else {
            return;
        };
        let datagram = match Datagram::decode(datagram) {
            Ok(d) => d,
            Err(e) => {
                return core.fail(
                    &link,
                    AppErrorCode::MalformedMessage,
                    format!("datagram: {e}"),
                );
            }
        };
        match (datagram.batch, datagram.audio) {
            (Some(_), Some(_)) => {
                return core.fail(
                    &link,
                    AppErrorCode::ProtocolViolation,
                    "a datagram holds sensor samples or an audio frame, not both".into(),
                );
            }
            (None, Some(frame)) => {
                if !audio_in_allowed {
                    return core.fail(
                        &link,
                        AppErrorCode::ProtocolViolation,
                        format!(
                            "{} sent audio that was not asked for in Hello.audio",
                            core.role.peer()
                        ),
                    );
                }
                bump(&core.counters.audio_received);
                if core.audio_in.tx.try_send(frame).is_err() {
                    bump(&core.counters.audio_dropped);
                }
            }
            (Some(_), None) if core.role == Role::Client => {
                return core.fail(
                    &link,
                    AppErrorCode::WrongStreamDirection,
                    "the host sent sensor samples; they flow from handset to host only".into(),
                );
            }
            (batch, None) => {
                for sample in batch.map(|b| b.samples).unwrap_or_default() {
                    let verdict = lock(&core.sensor_filter).check(&sample);
                    match verdict {
                        Err(unknown) => {
                            return core.fail(
                                &link,
                                AppErrorCode::UnknownSensor,
                                unknown.to_string(),
                            );
                        }
                        Ok(SampleVerdict::Stale) => {}
                        Ok(SampleVerdict::Apply) => {
                            bump(&core.counters.sensor_samples_received);
                            if core.sensors_in.tx.try_send(sample).is_err() {
                                bump(&core.counters.sensor_samples_dropped);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Reads the kind byte of a newly accepted stream.
pub(super) async fn stream_kind(
    core: &Core,
    link: &Link,
    reader: &mut FrameReader,
) -> Option<Result<StreamKind, u8>> {
    match reader.raw(1).await {
        Ok(Some(byte)) => {
            let b = byte.first().copied().unwrap_or(0);
            Some(StreamKind::from_byte(b).ok_or(b))
        }
        Ok(None) => None,
        // A stream reset before its first byte carried nothing. Under loss
        // this is ordinary: the host resets a superseded GOP's stream, and
        // that RESET_STREAM can overtake the stream's lost first packet.
        // It is no protocol error; there is simply nothing to read.
        Err(ReadFail::Reset(code)) => {
            bump(&core.counters.streams_reset_before_kind);
            tracing::debug!(
                session = %core.id,
                code,
                "{} reset a new stream before its kind byte; ignored",
                core.role.peer()
            );
            None
        }
        Err(fail) => {
            core.read_failed(link, fail, "new stream");
            None
        }
    }
}

/// Closes the link for a stream this role never accepts: a known kind in
/// the wrong direction, or an unknown kind byte.
fn refuse_stream(core: &Core, link: &Link, kind: Result<StreamKind, u8>, shape: &str) {
    match kind {
        Ok(kind) => core.fail(
            link,
            AppErrorCode::WrongStreamDirection,
            format!(
                "the {} opened a {shape} {kind:?} stream, which this side never accepts",
                core.role.peer()
            ),
        ),
        Err(byte) => core.fail(
            link,
            AppErrorCode::ProtocolViolation,
            format!("stream starts with unknown kind byte {byte}"),
        ),
    }
}

pub(super) async fn uni_acceptor(core: Arc<Core>, link: Arc<Link>) {
    while let Ok(recv) = link.conn.accept_uni().await {
        let (core, task_link) = (core.clone(), link.clone());
        link.spawn(async move {
            let link = task_link;
            let mut reader = FrameReader::new(recv);
            let Some(kind) = stream_kind(&core, &link, &mut reader).await else {
                return;
            };
            match (core.role, kind) {
                (Role::Server, Ok(StreamKind::Input)) => {
                    if link.has_input.swap(true, Ordering::SeqCst) {
                        return core.fail(
                            &link,
                            AppErrorCode::ProtocolViolation,
                            "a second input stream on one connection".into(),
                        );
                    }
                    input_reader(core, link, reader).await;
                }
                (Role::Client, Ok(StreamKind::Video)) => gop_reader(core, link, reader).await,
                (_, kind) => refuse_stream(&core, &link, kind, "unidirectional"),
            }
        });
    }
}

pub(super) async fn bidi_acceptor(core: Arc<Core>, link: Arc<Link>) {
    while let Ok((send, recv)) = link.conn.accept_bi().await {
        let (core, task_link) = (core.clone(), link.clone());
        link.spawn(async move {
            let link = task_link;
            let mut reader = FrameReader::new(recv);
            let Some(kind) = stream_kind(&core, &link, &mut reader).await else {
                return;
            };
            match (core.role, kind) {
                (Role::Server, Ok(StreamKind::Hci)) => {
                    if link.has_hci.swap(true, Ordering::SeqCst) {
                        return core.fail(
                            &link,
                            AppErrorCode::ProtocolViolation,
                            "a second hci stream on one connection".into(),
                        );
                    }
                    link.spawn(hci_writer(core.clone(), link.clone(), send));
                    hci_reader(core, link, reader).await;
                }
                (_, kind) => refuse_stream(&core, &link, kind, "bidirectional"),
            }
        });
    }
}

pub(super) async fn input_reader(core: Arc<Core>, link: Arc<Link>, mut reader: FrameReader) {
    loop {
        let msg = match reader.next::<InputMessage>().await {
            Ok(Some(msg)) => msg,
            Ok(None) => return,
            Err(fail) => return core.read_failed(&link, fail, "input"),
        };
        if msg.seq <= core.input_seq.load(Ordering::SeqCst) {
            continue;
        }
        core.input_seq.store(msg.seq, Ordering::SeqCst);
        bump(&core.counters.input_received);
        if core.input_in.tx.send(msg).await.is_err() {
            return;
        }
    }
}
