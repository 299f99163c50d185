//! Video, phone -> handset: the phone's screen stream (through a shared
//! memory region where the phone accepts one), H.264 encoding and one QUIC
//! stream per group of pictures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use device_bridge::{BridgeError, GopWriter, PathInfo, ServerSession};
use sensor_proto::bridge::{VideoCodec, VideoFrameHeader, VideoStreamHeader};
use sensor_proto::bytes::Bytes;
use sensor_proto::emulator::image_format::ImgFormat;
use tokio::sync::{Notify, watch};
use tokio_stream::StreamExt;

use crate::HostError;
use crate::emu_client::EmulatorClient;
use crate::metrics::Metrics;
use crate::region::ScreenRegion;
use crate::threads::{Priority, spawn_on_own_runtime};
use crate::video::{EncoderConfig, VideoEncoder};

use super::RouterConfig;
use super::pace::{Pacer, Verdict};

/// How soon a held frame is offered again.
const HOLD_RECHECK: Duration = Duration::from_millis(10);

type Image = Arc<sensor_proto::emulator::Image>;

/// The session's calls that touch its QUIC connection, made on the runtime
/// that drives the connection (the latency runtime, real-time workers)
/// instead of on the video thread.
///
/// A connection's state sits behind one lock, which the latency runtime
/// takes for every packet of every session it serves. Were the video
/// thread (low priority, on a busy host) preempted while holding it (in a
/// frame write, a path read), that runtime would wait for the video thread
/// to be scheduled again: measured at 100 sessions, 30 stalls of about 8 ms
/// in 4 s, every session's sensors behind each. Here the video thread only
/// hands over the call and awaits its answer.
pub(super) struct Net {
    rt: tokio::runtime::Handle,
    s: Arc<ServerSession>,
}

impl Net {
    /// The session `s`, whose connection `rt` drives.
    pub(super) fn new(s: Arc<ServerSession>, rt: tokio::runtime::Handle) -> Self {
        Self { rt, s }
    }

    /// [`ServerSession::path`].
    async fn path(&self) -> Option<PathInfo> {
        let s = self.s.clone();
        on_runtime(&self.rt, async move { s.path() })
            .await
            .flatten()
    }

    /// [`ServerSession::start_gop`], then drops the `previous` GOP's writer
    /// there too (a browser's owns its stream, whose drop takes the lock); a
    /// runtime shutting down reads as [`BridgeError::Disconnected`].
    async fn start_gop(
        &self,
        header: VideoStreamHeader,
        previous: Option<GopWriter>,
    ) -> Result<GopWriter, BridgeError> {
        let s = self.s.clone();
        on_runtime(&self.rt, async move {
            let started = s.start_gop(header).await;
            drop(previous);
            started
        })
        .await
        .unwrap_or(Err(BridgeError::Disconnected))
    }

    /// [`GopWriter::write_frame`]; the writer comes back while it can take
    /// more frames, and is dropped on the connection's runtime otherwise.
    async fn write_frame(
        &self,
        mut writer: GopWriter,
        header: VideoFrameHeader,
        payload: Bytes,
    ) -> (Result<u64, BridgeError>, Option<GopWriter>) {
        on_runtime(&self.rt, async move {
            let r = writer.write_frame(header, payload).await;
            let back = r.is_ok().then_some(writer);
            (r, back)
        })
        .await
        .unwrap_or((Err(BridgeError::Disconnected), None))
    }
}

/// Runs `work` on `rt` and waits for its result (from any thread or
/// runtime); `None` when `rt` is shutting down (or `work` panicked, logged).
async fn on_runtime<T: Send + 'static>(
    rt: &tokio::runtime::Handle,
    work: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    match rt.spawn(work).await {
        Ok(v) => Some(v),
        Err(e) => {
            if e.is_panic() {
                tracing::error!(error = %e, "a video call on the session's runtime panicked");
            }
            None
        }
    }
}

