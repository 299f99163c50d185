//! The session's sound and clipboard.
//!
//! * sound: the phone's `streamAudio` (48 kHz mono 16-bit, real time) ->
//!   Opus frames (DTX: silence costs next to nothing) -> datagrams. A frame
//!   that cannot be sent at once is dropped: late sound is worth nothing.
//! * microphone: the handset's Opus frames -> PCM (a lost frame rebuilt
//!   from the next one's FEC or concealed) -> the phone's `injectAudio`,
//!   opened at the first frame. When another client holds the phone's
//!   microphone, the handset hears why in `AudioState`.
//! * clipboard: the phone's `streamClipboard` -> `Clipboard` to the
//!   handset; the handset's `Clipboard` (a paste into its viewer) ->
//!   `setClipboard`. At most [`CLIPBOARD_MAX`] bytes; text never logged.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use device_bridge::ServerSession;
use sensor_proto::bridge::{AudioCodec, AudioFrame, AudioState, Clipboard, control_message};
use sensor_proto::emulator::{AudioFormat, AudioPacket, audio_format};
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use vphone_media::audio::{Content, OpusDecoder, OpusEncoder, SAMPLE_RATE, SAMPLES_PER_MS};

use crate::HostError;
use crate::emu_client::EmulatorClient;
use crate::metrics::Metrics;

use sensor_proto::bridge::CLIPBOARD_MAX_BYTES as CLIPBOARD_MAX;

/// Lost microphone frames rebuilt in a row at most; a longer gap is a
/// silence the handset did not send (DTX) or an outage, left as it is.
const MAX_CONCEALED: u64 = 5;

/// The session's audio settings.
#[derive(Clone, Copy, Debug)]
pub(super) struct AudioSettings {
    pub(super) frame_ms: u32,
    pub(super) bitrate_bps: u32,
}

fn pcm_format() -> AudioFormat {
    AudioFormat {
        sampling_rate: u64::from(SAMPLE_RATE),
        channels: audio_format::Channels::Mono as i32,
        format: audio_format::SampleFormat::AudFmtS16 as i32,
        mode: audio_format::DeliveryMode::ModeRealTime as i32,
    }
}

fn state(
    cfg: AudioSettings,
    playback: bool,
    microphone: bool,
    refused: String,
) -> control_message::Msg {
    control_message::Msg::AudioState(AudioState {
        codec: AudioCodec::Opus as i32,
        sample_rate_hz: SAMPLE_RATE,
        channels: 1,
        frame_ms: cfg.frame_ms,
        playback,
        microphone,
        microphone_refused: refused,
        bitrate_bps: cfg.bitrate_bps,
    })
}

/// Runs both directions of the session's sound until the session ends.
pub(super) async fn audio_loop(
    s: Arc<ServerSession>,
    client: EmulatorClient,
    cfg: AudioSettings,
    metrics: Arc<Metrics>,
    clock_offset_ns: Arc<AtomicI64>,
) {
    let asked = s.hello().audio.clone().unwrap_or_default();
    if !(asked.playback || asked.microphone) {
        return;
    }
    if !asked.codecs.contains(&(AudioCodec::Opus as i32)) {
        tracing::info!("the handset decodes no audio codec the host sends (Opus); no sound");
        let _ = s
            .send_control(state(cfg, false, false, "the handset has no Opus".into()))
            .await;
        return;
    }
    let sound = async {
        if !asked.playback {
            return false;
        }
        match client.audio(pcm_format()).await {
            Ok(stream) => {
                let _ = s
                    .send_control(state(cfg, true, asked.microphone, String::new()))
                    .await;
                sound_loop(&s, stream, cfg, &metrics).await;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "the phone's sound is not available");
                false
            }
        }
    };
    if !asked.playback {
        let _ = s.send_control(state(cfg, false, true, String::new())).await;
    }
    let mic = async {
        if asked.microphone {
            mic_loop(&s, &client, cfg, &metrics, &clock_offset_ns).await;
        }
    };
    tokio::join!(sound, mic);
}

/// Encodes the phone's sound into frames until the stream or session ends.
async fn sound_loop(
    s: &ServerSession,
    mut stream: tonic::Streaming<AudioPacket>,
    cfg: AudioSettings,
    metrics: &Metrics,
) {
    let mut enc = match OpusEncoder::new(cfg.frame_ms, cfg.bitrate_bps, Content::Media) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "no Opus encoder: no sound");
            return;
        }
    };
    let frame = enc.frame_samples();
    let frame_us = u64::from(cfg.frame_ms) * 1000;
    let mut pcm: Vec<i16> = Vec::with_capacity(4 * frame);
    // Capture time of pcm[0], and the seq of the frame it starts.
    let mut t0_us: u64 = 0;
    let mut seq: u64 = 1;
    let mut warned_format = false;
    while let Some(Ok(p)) = stream.next().await {
        if p.format.is_some_and(|f| f != pcm_format()) {
            if !warned_format {
                tracing::warn!(format = ?p.format, "the phone sends sound in another format than asked; dropped");
                warned_format = true;
            }
            continue;
        }
        let samples = p
            .audio
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]));
        if pcm.is_empty() {
            // Frames keep counting through a pause, so the handset sees a
            // gap in seq where sound was missing.
            // (A packet a little late is jitter, not a pause.)
            if t0_us != 0 && p.timestamp > t0_us + 2 * frame_us {
                seq += (p.timestamp - t0_us) / frame_us;
            }
            t0_us = p.timestamp;
        }
        pcm.extend(samples);
        while pcm.len() >= frame {
            match enc.encode(&pcm[..frame]) {
                Ok(Some(payload)) => {
                    let f = AudioFrame {
                        seq,
                        capture_time_us: t0_us,
                        payload,
                    };
                    match s.send_audio(f) {
                        Ok(()) => {
                            metrics.audio_frames_down.inc();
                        }
                        Err(device_bridge::BridgeError::SessionEnded(_)) => return,
                        Err(e) => tracing::debug!(error = %e, "a sound frame was not sent"),
                    };
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "a sound frame did not encode"),
            }
            pcm.drain(..frame);
            seq += 1;
            t0_us += frame_us;
        }
    }
    tracing::info!("the phone's sound stream ended");
}

