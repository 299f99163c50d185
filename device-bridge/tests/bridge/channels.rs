//! Channel semantics: sensors (latest wins), video (GOP reset), input
//! (order under load), hci (both ways), control.

use std::time::Duration;

use bytes::Bytes;
use device_bridge::proto::{
    ActiveSensor, ActiveSensors, AudioAbilities, AudioCodec, AudioFrame, ClockPing, Datagram, Key,
    KeyAction, SensorBatch, SensorKind, SensorSample, VideoFrameHeader, VideoStreamHeader,
    control_message, input_message,
};
use device_bridge::{BridgeError, ClientSession, HandsetIdentity};
use prost::Message as _;

use crate::common::{Host, RawClient, acl, acl_index, within};

fn sample(kind: SensorKind, seq: u64, value: f32) -> SensorSample {
    SensorSample {
        kind: kind as i32,
        seq,
        timestamp_ns: seq * 1000,
        values: vec![value],
    }
}

fn datagram(seq: u64, samples: Vec<SensorSample>) -> Vec<u8> {
    Datagram {
        seq,
        batch: Some(SensorBatch { samples }),
        audio: None,
    }
    .encode_to_vec()
}

#[tokio::test]
async fn stale_sensor_datagrams_are_dropped() -> anyhow::Result<()> {
    let host = Host::start()?;
    let raw = RawClient::connect(&host).await?;
    let session = within(5, "accept", host.server.accept())
        .await?
        .expect("session");
    let accel = SensorKind::Accelerometer;
    let light = SensorKind::Light;
    // Reordered and duplicated datagrams: per sensor, only newer seqs apply.
    raw.send_datagram(datagram(
        1,
        vec![sample(accel, 5, 5.0), sample(light, 1, 1.0)],
    ))?;
    raw.send_datagram(datagram(2, vec![sample(accel, 3, 3.0)]))?; // stale
    raw.send_datagram(datagram(3, vec![sample(accel, 5, 5.5)]))?; // duplicate
    raw.send_datagram(datagram(
        4,
        vec![sample(light, 2, 2.0), sample(accel, 4, 4.0)],
    ))?; // accel stale
    raw.send_datagram(datagram(5, vec![sample(accel, 6, 6.0)]))?;
    let mut applied = Vec::new();
    for _ in 0..4 {
        let s = within(5, "sensor sample", session.recv_sensor()).await??;
        applied.push((s.kind, s.seq));
    }
    assert_eq!(
        applied,
        [
            (accel as i32, 5),
            (light as i32, 1),
            (light as i32, 2),
            (accel as i32, 6)
        ]
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(100), session.recv_sensor())
            .await
            .is_err(),
        "stale samples must never be applied"
    );
    assert_eq!(session.stats().sensor_samples_stale, 3);
    Ok(())
}

#[tokio::test]
async fn client_sensor_samples_are_numbered_and_delivered() -> anyhow::Result<()> {
    let host = Host::start()?;
    let (client, server) = host.enrolled_pair().await?;
    for i in 0..10u64 {
        client.send_sensors(vec![sample(SensorKind::Accelerometer, 0, i as f32)])?;
    }
    let mut last = 0;
    for _ in 0..10 {
        let s = within(5, "sample", server.recv_sensor()).await??;
        assert!(s.seq > last, "never backwards");
        last = s.seq;
    }
    assert_eq!(last, 10);
    // A kind the handset did not advertise is refused locally.
    assert!(matches!(
        client.send_sensors(vec![sample(SensorKind::Gyroscope, 0, 0.0)]),
        Err(BridgeError::InvalidArgument(_))
    ));
    Ok(())
}

fn frame(seq: u64) -> AudioFrame {
    AudioFrame {
        seq,
        capture_time_us: seq * 20_000,
        payload: vec![0xf8, seq as u8, 0x01].into(),
    }
}