/// The newest screen image, shared by the feed thread and the video loop.
/// The loop can also reach the sender (weakly: the feed ending still ends
/// the channel), to let go of an image once it has taken it
/// ([`Latest::take`]): a resting screen keeps no image here.
struct Latest {
    rx: watch::Receiver<Option<Image>>,
    tx: std::sync::Weak<watch::Sender<Option<Image>>>,
}

impl Latest {
    /// Waits for a newer image and takes it (`None` once the feed ended).
    /// The channel keeps no reference to it: the image lives while the
    /// caller holds it.
    async fn take(&mut self) -> Option<Option<Image>> {
        self.rx.changed().await.ok()?;
        let img = self.rx.borrow_and_update().clone();
        if let (Some(i), Some(tx)) = (&img, self.tx.upgrade()) {
            // Only if the feed has not put a newer one there meanwhile; no
            // wake-up for the emptying.
            tx.send_if_modified(|v| {
                if v.as_ref().is_some_and(|x| Arc::ptr_eq(x, i)) {
                    *v = None;
                }
                false
            });
        }
        Some(img)
    }
}

/// Reads the phone's screenshot stream on its own thread, runtime and
/// connection: each frame is megabytes of RGBA, and parsing them on the
/// shared async workers would delay the session's QUIC and sensor traffic.
/// The pixels travel through a shared memory region ([`ScreenRegion`],
/// the emulator's MMAP transport) when the phone accepts one, else inside
/// the messages. The thread ends when the returned receiver is dropped.
async fn screen_feed(client: EmulatorClient, display: (u32, u32)) -> Result<Latest, HostError> {
    let (tx, rx) = watch::channel(None);
    let tx = Arc::new(tx);
    let weak_tx = Arc::downgrade(&tx);
    let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
    spawn_on_own_runtime("screen", Priority::Bulk, async move {
        let client = match client.separate_connection().await {
            Ok(c) => c,
            Err(e) => {
                let _ = opened_tx.send(Err(e));
                return;
            }
        };
        // A square box of the longer side fits the screen in either
        // orientation at its native size. The emulator maps the request's
        // width x height x 4 bytes of the file, so the file has that size;
        // it is sparse, and only the image's w x h x 4 bytes take memory.
        let side = display.0.max(display.1);
        let mut region = (side > 0)
            .then(|| ScreenRegion::create(u64::from(side) * u64::from(side) * 4))
            .transpose()
            .inspect_err(
                |e| tracing::warn!(error = %e, "screen images will travel in the messages"),
            )
            .ok()
            .flatten();
        let stream = match &region {
            Some(r) => match client
                .screenshots_into(ImgFormat::Rgba8888, (side, side), r.path())
                .await
            {
                Ok(s) => Ok(s),
                Err(e) => {
                    tracing::info!(error = %e, "the phone refuses a shared screen region; images travel in the messages");
                    region = None;
                    client.screenshots(ImgFormat::Rgba8888).await
                }
            },
            None => client.screenshots(ImgFormat::Rgba8888).await,
        };
        let mut stream = match stream {
            Ok(s) => {
                let _ = opened_tx.send(Ok(()));
                s
            }
            Err(e) => {
                let _ = opened_tx.send(Err(e));
                return;
            }
        };
        let mut images = 0u64;
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    Some(Ok(mut img)) => {
                        images += 1;
                        if let Some(r) = &mut region {
                            // The phone has it open now: its name can go.
                            r.unlink();
                        }
                        // Read at once: the phone writes the next image into
                        // the same region (a late read would see it, torn).
                        if img.image.is_empty() && let Some(r) = &region {
                            let f = img.format.clone().unwrap_or_default();
                            let len = f.width as usize * f.height as usize * 4;
                            match r.read(len) {
                                Ok(px) => img.image = px.into(),
                                Err(e) => {
                                    tracing::error!(error = %e, "cannot read the phone's screen image");
                                    break;
                                }
                            }
                        }
                        if tx.send(Some(Arc::new(img))).is_err() {
                            break;
                        }
                    }
                    Some(Err(status)) if region.is_some() && images == 0 => {
                        // The region failed before any image (too small for the
                        // phone, no room in /dev/shm): pixels in the messages.
                        tracing::warn!(error = %status, "the shared screen region failed; images travel in the messages");
                        region = None;
                        match client.screenshots(ImgFormat::Rgba8888).await {
                            Ok(s) => stream = s,
                            Err(e) => {
                                tracing::error!(error = %e, "the phone's screen stream failed");
                                break;
                            }
                        }
                    }
                    Some(Err(status)) => {
                        tracing::error!(error = %status, "the phone's screen stream failed");
                        break;
                    }
                    None => {
                        tracing::info!("the phone's screen stream ended");
                        break;
                    }
                },
                () = tx.closed() => break,
            }
        }
    })?;
    opened_rx.await.map_err(|_| HostError::Internal {
        what: "screen feed",
        why: "its thread ended before the stream opened".to_owned(),
    })??;
    Ok(Latest { rx, tx: weak_tx })
}

