//! The system's sound devices through cpal (ALSA on Linux): the speaker the
//! phone's sound plays on, the microphone `--mic default` records.
//! Streams are opened at 48 kHz (ALSA's default device converts) in the
//! device's own channel count; mono is copied to every channel, and the
//! channels of a recording are averaged.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cpal::traits::{DeviceTrait as _, HostTrait as _, StreamTrait as _};
use vphone_media::audio::SAMPLE_RATE;

use crate::ClientError;

fn err(what: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Audio(format!("{what}: {e}"))
}

/// An open device stream; sound flows while it lives. Not `Send`: keep it
/// on the thread that opened it.
pub(super) struct Open(#[allow(dead_code)] cpal::Stream);

impl std::fmt::Debug for Open {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Open(cpal stream)")
    }
}

/// Whether this machine has a sound card at all (Linux: `/proc/asound`),
/// asked before ALSA, which prints its complaints to stderr otherwise.
fn any_card() -> bool {
    if !cfg!(target_os = "linux") {
        return true;
    }
    std::fs::read_to_string("/proc/asound/cards")
        .is_ok_and(|c| !c.trim().is_empty() && !c.contains("no soundcards"))
}

/// Opens and closes the default output at 48 kHz: whether sound can play.
pub(super) fn probe_output() -> Result<(), ClientError> {
    if !any_card() {
        return Err(ClientError::Audio("this machine has no sound card".into()));
    }
    let fifo = Arc::new(Mutex::new(VecDeque::new()));
    open_output(fifo, Arc::new(AtomicU64::new(0))).map(drop)
}

/// Plays what `fifo` holds (48 kHz mono) on the default output device;
/// counts samples it had to fill with silence in `starved`.
pub(super) fn open_output(
    fifo: Arc<Mutex<VecDeque<i16>>>,
    starved: Arc<AtomicU64>,
) -> Result<Open, ClientError> {
    let host = cpal::default_host();
    let dev = host
        .default_output_device()
        .ok_or_else(|| ClientError::Audio("no sound output device".into()))?;
    let channels = dev
        .default_output_config()
        .map_err(|e| err("the output device's format", e))?
        .channels();
    let cfg = cpal::StreamConfig {
        channels,
        sample_rate: cpal::SampleRate(SAMPLE_RATE),
        buffer_size: cpal::BufferSize::Default,
    };
    let ch = usize::from(channels.max(1));
    let stream = dev
        .build_output_stream(
            &cfg,
            move |out: &mut [f32], _| {
                let mut q = fifo.lock().unwrap_or_else(|p| p.into_inner());
                for frame in out.chunks_mut(ch) {
                    let v = match q.pop_front() {
                        Some(s) => f32::from(s) / 32768.0,
                        None => {
                            starved.fetch_add(1, Ordering::Relaxed);
                            0.0
                        }
                    };
                    frame.fill(v);
                }
            },
            |e| tracing::warn!(error = %e, "the sound output failed"),
            None,
        )
        .map_err(|e| err("opening the sound output at 48 kHz", e))?;
    stream
        .play()
        .map_err(|e| err("starting the sound output", e))?;
    Ok(Open(stream))
}

/// Records the default input device at 48 kHz, mono, into `tx`.
pub(super) fn open_input(tx: std::sync::mpsc::SyncSender<Vec<i16>>) -> Result<Open, ClientError> {
    if !any_card() {
        return Err(ClientError::Audio(
            "this machine has no sound card, so no microphone; use --mic synthetic or --mic wav:FILE"
                .into(),
        ));
    }
    let host = cpal::default_host();
    let dev = host
        .default_input_device()
        .ok_or_else(|| ClientError::Audio("no microphone (sound input device)".into()))?;
    let channels = dev
        .default_input_config()
        .map_err(|e| err("the microphone's format", e))?
        .channels();
    let cfg = cpal::StreamConfig {
        channels,
        sample_rate: cpal::SampleRate(SAMPLE_RATE),
        buffer_size: cpal::BufferSize::Default,
    };
    let ch = usize::from(channels.max(1));
    let stream = dev
        .build_input_stream(
            &cfg,
            move |data: &[f32], _| {
                let mono: Vec<i16> = data
                    .chunks(ch)
                    .map(|f| {
                        let v = f.iter().sum::<f32>() / f.len() as f32;
                        (v.clamp(-1.0, 1.0) * 32767.0) as i16
                    })
                    .collect();
                // A full queue means the encoder is behind: drop, never wait
                // in the device's callback.
                let _ = tx.try_send(mono);
            },
            |e| tracing::warn!(error = %e, "the microphone failed"),
            None,
        )
        .map_err(|e| err("opening the microphone at 48 kHz", e))?;
    stream
        .play()
        .map_err(|e| err("starting the microphone", e))?;
    Ok(Open(stream))
}
