//! The drop policy between a frame source and the encoder.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::Frame;

/// A frame taken by [`LatestFrame::next`].
#[derive(Clone, Debug)]
pub struct PulledFrame {
    /// The newest frame at the time it was taken.
    pub frame: Arc<Frame>,
    /// When it was taken, µs on a monotonic clock starting at the
    /// [`LatestFrame`]'s creation: pass it as `now_us` to
    /// [`VideoEncoder::encode_at`](crate::VideoEncoder::encode_at).
    pub now_us: u64,
}

/// Takes the newest frame from a watch channel, at most `max_fps` times a
/// second, dropping (never queueing) the frames in between.
///
/// [`next`](Self::next) waits for a frame it has not returned yet, then
/// waits until `1 / max_fps` after the previous take, *then* takes the
/// newest frame. Frames published in between are replaced in the channel
/// and never seen: a slow consumer (encoder or network) costs frame rate,
/// never queueing delay or memory. Because it waits before taking, the final frame
/// of a burst is always returned, and an encoder paced with the returned
/// `now_us` at the same `max_fps` never skips it.
#[derive(Debug)]
pub struct LatestFrame {
    rx: watch::Receiver<Option<Arc<Frame>>>,
    min_interval: Duration,
    origin: Instant,
    last_take: Option<Instant>,
}

impl LatestFrame {
    /// Wraps a frame channel (a phone's screen images, e.g. the sim
    /// phone's `frames()`); the frame in it now, if any, is returned first.
    pub fn new(mut rx: watch::Receiver<Option<Arc<Frame>>>, max_fps: u32) -> Self {
        rx.mark_changed();
        Self {
            rx,
            min_interval: Duration::from_micros(1_000_000 / u64::from(max_fps.max(1))),
            origin: Instant::now(),
            last_take: None,
        }
    }

    /// Waits for the next frame to encode (see the type docs). `None` once
    /// the sender is gone and its last frame was returned. Cancel-safe: a
    /// dropped call loses nothing.
    pub async fn next(&mut self) -> Option<PulledFrame> {
        loop {
            self.rx.changed().await.ok()?;
            // Until the frame is taken, keep it "unseen": if this future is
            // dropped while pacing, the next call still returns it.
            self.rx.mark_changed();
            if let Some(last) = self.last_take {
                tokio::time::sleep_until((last + self.min_interval).into()).await;
            }
            let Some(frame) = self.rx.borrow_and_update().clone() else {
                continue;
            };
            let now = Instant::now();
            self.last_take = Some(now);
            return Some(PulledFrame {
                frame,
                now_us: now.duration_since(self.origin).as_micros() as u64,
            });
        }
    }
}

// ---------------------------------------------------------------------------
// Decoder
