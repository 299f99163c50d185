//! Bad input closes the offending session with a specific code while a
//! second session keeps working.

use bytes::{BufMut as _, BytesMut};
use device_bridge::proto::{
    AppErrorCode, AudioFrame, Datagram, HciMessage, HciPacket, Key, SensorBatch, SensorKind,
    SensorSample, StreamKind, hci_message, input_message,
};
use device_bridge::{ClientSession, ServerSession};
use prost::Message as _;

use crate::common::{Host, RawClient, within};

/// Runs `bad` on a raw session next to a healthy one; checks the code the
/// raw session is closed with and that the healthy one still works.
async fn expect_close<F, Fut>(bad: F, expected: AppErrorCode) -> anyhow::Result<()>
where
    F: FnOnce(RawClient) -> Fut,
    Fut: Future<Output = anyhow::Result<RawClient>>,
{
    let host = Host::start()?;
    let (good_client, good_server): (ClientSession, ServerSession) = host.enrolled_pair().await?;
    let raw = RawClient::connect(&host).await?;
    let raw_session = within(5, "accept", host.server.accept())
        .await?
        .expect("session");
    assert_eq!(raw_session.id(), raw.welcome.session_id);

    let raw = bad(raw).await?;
    let code = raw.closed_code().await?;
    assert_eq!(
        AppErrorCode::from_code(code),
        Some(expected),
        "closed with code {code}"
    );
    let end = within(5, "server session end", raw_session.ended()).await?;
    assert_eq!(end.code, expected);
    assert!(!end.by_peer);

    // The other session is unaffected.
    let seq = good_client
        .send_input(input_message::Event::Key(Key::default()))
        .await?;
    let got = within(5, "input on the healthy session", good_server.recv_input()).await??;
    assert_eq!(got.seq, seq);
    good_server.send_hci(crate::common::acl(1, 10)).await?;
    within(5, "hci on the healthy session", good_client.recv_hci()).await??;
    assert!(good_client.is_connected());
    assert_eq!(host.server.session_count(), 1);
    Ok(())
}

#[tokio::test]
async fn oversized_control_message_is_message_too_large() -> anyhow::Result<()> {
    expect_close(
        |mut raw| async move {
            let mut buf = BytesMut::new();
            prost::encoding::encode_varint(70_000, &mut buf);
            buf.put_bytes(0, 100);
            raw.control.write_all(&buf).await?;
            Ok(raw)
        },
        AppErrorCode::MessageTooLarge,
    )
    .await
}

#[tokio::test]
async fn malformed_protobuf_is_malformed_message() -> anyhow::Result<()> {
    expect_close(
        |mut raw| async move {
            // A frame of 3 bytes that are not a valid ControlMessage.
            raw.control.write_all(&[3, 0xff, 0xff, 0xff]).await?;
            Ok(raw)
        },
        AppErrorCode::MalformedMessage,
    )
    .await
}

#[tokio::test]
async fn h4_packet_with_wrong_length_is_bad_h4() -> anyhow::Result<()> {
    expect_close(
        |raw| async move {
            let mut raw = raw;
            let (mut send, recv) = raw.conn.open_bi().await?;
            let mut buf = vec![StreamKind::Hci.to_byte()];
            let msg = HciMessage {
                msg: Some(hci_message::Msg::Packet(HciPacket {
                    seq: 1,
                    // Event header says 5 parameter bytes, 1 present.
                    h4: vec![0x04, 0x0e, 0x05, 0x01].into(),
                })),
            };
            buf.extend(msg.encode_length_delimited_to_vec());
            send.write_all(&buf).await?;
            raw.keep_send.push(send);
            raw.keep_recv.push(recv);
            Ok(raw)
        },
        AppErrorCode::BadH4,
    )
    .await
}

#[tokio::test]
async fn datagram_for_unknown_sensor_is_unknown_sensor() -> anyhow::Result<()> {
    expect_close(
        |raw| async move {
            let d = Datagram {
                seq: 1,
                batch: Some(SensorBatch {
                    samples: vec![SensorSample {
                        kind: 99,
                        seq: 1,
                        ..SensorSample::default()
                    }],
                }),
                audio: None,
            };
            raw.send_datagram(d.encode_to_vec())?;
            Ok(raw)
        },
        AppErrorCode::UnknownSensor,
    )
    .await
}