#[tokio::test]
async fn audio_flows_both_ways_only_as_hello_asked() -> anyhow::Result<()> {
    let host = Host::start()?;
    // Without Hello.audio: neither side may send any.
    let (client, server) = host.enrolled_pair().await?;
    assert!(matches!(
        client.send_audio(frame(1)),
        Err(BridgeError::InvalidArgument(_))
    ));
    assert!(matches!(
        server.send_audio(frame(1)),
        Err(BridgeError::InvalidArgument(_))
    ));
    drop((client, server));

    let identity = HandsetIdentity::generate()?;
    host.auth.enroll(identity.fingerprint(), "h2");
    let mut cfg = host.client_config(&identity);
    cfg.hello.audio = Some(AudioAbilities {
        playback: true,
        microphone: true,
        codecs: vec![AudioCodec::Opus as i32],
    });
    let client = ClientSession::connect(cfg).await?;
    let server = within(5, "accept", host.server.accept())
        .await?
        .expect("session");
    for i in 1..=5 {
        server.send_audio(frame(i))?;
        client.send_audio(frame(100 + i))?;
    }
    let mut down = Vec::new();
    let mut up = Vec::new();
    for _ in 0..5 {
        down.push(within(5, "sound", client.recv_audio()).await??.seq);
        up.push(within(5, "microphone", server.recv_audio()).await??.seq);
    }
    down.sort_unstable();
    up.sort_unstable();
    assert_eq!(down, [1, 2, 3, 4, 5]);
    assert_eq!(up, [101, 102, 103, 104, 105]);
    assert_eq!(server.stats().audio_frames_sent, 5);
    assert_eq!(client.stats().audio_frames_received, 5);
    Ok(())
}

#[tokio::test]
async fn control_messages_flow_both_ways_and_pings_are_answered() -> anyhow::Result<()> {
    let host = Host::start()?;
    let (client, server) = host.enrolled_pair().await?;
    server
        .send_control(control_message::Msg::ActiveSensors(ActiveSensors {
            sensors: vec![ActiveSensor {
                kind: SensorKind::Light as i32,
                rate_hz: 5.0,
                max_latency_ms: 0,
            }],
            ..ActiveSensors::default()
        }))
        .await?;
    let got = within(5, "control", client.recv_control()).await??;
    assert!(matches!(
        got.msg,
        Some(control_message::Msg::ActiveSensors(_))
    ));
    client
        .send_control(control_message::Msg::Ping(ClockPing {
            id: 7,
            client_send_ns: 1,
        }))
        .await?;
    let pong = within(5, "pong", client.recv_control()).await??;
    match pong.msg {
        Some(control_message::Msg::Pong(p)) => {
            assert_eq!(p.id, 7);
            assert!(p.server_send_ns >= p.server_recv_ns);
        }
        other => panic!("expected a pong, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn hci_packets_flow_both_ways_in_order() -> anyhow::Result<()> {
    let host = Host::start()?;
    let (client, server) = host.enrolled_pair().await?;
    let n = 2000u32;
    let up = {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 0..n {
                client.send_hci(acl(i, 200)).await?;
            }
            anyhow::Ok(())
        })
    };
    for i in 0..n {
        server.send_hci(acl(i, 300)).await?;
    }
    for i in 0..n {
        let p = within(5, "hci to host", server.recv_hci()).await??;
        assert_eq!(acl_index(&p), i);
        let p = within(5, "hci to handset", client.recv_hci()).await??;
        assert_eq!(acl_index(&p), i);
    }
    up.await??;
    Ok(())
}

fn key(i: u64) -> input_message::Event {
    input_message::Event::Key(Key {
        keycode: i32::try_from(i % 1000).unwrap_or(0),
        action: KeyAction::Press as i32,
        timestamp_ns: i,
        ..Key::default()
    })
}

#[tokio::test]
async fn input_order_is_preserved_under_load() -> anyhow::Result<()> {
    let host = Host::start()?;
    let (client, server) = host.enrolled_pair().await?;
    let n = 5000u64;
    // Load on the other channels at the same time.
    let noise = {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 0..500u32 {
                let _ = client.send_sensors(vec![sample(SensorKind::Accelerometer, 0, i as f32)]);
                let _ = client.send_hci(acl(i, 1000)).await;
            }
        })
    };
    let sender = {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 1..=n {
                let seq = client.send_input(key(i)).await?;
                assert_eq!(seq, i);
            }
            anyhow::Ok(())
        })
    };
    for i in 1..=n {
        let msg = within(10, "input", server.recv_input()).await??;
        assert_eq!(msg.seq, i);
        match msg.event {
            Some(input_message::Event::Key(k)) => assert_eq!(k.timestamp_ns, i),
            other => panic!("unexpected event {other:?}"),
        }
    }
    sender.await??;
    noise.await?;
    Ok(())
}

