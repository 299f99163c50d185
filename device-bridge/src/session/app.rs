//! What the app handles (`ClientSession`, `ServerSession`) do on the core:
//! the inboxes, sending on each channel, closing, starting GOPs, stats.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bt_raw::H4Packet;
use bytes::Bytes;
use prost::Message as _;
use sensor_proto::bridge::{
    AudioFrame, Close, CloseReason, ControlMessage, Datagram, InputMessage, SensorSample,
    control_message,
};

use crate::BridgeError;
use crate::wire::{self};

use super::*;

impl Core {
    // ----- app-facing operations --------------------------------------------

    pub(crate) async fn ended(&self) -> SessionEnd {
        wait_end(&self.ended).await
    }

    async fn recv_from<T>(&self, inbox: &Inbox<T>) -> Result<T, BridgeError> {
        inbox.recv(&self.ended, || self.ended_error()).await
    }

    pub(crate) async fn recv_control(&self) -> Result<ControlMessage, BridgeError> {
        self.recv_from(&self.control_in).await
    }

    pub(crate) async fn send_control(&self, msg: control_message::Msg) -> Result<(), BridgeError> {
        use control_message::Msg;
        match (&msg, self.role) {
            (Msg::Hello(_) | Msg::Welcome(_) | Msg::Close(_), _) => {
                return Err(BridgeError::InvalidArgument(
                    "Hello, Welcome and Close are sent by the bridge itself (use close())".into(),
                ));
            }
            (Msg::Pong(_), Role::Server) => {
                return Err(BridgeError::InvalidArgument(
                    "the bridge answers ClockPing itself".into(),
                ));
            }
            _ => {}
        }
        let bytes = wire::frame(&ControlMessage { msg: Some(msg) })?;
        let link = self.wait_link().await?;
        wire::write(&mut *link.control_tx.lock().await, bytes).await?;
        bump(&self.counters.control_sent);
        Ok(())
    }