/// Feeds the handset's microphone into the phone until the session ends.
async fn mic_loop(
    s: &ServerSession,
    client: &EmulatorClient,
    cfg: AudioSettings,
    metrics: &Metrics,
    clock_offset_ns: &AtomicI64,
) {
    let Ok(first) = s.recv_audio().await else {
        return;
    };
    let mut dec = match OpusDecoder::new(cfg.frame_ms) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "no Opus decoder: the microphone stays off");
            return;
        }
    };
    let (tx, mut done) = client.microphone();
    tracing::info!("the handset's microphone feeds the phone");
    let mut last_seq: Option<u64> = None;
    let mut pcm = Vec::with_capacity(dec.frame_samples() * 2);
    let mut next = Some(first);
    loop {
        let f = match next.take() {
            Some(f) => f,
            None => tokio::select! {
                f = s.recv_audio() => match f {
                    Ok(f) => f,
                    Err(_) => return,
                },
                r = &mut done => {
                    let why = match r {
                        Ok(Err(HostError::Conflict(m))) => m,
                        Ok(Err(e)) => e.to_string(),
                        Ok(Ok(())) => "the phone closed its microphone".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    tracing::warn!(%why, "the microphone is off");
                    let _ = s.send_control(state(cfg, s.hello().audio.as_ref().is_some_and(|a| a.playback), false, why)).await;
                    return;
                }
            },
        };
        pcm.clear();
        match last_seq {
            Some(l) if f.seq <= l => continue, // late or repeated: dropped
            Some(l) if f.seq - l - 1 <= MAX_CONCEALED => {
                for k in l + 1..f.seq {
                    // The frame just before this one can come back from its
                    // FEC; earlier ones are concealed.
                    let fec = (k + 1 == f.seq).then_some(&f.payload[..]);
                    let _ = dec.conceal(fec, &mut pcm);
                }
            }
            _ => {}
        }
        last_seq = Some(f.seq);
        if dec.decode(&f.payload, &mut pcm).is_err() {
            tracing::debug!("a microphone frame did not decode; dropped");
            continue;
        }
        // The handset's capture time, placed on the host's clock.
        let offset_us = clock_offset_ns.load(Ordering::Relaxed) / 1000;
        let capture_us = (i128::from(f.capture_time_us) + i128::from(offset_us)
            - (pcm.len() / SAMPLES_PER_MS) as i128 * 1000
            + i128::from(cfg.frame_ms) * 1000)
            .max(0) as u64;
        let bytes: Vec<u8> = pcm.iter().flat_map(|v| v.to_le_bytes()).collect();
        let packet = AudioPacket {
            format: Some(pcm_format()),
            timestamp: capture_us,
            audio: bytes.into(),
        };
        // Real time: a phone that does not take it now loses it.
        if tx.try_send(packet).is_ok() {
            metrics.audio_frames_up.inc();
        }
    }
}

/// Carries the clipboard both ways until the session ends. `from_handset`
/// brings the handset's pastes from the control loop.
pub(super) async fn clipboard_loop(
    s: Arc<ServerSession>,
    client: EmulatorClient,
    mut from_handset: mpsc::Receiver<String>,
) {
    if !s.hello().clipboard {
        return;
    }
    let mut changes = match client.clipboard_changes().await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "the phone's clipboard is not available");
            None
        }
    };
    let mut last_set: Option<String> = None;
    loop {
        tokio::select! {
            c = async { match changes.as_mut() { Some(c) => c.next().await, None => std::future::pending().await } } => {
                let Some(Ok(clip)) = c else {
                    changes = None;
                    continue;
                };
                if clip.text.is_empty() || last_set.as_deref() == Some(clip.text.as_str()) {
                    continue;
                }
                if clip.text.len() > CLIPBOARD_MAX {
                    tracing::info!(bytes = clip.text.len(), max = CLIPBOARD_MAX, "the phone's clipboard is too large to send to the handset");
                    continue;
                }
                let _ = s
                    .send_control(control_message::Msg::Clipboard(Clipboard { text: clip.text }))
                    .await;
            }
            t = from_handset.recv() => {
                let Some(text) = t else { return };
                if text.len() > CLIPBOARD_MAX {
                    tracing::info!(bytes = text.len(), max = CLIPBOARD_MAX, "a pasted text too large for the phone's clipboard was dropped");
                    continue;
                }
                match client.set_clipboard(text.clone()).await {
                    Ok(()) => last_set = Some(text),
                    Err(e) => tracing::warn!(error = %e, "the phone's clipboard was not set"),
                }
            }
        }
    }
}
