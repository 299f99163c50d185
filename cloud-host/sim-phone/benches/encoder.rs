//! Video encoder bench on sim phone frames (720x1280):
//!
//! * (a) RGBA -> I420 conversion (ours, and OpenH264's converter for scale),
//! * (b) H.264 encode per frame for a screen that changes every frame
//!   (bubble moving, a new touch ripple every frame), one thread,
//!   plus decode time and the quality of the round trip; (b3) the same
//!   with camera tuning,
//! * (c) bitrate and time while idle: only the clock changes, once a
//!   second (and the quality of the rows that changed), in both tunings,
//! * (d) baseline: PNG encoding of the same frames (the emulator's PNG
//!   screenshot path).
//!
//! `cargo bench -p sim-phone --bench encoder` (release build; < 60 s).

use std::hint::black_box;
use std::time::{Duration, Instant};

use openh264::formats::{RgbaSliceU8, YUVBuffer};
use sim_phone::{
    DEFAULT_HEIGHT, DEFAULT_WIDTH, RIPPLE_LIFETIME_MS, Renderer, Ripple, SceneState, StatusClock,
    encode_png,
};
use vphone_media::{EncoderConfig, I420Frame, Tuning, VideoDecoder, VideoEncoder};

const W: u32 = DEFAULT_WIDTH;
const H: u32 = DEFAULT_HEIGHT;
const FPS: u64 = 30;
const FRAME_US: u64 = 1_000_000 / FPS;
const BUSY_FRAMES: u32 = 150;
const IDLE_SECONDS: u32 = 60;
const SCROLL_FRAMES: u32 = 90;

/// Sorted samples with percentiles.
struct Stats(Vec<Duration>);