fn stream_header() -> VideoStreamHeader {
    VideoStreamHeader {
        codec: device_bridge::proto::VideoCodec::H264 as i32,
        width: 720,
        height: 1280,
        ..VideoStreamHeader::default()
    }
}

fn frame_header(pts: u64, keyframe: bool) -> VideoFrameHeader {
    VideoFrameHeader {
        pts_us: pts,
        keyframe,
        ..VideoFrameHeader::default()
    }
}

#[tokio::test]
async fn a_lagging_gop_stream_is_reset_when_a_newer_gop_starts() -> anyhow::Result<()> {
    let host = Host::start()?;
    let (client, server) = host.enrolled_pair().await?;
    // GOP 1: the handset does not read, so the writer falls behind and
    // blocks on flow control.
    let mut gop1 = server.start_gop(stream_header()).await?;
    assert_eq!(gop1.gop_id(), 1);
    let big = Bytes::from(vec![0u8; 256 * 1024]);
    let writer = tokio::spawn(async move {
        let mut written = 0u64;
        loop {
            match gop1
                .write_frame(frame_header(written, written == 0), big.clone())
                .await
            {
                Ok(_) => written += 1,
                Err(e) => return (written, e),
            }
        }
    });
    // Let it fill the windows.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !writer.is_finished(),
        "GOP 1 should be stuck behind flow control"
    );
    // GOP 2 starts: GOP 1 is reset and its blocked write fails at once.
    let mut gop2 = server.start_gop(stream_header()).await?;
    let (written, err) = within(5, "GOP 1 writer to be cut off", writer).await??;
    assert!(
        matches!(err, BridgeError::GopSuperseded { gop_id: 1 }),
        "{err}"
    );
    assert!(written > 0);
    let marker = Bytes::from_static(b"\x00\x00\x00\x01fresh");
    let seq2 = gop2
        .write_frame(frame_header(1_000_000, true), marker.clone())
        .await?;
    gop2.finish()?;
    // The handset now reads: it may see some of GOP 1 first, but once GOP 2
    // shows up nothing older follows, and GOP 2 arrives promptly.
    let mut saw_gop2 = false;
    while !saw_gop2 {
        let f = within(5, "fresh video", client.recv_video()).await??;
        if f.stream.gop_id == 2 {
            assert_eq!(f.header.seq, seq2);
            assert!(f.header.keyframe);
            assert_eq!(f.payload, marker);
            saw_gop2 = true;
        } else {
            assert_eq!(f.stream.gop_id, 1);
        }
    }
    assert!(server.stats().video_gops_superseded >= 1);
    // A GOP must start with a keyframe.
    let mut gop3 = server.start_gop(stream_header()).await?;
    assert!(matches!(
        gop3.write_frame(frame_header(0, false), Bytes::new()).await,
        Err(BridgeError::InvalidArgument(_))
    ));
    Ok(())
}

#[tokio::test]
async fn video_frames_arrive_in_order_within_a_gop() -> anyhow::Result<()> {
    let host = Host::start()?;
    let (client, server) = host.enrolled_pair().await?;
    let mut gop = server.start_gop(stream_header()).await?;
    let mut seqs = Vec::new();
    for i in 0..20u64 {
        let payload = Bytes::from(vec![u8::try_from(i).unwrap_or(0); 1000 + i as usize]);
        seqs.push(
            gop.write_frame(frame_header(i * 33_000, i == 0), payload)
                .await?,
        );
    }
    gop.finish()?;
    for (i, seq) in seqs.iter().enumerate() {
        let f = within(5, "frame", client.recv_video()).await??;
        assert_eq!(f.header.seq, *seq);
        assert_eq!(f.header.pts_us, i as u64 * 33_000);
        assert_eq!(f.payload.len(), 1000 + i);
    }
    Ok(())
}