#[tokio::test]
async fn datagram_for_unadvertised_sensor_is_unknown_sensor() -> anyhow::Result<()> {
    expect_close(
        |raw| async move {
            let d = Datagram {
                seq: 1,
                batch: Some(SensorBatch {
                    samples: vec![SensorSample {
                        kind: SensorKind::HeartRate as i32,
                        seq: 1,
                        ..SensorSample::default()
                    }],
                }),
                audio: None,
            };
            raw.send_datagram(d.encode_to_vec())?;
            Ok(raw)
        },
        AppErrorCode::UnknownSensor,
    )
    .await
}

#[tokio::test]
async fn microphone_audio_not_announced_is_a_protocol_violation() -> anyhow::Result<()> {
    expect_close(
        |raw| async move {
            let d = Datagram {
                seq: 1,
                batch: None,
                audio: Some(AudioFrame {
                    seq: 1,
                    capture_time_us: 1,
                    payload: vec![0xf8, 0xff, 0xfe].into(),
                }),
            };
            raw.send_datagram(d.encode_to_vec())?;
            Ok(raw)
        },
        AppErrorCode::ProtocolViolation,
    )
    .await
}

#[tokio::test]
async fn malformed_datagram_is_malformed_message() -> anyhow::Result<()> {
    expect_close(
        |raw| async move {
            raw.send_datagram(vec![0xff, 0xff, 0xff])?;
            Ok(raw)
        },
        AppErrorCode::MalformedMessage,
    )
    .await
}

#[tokio::test]
async fn video_stream_from_the_handset_is_wrong_stream_direction() -> anyhow::Result<()> {
    expect_close(
        |raw| async move {
            let mut send = raw.conn.open_uni().await?;
            send.write_all(&[StreamKind::Video.to_byte()]).await?;
            let mut raw = raw;
            raw.keep_send.push(send);
            Ok(raw)
        },
        AppErrorCode::WrongStreamDirection,
    )
    .await
}

#[tokio::test]
async fn bidirectional_input_stream_is_wrong_stream_direction() -> anyhow::Result<()> {
    expect_close(
        |raw| async move {
            let mut raw = raw;
            let (mut send, recv) = raw.conn.open_bi().await?;
            send.write_all(&[StreamKind::Input.to_byte()]).await?;
            raw.keep_send.push(send);
            raw.keep_recv.push(recv);
            Ok(raw)
        },
        AppErrorCode::WrongStreamDirection,
    )
    .await
}

#[tokio::test]
async fn unknown_stream_kind_is_protocol_violation() -> anyhow::Result<()> {
    expect_close(
        |raw| async move {
            let mut send = raw.conn.open_uni().await?;
            send.write_all(&[77]).await?;
            let mut raw = raw;
            raw.keep_send.push(send);
            Ok(raw)
        },
        AppErrorCode::ProtocolViolation,
    )
    .await
}

#[tokio::test]
async fn a_second_hello_is_protocol_violation() -> anyhow::Result<()> {
    expect_close(
        |mut raw| async move {
            let msg = device_bridge::proto::ControlMessage {
                msg: Some(device_bridge::proto::control_message::Msg::Hello(
                    crate::common::hello("again"),
                )),
            };
            raw.control
                .write_all(&msg.encode_length_delimited_to_vec())
                .await?;
            Ok(raw)
        },
        AppErrorCode::ProtocolViolation,
    )
    .await
}

/// A stream the peer resets before its first byte carried nothing: it is
/// no protocol error (under loss a superseded video stream's reset can
/// overtake its lost first packet, which used to close the whole session),
/// and the session goes on.
#[tokio::test]
async fn a_stream_reset_before_its_kind_byte_is_ignored() -> anyhow::Result<()> {
    let host = Host::start()?;
    let raw = RawClient::connect(&host).await?;
    let session = within(5, "accept", host.server.accept())
        .await?
        .expect("session");
    for _ in 0..3 {
        let mut uni = raw.conn.open_uni().await?;
        uni.reset(quinn::VarInt::from_u32(0))?;
        let (mut send, _recv) = raw.conn.open_bi().await?;
        send.reset(quinn::VarInt::from_u32(0))?;
    }
    // Then real input on a proper stream still arrives.
    let mut input = raw.conn.open_uni().await?;
    let mut buf = BytesMut::new();
    buf.put_u8(StreamKind::Input.to_byte());
    device_bridge::proto::InputMessage {
        seq: 1,
        event: Some(input_message::Event::Key(Key::default())),
    }
    .encode_length_delimited(&mut buf)?;
    input.write_all(&buf).await?;
    let got = within(5, "input after the resets", session.recv_input()).await??;
    assert_eq!(got.seq, 1);
    assert!(
        raw.conn.close_reason().is_none(),
        "the host kept the session"
    );
    let stats = session.stats();
    assert_eq!(stats.streams_reset_unread, 6, "{stats:?}");
    Ok(())
}