impl Stats {
    fn new(mut v: Vec<Duration>) -> Self {
        v.sort();
        Self(v)
    }
    fn pct(&self, p: u32) -> Duration {
        device_bridge::stats::quantile(&self.0, f64::from(p) / 100.0).unwrap_or_default()
    }
    fn mean(&self) -> Duration {
        self.0.iter().sum::<Duration>() / self.0.len() as u32
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn base_scene() -> SceneState {
    SceneState {
        clock_unix_s: 1_700_000_000,
        clock_face: StatusClock::Seconds,
        battery_percent: 87,
        charging: true,
        accel: [0.0, 0.0, 9.81],
        gyro: [0.01, -0.02, 0.0],
        mag: [22.0, -5.0, -40.0],
        orientation: [12.0, 1.0, -2.0],
        ..SceneState::default()
    }
}

/// Frame `i` of the busy scenario: tilting phone, a new ripple every frame
/// (older ones age and fade), the clock ticking every 30 frames.
fn busy_scene(i: u32) -> SceneState {
    let t = i as f32 / FPS as f32;
    let mut s = base_scene();
    s.clock_unix_s += i64::from(i) / FPS as i64;
    s.accel = [5.0 * (t * 2.1).sin(), 5.0 * (t * 1.3).cos(), 8.0];
    s.gyro = [(t * 3.0).sin(), (t * 2.0).cos(), 0.1 * t];
    // Frames per ripple lifetime (600 ms).
    let per_life = (u64::from(RIPPLE_LIFETIME_MS) * 1000 / FRAME_US) as u32;
    for k in 0..=per_life.min(i) {
        let j = i - k;
        s.touches.push(Ripple {
            x: ((j * 97) % W) as f32,
            y: ((j * 193) % H) as f32,
            age_ms: k * (FRAME_US / 1000) as u32,
            id: j as i32,
        });
    }
    s.prune_ripples();
    s
}

/// PSNR over RGB of two RGBA images.
fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mut se = 0u64;
    let mut n = 0u64;
    for (pa, pb) in a.chunks_exact(4).zip(b.chunks_exact(4)) {
        for c in 0..3 {
            let d = i64::from(pa[c]) - i64::from(pb[c]);
            se += (d * d) as u64;
            n += 1;
        }
    }
    if se == 0 {
        return f64::INFINITY;
    }
    10.0 * (255.0f64 * 255.0 / (se as f64 / n as f64)).log10()
}

/// The byte range of the rows where two RGBA frames differ, `None` when
/// they are the same (or there is no earlier frame).
fn changed_rows(prev: &[u8], now: &[u8]) -> Option<(usize, usize)> {
    let stride = W as usize * 4;
    if prev.len() != now.len() {
        return None;
    }
    let differs =
        |r: &usize| prev[r * stride..(r + 1) * stride] != now[r * stride..(r + 1) * stride];
    let first = (0..H as usize).find(differs)?;
    let last = (0..H as usize).rev().find(differs)?;
    Some((first * stride, (last + 1) * stride))
}

fn main() {
    let started = Instant::now();
    let mut renderer = Renderer::new(W, H).expect("renderer");
    let mut rows: Vec<(String, String, String, String)> = Vec::new();
    let mut row = |what: &str, p50: String, p99: String, note: String| {
        rows.push((what.to_owned(), p50, p99, note));
    };

    // (a) colour conversion.
    let frames: Vec<Vec<u8>> = (0..4)
        .map(|i| renderer.render(&busy_scene(i * 7)).to_vec())
        .collect();
    let mut yuv = I420Frame::new(W, H).expect("i420");
    let mut samples = Vec::new();
    for i in 0..300 {
        let f = &frames[i % frames.len()];
        let t = Instant::now();
        yuv.fill_from_rgba(black_box(f), W, H).expect("convert");
        samples.push(t.elapsed());
        black_box(yuv.y_plane());
    }
    let ours = Stats::new(samples);
    let mpix = f64::from(W * H) / 1e6;
    row(
        "(a) RGBA->I420 (ours, integer, 2x2)",
        ms(ours.pct(50)),
        ms(ours.pct(99)),
        format!("{:.0} Mpixel/s", mpix / ours.pct(50).as_secs_f64()),
    );
    // (a2) the same conversion on an idle screen (only the clock changes),
    // converting only the row pairs that changed.
    let idle_frames: Vec<Vec<u8>> = (0..2)
        .map(|i| {
            let mut scene = base_scene();
            scene.clock_unix_s += i64::from(i);
            renderer.render(&scene).to_vec()
        })
        .collect();
    let mut hashes = Vec::new();
    let mut samples = Vec::new();
    let mut converted = 0;
    for i in 0..300 {
        let f = &idle_frames[i % 2];
        let t = Instant::now();
        converted = yuv
            .fill_changed_from_rgba(black_box(f), W, H, &mut hashes)
            .expect("convert");
        samples.push(t.elapsed());
        black_box(yuv.y_plane());
    }
    let changed = Stats::new(samples);
    row(
        "(a2) RGBA->I420, idle screen, changed rows only",
        ms(changed.pct(50)),
        ms(changed.pct(99)),
        format!(
            "{converted} of {} row pairs; {:.2}x of (a)",
            H / 2,
            changed.pct(50).as_secs_f64() / ours.pct(50).as_secs_f64()
        ),
    );
    let mut theirs = YUVBuffer::new(W as usize, H as usize);
    let mut samples = Vec::new();
    for i in 0..100 {
        let f = &frames[i % frames.len()];
        let t = Instant::now();
        theirs.read_rgba8(RgbaSliceU8::new(black_box(f), (W as usize, H as usize)));
        samples.push(t.elapsed());
    }
    let theirs = Stats::new(samples);
    row(
        "    (openh264 YUVBuffer::read_rgba8)",
        ms(theirs.pct(50)),
        ms(theirs.pct(99)),
        format!("{:.0} Mpixel/s", mpix / theirs.pct(50).as_secs_f64()),
    );

    // (b3) busy screen with camera tuning: time and quality (tabled after (b)).
    let camera_busy = {
        let mut cfg = EncoderConfig::new(W, H);
        cfg.tuning = Tuning::Camera;
        let mut enc = VideoEncoder::new(cfg).expect("encoder");
        let mut dec = VideoDecoder::new().expect("decoder");
        let (mut times, mut q_min, mut q_sum) = (Vec::new(), f64::INFINITY, 0.0);
        for i in 0..BUSY_FRAMES {
            let rgba = renderer.render(&busy_scene(i));
            let t = Instant::now();
            let f = enc
                .encode(rgba, 1_000_000 + u64::from(i) * FRAME_US, false)
                .expect("encode")
                .expect("busy frame skipped");
            times.push(t.elapsed());
            let out = dec.decode(&f.data).expect("decode").expect("picture").rgba;
            let q = psnr(rgba, &out);
            q_min = q_min.min(q);
            q_sum += q;
        }
        let quality = format!(
            "PSNR RGB mean {:.1} dB, min {q_min:.1} dB",
            q_sum / f64::from(BUSY_FRAMES)
        );
        (Stats::new(times), quality)
    };

    // (b) busy screen: encode (incl. conversion), decode, quality; (d) PNG.
    let mut enc = VideoEncoder::new(EncoderConfig::new(W, H)).expect("encoder");
    let mut dec = VideoDecoder::new().expect("decoder");
    let (mut enc_t, mut dec_t, mut png_t) = (Vec::new(), Vec::new(), Vec::new());
    let (mut p_bytes, mut p_count, mut key_bytes) = (0usize, 0usize, 0usize);
    let (mut png_bytes, mut h264_bytes_same) = (0usize, 0usize);
    let mut psnr_min = f64::INFINITY;
    let mut psnr_sum = 0.0;
    for i in 0..BUSY_FRAMES {
        let rgba = renderer.render(&busy_scene(i));
        let t = Instant::now();
        let f = enc
            .encode(rgba, 1_000_000 + u64::from(i) * FRAME_US, false)
            .expect("encode")
            .expect("busy frame skipped");
        enc_t.push(t.elapsed());
        if f.keyframe {
            key_bytes += f.data.len();
        } else {
            p_bytes += f.data.len();
            p_count += 1;
        }
        let t = Instant::now();
        let out = dec.decode(&f.data).expect("decode").expect("picture").rgba;
        dec_t.push(t.elapsed());
        let q = psnr(rgba, &out);
        psnr_min = psnr_min.min(q);
        psnr_sum += q;
        if i % 3 == 0 {
            let t = Instant::now();
            let png = encode_png(W, H, rgba).expect("png");
            png_t.push(t.elapsed());
            png_bytes += png.len();
            h264_bytes_same += f.data.len();
        }
    }
    let enc_s = Stats::new(enc_t);
    let dec_s = Stats::new(dec_t);
    let png_s = Stats::new(png_t);
    let p_avg = p_bytes as f64 / p_count.max(1) as f64;
    row(
        "(b) H.264 encode, busy screen",
        ms(enc_s.pct(50)),
        ms(enc_s.pct(99)),
        format!(
            "{:.0} fps on one core (mean {})",
            1.0 / enc_s.mean().as_secs_f64(),
            ms(enc_s.mean())
        ),
    );
    row(
        "    busy-screen size",
        String::new(),
        String::new(),
        format!(
            "IDR {:.1} KiB, P mean {:.1} KiB = {:.0} kbit/s at {FPS} fps",
            key_bytes as f64 / 1024.0,
            p_avg / 1024.0,
            p_avg * 8.0 * FPS as f64 / 1e3
        ),
    );
    row(
        "    decode (OpenH264 + YUV->RGBA)",
        ms(dec_s.pct(50)),
        ms(dec_s.pct(99)),
        format!(
            "PSNR RGB mean {:.1} dB, min {:.1} dB",
            psnr_sum / f64::from(BUSY_FRAMES),
            psnr_min
        ),
    );

    row(
        "(b3) H.264 encode, busy screen, camera tuning",
        ms(camera_busy.0.pct(50)),
        ms(camera_busy.0.pct(99)),
        camera_busy.1,
    );

    // (b2) scrolling: the whole screen moves by 8 px per frame.
    {
        let base = renderer.render(&busy_scene(0)).to_vec();
        let stride = W as usize * 4;
        let cfg = EncoderConfig::new(W, H);
        let mut enc = VideoEncoder::new(cfg).expect("encoder");
        let mut dec = VideoDecoder::new().expect("decoder");
        let (mut times, mut bytes, mut skipped) = (Vec::new(), 0usize, 0usize);
        let mut q_sum = 0.0;
        let mut frame = vec![0u8; base.len()];
        for i in 0..SCROLL_FRAMES {
            let shift = (i as usize * 8 % H as usize) * stride;
            frame[..base.len() - shift].copy_from_slice(&base[shift..]);
            frame[base.len() - shift..].copy_from_slice(&base[..shift]);
            let t = Instant::now();
            let f = enc
                .encode(&frame, 1_000_000 + u64::from(i) * FRAME_US, false)
                .expect("encode");
            times.push(t.elapsed());
            match f {
                Some(f) => {
                    if i > 0 {
                        bytes += f.data.len();
                    }
                    let out = dec.decode(&f.data).expect("decode").expect("picture").rgba;
                    q_sum += psnr(&frame, &out);
                }
                None => skipped += 1,
            }
        }
        let times = Stats::new(times);
        row(
            "(b2) H.264 encode, scrolling 8 px/frame",
            ms(times.pct(50)),
            ms(times.pct(99)),
            format!(
                "{:.0} kbit/s at {FPS} fps (target {} kbit/s), PSNR mean {:.1} dB{}",
                bytes as f64 * 8.0 / f64::from(SCROLL_FRAMES - 1) * FPS as f64 / 1e3,
                cfg.bitrate_bps / 1000,
                q_sum / (SCROLL_FRAMES as usize - skipped) as f64,
                if skipped > 0 {
                    format!(", {skipped} skipped")
                } else {
                    String::new()
                }
            ),
        );
    }

    // (c) idle: the clock changes once a second, nothing else.
    for (label, interval, tuning) in [
        ("keyframes only on demand", 0, Tuning::Screen),
        ("keyframe every 10 s", 10, Tuning::Screen),
        ("keyframe every 10 s, camera tuning", 10, Tuning::Camera),
    ] {
        let mut cfg = EncoderConfig::new(W, H);
        cfg.keyframe_interval_s = interval;
        cfg.tuning = tuning;
        let mut enc = VideoEncoder::new(cfg).expect("encoder");
        let mut dec = VideoDecoder::new().expect("decoder");
        let (mut first, mut rest, mut keys, mut p_max) = (0usize, 0usize, 0usize, 0usize);
        let mut times = Vec::new();
        // The quality where the picture changed (the clock's rows): a
        // region the encoder wrongly keeps from the last frame shows here.
        let (mut q_changed, mut prev) = (f64::INFINITY, Vec::new());
        for s in 0..=IDLE_SECONDS {
            let mut scene = base_scene();
            scene.clock_unix_s += i64::from(s);
            let rgba = renderer.render(&scene);
            let t = Instant::now();
            let f = enc
                .encode(rgba, 1_000_000 * u64::from(s + 1), false)
                .expect("encode")
                .expect("idle frame skipped");
            times.push(t.elapsed());
            let out = dec.decode(&f.data).expect("decode").expect("picture").rgba;
            if let Some((a, b)) = changed_rows(&prev, rgba) {
                q_changed = q_changed.min(psnr(&rgba[a..b], &out[a..b]));
            }
            prev = rgba.to_vec();
            if s == 0 {
                first = f.data.len();
            } else {
                rest += f.data.len();
                if f.keyframe {
                    keys += 1;
                } else {
                    p_max = p_max.max(f.data.len());
                }
            }
        }
        let times = Stats::new(times);
        row(
            &format!("(c) idle 1 change/s, {label}"),
            ms(times.pct(50)),
            ms(times.pct(99)),
            format!(
                "{:.2} kbit/s over {IDLE_SECONDS} s ({keys} IDR, P max {p_max} B; first IDR {:.1} KiB); changed rows' PSNR min {q_changed:.1} dB",
                rest as f64 * 8.0 / f64::from(IDLE_SECONDS) / 1e3,
                first as f64 / 1024.0
            ),
        );
    }

    row(
        "(d) PNG (fast) of the busy frames",
        ms(png_s.pct(50)),
        ms(png_s.pct(99)),
        format!(
            "{:.0} KiB/frame = {:.0}x the H.264 bytes; CPU {:.2}x the H.264 encode",
            png_bytes as f64 / png_s.0.len() as f64 / 1024.0,
            png_bytes as f64 / h264_bytes_same as f64,
            png_s.pct(50).as_secs_f64() / enc_s.pct(50).as_secs_f64()
        ),
    );
    row(
        "    PNG at 30 fps would need",
        String::new(),
        String::new(),
        format!(
            "{:.1} Mbit/s and {:.0}% of a core",
            png_bytes as f64 / png_s.0.len() as f64 * 8.0 * FPS as f64 / 1e6,
            png_s.mean().as_secs_f64() * FPS as f64 * 100.0
        ),
    );

    println!("\nvphone video encoder bench: {W}x{H}, sim phone frames, one thread\n");
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(3);
    let w2 = rows.iter().map(|r| r.2.len()).max().unwrap_or(0).max(3);
    println!("{:w0$}  {:>w1$}  {:>w2$}  notes", "", "p50", "p99");
    for (a, b, c, d) in &rows {
        println!("{a:w0$}  {b:>w1$}  {c:>w2$}  {d}");
    }
    println!("\n(bench took {:.1} s)", started.elapsed().as_secs_f64());
}