pub(super) async fn video_loop(
    net: Net,
    client: EmulatorClient,
    cfg: RouterConfig,
    keyframe_wanted: Arc<Notify>,
    frames: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    display: (u32, u32),
) {
    let mut latest = match screen_feed(client, display).await {
        Ok(rx) => rx,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the phone's screen");
            return;
        }
    };
    let force = Arc::new(AtomicBool::new(true));
    {
        let force = force.clone();
        tokio::spawn(async move {
            loop {
                keyframe_wanted.notified().await;
                force.store(true, Ordering::Relaxed);
            }
        });
    }
    let mut encoder: Option<VideoEncoder> = None;
    let mut pacer = Pacer::new(cfg.bitrate_bps, Instant::now());
    let mut gop = None;
    let mut last_key = Instant::now();
    let mut gop_id = 0u64;
    // A frame the fps cap skipped: offered again at the next slot, so the
    // last change of a screen that then stays still is never lost.
    let mut pending: Option<(Image, tokio::time::Instant)> = None;
    loop {
        let img = match pending.take() {
            None => match latest.take().await {
                Some(img) => img,
                None => return,
            },
            Some((img, at)) => tokio::select! {
                r = latest.take() => match r {
                    Some(img) => img,
                    None => return,
                },
                () = tokio::time::sleep_until(at) => Some(img),
            },
        };
        let Some(img) = img else { continue };
        let f = img.format.clone().unwrap_or_default();
        let (w, h) = (f.width, f.height);
        if encoder
            .as_ref()
            .is_none_or(|e| (e.config().width, e.config().height) != (w, h))
        {
            match VideoEncoder::new(EncoderConfig {
                width: w,
                height: h,
                max_fps: cfg.max_fps,
                bitrate_bps: if cfg.adapt_to_path {
                    pacer.target_bps()
                } else {
                    cfg.bitrate_bps
                },
                keyframe_interval_s: cfg
                    .keyframe_interval
                    .map_or(0, |d| d.as_secs().max(1) as u32),
                tuning: cfg.tuning,
            }) {
                Ok(e) => encoder = Some(e),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the video encoder");
                    return;
                }
            }
            force.store(true, Ordering::Relaxed);
        }
        let Some(enc) = encoder.as_mut() else {
            return;
        };
        let want_key = force.swap(false, Ordering::Relaxed)
            || gop.is_none()
            || cfg
                .keyframe_interval
                .is_some_and(|i| last_key.elapsed() >= i);
        let now_us = (crate::unix_ns() / 1000).max(0) as u64;
        // Too soon for the fps cap: offer this frame again at the next slot
        // (without encoding it now).
        if let Some(slot) = enc.next_slot_us()
            && now_us < slot
        {
            if want_key {
                force.store(true, Ordering::Relaxed);
            }
            pending = Some((
                img,
                tokio::time::Instant::now() + Duration::from_micros((slot - now_us).max(1000)),
            ));
            continue;
        }
        // Never more video waiting to leave than the path carries (see
        // `pace`): the newest frame waits for the queue to drain, and the
        // encoder's target follows the path.
        if cfg.adapt_to_path {
            if pacer.admit(Instant::now(), net.path().await.as_ref()) == Verdict::Hold {
                if want_key {
                    force.store(true, Ordering::Relaxed);
                }
                pending = Some((img, tokio::time::Instant::now() + HOLD_RECHECK));
                continue;
            }
            let target = pacer.target_bps();
            let current = enc.config().bitrate_bps;
            if target != current && enc.pending_bitrate() != Some(target) {
                // Takes effect at the next keyframe; a large cut makes one
                // now (the queue is drained), so the new rate applies at once.
                if enc.set_bitrate(target).is_ok() && target <= current / 2 {
                    force.store(true, Ordering::Relaxed);
                }
            }
        }
        let want_key = want_key || force.swap(false, Ordering::Relaxed);
        // Encoding is CPU work; this thread is the video's own (see
        // `Priority::Bulk`), so it encodes in place.
        let result = enc.encode_at(&img.image, img.timestamp_us, now_us, want_key);
        let encoded = match result {
            Ok(Some(e)) => e,
            Ok(None) => {
                if want_key {
                    force.store(true, Ordering::Relaxed);
                }
                let wait = enc.next_slot_us().map_or(0, |t| t.saturating_sub(now_us));
                pending = Some((
                    img,
                    tokio::time::Instant::now() + Duration::from_micros(wait.max(1000)),
                ));
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "encoding failed");
                return;
            }
        };
        if encoded.keyframe {
            last_key = Instant::now();
            gop_id += 1;
            // Starting the GOP resets the last one's stream with whatever
            // of it still waited.
            pacer.new_gop(net.path().await.as_ref());
            let header = VideoStreamHeader {
                gop_id,
                codec: VideoCodec::H264 as i32,
                width: w,
                height: h,
                rotation_deg: 0,
            };
            match net.start_gop(header, gop.take()).await {
                Ok(g) => gop = Some(g),
                Err(_) => {
                    force.store(true, Ordering::Relaxed);
                    continue;
                }
            }
        }
        let Some(writer) = gop.take() else {
            force.store(true, Ordering::Relaxed);
            continue;
        };
        let len = encoded.data.len() as u64;
        let header = VideoFrameHeader {
            pts_us: encoded.pts_us,
            seq: 0,
            keyframe: encoded.keyframe,
            capture_time_us: encoded.capture_time_us,
            payload_len: 0,
        };
        let (written, writer) = net
            .write_frame(writer, header, Bytes::from(encoded.data))
            .await;
        gop = writer;
        match written {
            Ok(_) => {
                pacer.wrote(len);
                frames.fetch_add(1, Ordering::Relaxed);
                metrics.frames_sent.inc();
                metrics.bytes_down.inc_by(len);
            }
            Err(_) => {
                // Superseded (the session ended), disconnected (a resume
                // may follow) or closed: the writer is gone; start over with
                // a keyframe on a new GOP.
                force.store(true, Ordering::Relaxed);
                if !net.s.is_connected() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The video thread's connection calls run on the connection's runtime
    /// (its real-time workers), not on the thread that asks; once that
    /// runtime is gone they answer `None` instead of hanging or panicking.
    #[tokio::test]
    async fn connection_calls_run_on_the_connections_runtime() {
        let net = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("vphone-test-net")
            .build()
            .expect("runtime");
        let here = std::thread::current().name().map(str::to_owned);
        let there = on_runtime(net.handle(), async {
            std::thread::current().name().map(str::to_owned)
        })
        .await;
        assert_eq!(there, Some(Some("vphone-test-net".to_owned())));
        assert_ne!(here.as_deref(), Some("vphone-test-net"));
        let handle = net.handle().clone();
        net.shutdown_background();
        assert_eq!(on_runtime(&handle, async { 1 }).await, None);
    }
}