    pub(crate) async fn close(&self, reason: CloseReason, message: &str) {
        if self.is_ended() {
            return;
        }
        if let Some(link) = self.current_link() {
            let close = ControlMessage {
                msg: Some(control_message::Msg::Close(Close {
                    reason: reason as i32,
                    message: message.to_owned(),
                })),
            };
            if let Ok(bytes) = wire::frame(&close) {
                let mut tx = link.control_tx.lock().await;
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), tx.write_chunk(bytes)).await;
            }
        }
        self.end(SessionEnd {
            code: reason.app_error_code(),
            reason: message.to_owned(),
            by_peer: false,
        });
    }

    pub(crate) async fn recv_sensor(&self) -> Result<SensorSample, BridgeError> {
        self.recv_from(&self.sensors_in).await
    }

    pub(crate) async fn recv_audio(&self) -> Result<AudioFrame, BridgeError> {
        self.recv_from(&self.audio_in).await
    }

    /// Whether this side may send audio: the host its sound to a handset
    /// that asked for playback, the handset its microphone when it said so.
    pub(crate) fn audio_out_allowed(&self) -> bool {
        let a = self.hello.audio.as_ref();
        match self.role {
            Role::Server => a.is_some_and(|a| a.playback),
            Role::Client => a.is_some_and(|a| a.microphone),
        }
    }

    /// Sends one audio frame as a datagram. Dropped (and counted) while
    /// disconnected or when the datagram send buffer is full: late audio is
    /// worth nothing.
    pub(crate) fn send_audio(&self, frame: AudioFrame) -> Result<(), BridgeError> {
        if let Some(end) = self.end_state() {
            return Err(BridgeError::SessionEnded(end));
        }
        if !self.audio_out_allowed() {
            return Err(BridgeError::InvalidArgument(match self.role {
                Role::Server => "the handset did not ask for sound (Hello.audio.playback)".into(),
                Role::Client => "the microphone was not announced in Hello.audio.microphone".into(),
            }));
        }
        let datagram = {
            let mut seqs = lock(&self.sensor_seqs);
            seqs.datagram += 1;
            Datagram {
                seq: seqs.datagram,
                batch: None,
                audio: Some(frame),
            }
        };
        let Some(link) = self.current_link() else {
            bump(&self.counters.audio_dropped);
            return Ok(());
        };
        match link
            .conn
            .send_datagram(Bytes::from(datagram.encode_to_vec()))
        {
            Ok(()) => {
                bump(&self.counters.audio_sent);
                Ok(())
            }
            Err(quinn::SendDatagramError::TooLarge) => Err(BridgeError::InvalidArgument(
                "audio frame too large for a datagram".into(),
            )),
            Err(_) => {
                bump(&self.counters.audio_dropped);
                Ok(())
            }
        }
    }

    /// Handset: numbers the samples and sends them as one datagram.
    pub(crate) fn send_sensors(&self, samples: Vec<SensorSample>) -> Result<(), BridgeError> {
        if let Some(end) = self.end_state() {
            return Err(BridgeError::SessionEnded(end));
        }
        let allowed: Vec<i32> = self.hello.capabilities.iter().map(|c| c.kind).collect();
        if let Some(bad) = samples.iter().find(|s| !allowed.contains(&s.kind)) {
            return Err(BridgeError::InvalidArgument(format!(
                "sensor kind {} is not among the capabilities in Hello",
                bad.kind
            )));
        }
        let count = samples.len() as u64;
        let datagram = {
            let mut seqs = lock(&self.sensor_seqs);
            let mut samples = samples;
            for s in &mut samples {
                let seq = seqs.per_kind.entry(s.kind).or_insert(0);
                *seq += 1;
                s.seq = *seq;
            }
            seqs.datagram += 1;
            Datagram {
                seq: seqs.datagram,
                batch: Some(sensor_proto::bridge::SensorBatch { samples }),
                audio: None,
            }
        };
        let Some(link) = self.current_link() else {
            self.counters
                .sensor_samples_dropped
                .fetch_add(count, Ordering::Relaxed);
            return Ok(());
        };
        let bytes = Bytes::from(datagram.encode_to_vec());
        match link.conn.send_datagram(bytes) {
            Ok(()) => {
                self.counters
                    .sensor_samples_sent
                    .fetch_add(count, Ordering::Relaxed);
                Ok(())
            }
            Err(quinn::SendDatagramError::TooLarge) => Err(BridgeError::InvalidArgument(format!(
                "sensor datagram too large ({} samples); send fewer at once",
                count
            ))),
            Err(_) => {
                self.counters
                    .sensor_samples_dropped
                    .fetch_add(count, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// Handset: sends one input event in order; returns its seq.
    pub(crate) async fn send_input(
        &self,
        event: sensor_proto::bridge::input_message::Event,
    ) -> Result<u64, BridgeError> {
        let link = self.wait_link().await?;
        let Some(input) = &link.input_tx else {
            return Err(BridgeError::Disconnected);
        };
        let mut tx = input.lock().await;
        let seq = self.input_seq.fetch_add(1, Ordering::SeqCst) + 1;
        let bytes = wire::frame(&InputMessage {
            seq,
            event: Some(event),
        })?;
        {
            let mut recent = lock(&self.input_recent);
            if recent.len() == INPUT_REPLAY {
                recent.pop_front();
            }
            recent.push_back(bytes.clone());
        }
        wire::write(&mut tx, bytes).await?;
        bump(&self.counters.input_sent);
        Ok(seq)
    }

    pub(crate) async fn recv_input(&self) -> Result<InputMessage, BridgeError> {
        self.recv_from(&self.input_in).await
    }

    pub(crate) async fn send_hci(&self, packet: H4Packet) -> Result<(), BridgeError> {
        if let Some(end) = self.end_state() {
            return Err(BridgeError::SessionEnded(end));
        }
        let mut end_rx = self.ended.subscribe();
        tokio::select! {
            r = self.hci_out_tx.send(packet) => r.map_err(|_| self.ended_error()),
            _ = end_rx.wait_for(Option::is_some) => Err(self.ended_error()),
        }
    }

    pub(crate) async fn recv_hci(&self) -> Result<H4Packet, BridgeError> {
        self.recv_from(&self.hci_in).await
    }

    pub(crate) async fn recv_video(&self) -> Result<VideoFrame, BridgeError> {
        loop {
            let frame = self.recv_from(&self.video_in).await?;
            if frame.stream.gop_id >= self.newest_gop.load(Ordering::SeqCst) {
                bump(&self.counters.video_frames_received);
                return Ok(frame);
            }
        }
    }

    pub(crate) fn stats(&self) -> SessionStats {
        let c = &self.counters;
        let (hci_sent, hci_unacked) = {
            let tx = lock(&self.hci_tx);
            (tx.last_seq(), tx.unacked_len() as u64)
        };
        let (stale, applied) = {
            let f = lock(&self.sensor_filter);
            (f.stale_count(), f.applied_count())
        };
        let _ = applied;
        SessionStats {
            connections: get(&c.connections),
            control_sent: get(&c.control_sent),
            control_received: get(&c.control_received),
            sensor_samples_sent: get(&c.sensor_samples_sent),
            sensor_samples_received: get(&c.sensor_samples_received),
            sensor_samples_stale: stale,
            sensor_samples_dropped: get(&c.sensor_samples_dropped),
            input_sent: get(&c.input_sent),
            input_received: get(&c.input_received),
            video_frames_sent: get(&c.video_frames_sent),
            video_frames_received: get(&c.video_frames_received),
            video_gops_superseded: get(&c.video_gops_superseded),
            streams_reset_unread: get(&c.streams_reset_before_kind),
            hci_sent,
            hci_resent: get(&c.hci_resent),
            hci_received: get(&c.hci_received),
            hci_duplicates: get(&c.hci_duplicates),
            hci_unacked,
            audio_frames_sent: get(&c.audio_sent),
            audio_frames_received: get(&c.audio_received),
            audio_frames_dropped: get(&c.audio_dropped),
            rtt_us: self.current_link().map_or(0, |l| {
                u64::try_from(l.conn.rtt().as_micros()).unwrap_or(u64::MAX)
            }),
        }
    }
}
