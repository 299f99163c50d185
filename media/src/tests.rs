use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::*;

fn rgba_image(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let mut out = Vec::with_capacity((w * h * 4) as usize);
    for y in 0..h {
        for x in 0..w {
            let [r, g, b] = f(x, y);
            out.extend_from_slice(&[r, g, b, 255]);
        }
    }
    out
}

/// Reference conversion in floating point (BT.601 limited range).
fn reference_yuv(r: f64, g: f64, b: f64) -> (f64, f64, f64) {
    let y = 16.0 + 219.0 * (0.299 * r + 0.587 * g + 0.114 * b) / 255.0;
    let u = 128.0 + 224.0 * (-0.168_736 * r - 0.331_264 * g + 0.5 * b) / 255.0;
    let v = 128.0 + 224.0 * (0.5 * r - 0.418_688 * g - 0.081_312 * b) / 255.0;
    (y, u, v)
}

#[test]
fn video_rgba_to_i420_known_colours() {
    // 2x2 blocks: red, green / blue, white / black, grey.
    let colours: [[u8; 3]; 6] = [
        [255, 0, 0],
        [0, 255, 0],
        [0, 0, 255],
        [255, 255, 255],
        [0, 0, 0],
        [128, 128, 128],
    ];
    // Expected (Y, U, V) from BT.601 limited-range tables.
    let expected: [(u8, u8, u8); 6] = [
        (81, 90, 240),
        (145, 54, 34),
        (41, 240, 110),
        (235, 128, 128),
        (16, 128, 128),
        (126, 128, 128),
    ];
    let (w, h) = (4u32, 6u32);
    let rgba = rgba_image(w, h, |x, y| colours[((y / 2) * 2 + x / 2) as usize]);
    let mut yuv = I420Frame::new(w, h).unwrap();
    yuv.fill_from_rgba(&rgba, w, h).unwrap();
    for (i, &(ey, eu, ev)) in expected.iter().enumerate() {
        let (bx, by) = (i % 2, i / 2);
        for dy in 0..2 {
            for dx in 0..2 {
                let got = yuv.y_plane()[(by * 2 + dy) * w as usize + bx * 2 + dx];
                assert!(got.abs_diff(ey) <= 2, "block {i}: Y {got} != {ey}");
            }
        }
        let got_u = yuv.u_plane()[by * (w as usize / 2) + bx];
        let got_v = yuv.v_plane()[by * (w as usize / 2) + bx];
        assert!(got_u.abs_diff(eu) <= 2, "block {i}: U {got_u} != {eu}");
        assert!(got_v.abs_diff(ev) <= 2, "block {i}: V {got_v} != {ev}");
    }
    // Exact at the range ends and for greys.
    assert_eq!(yuv.y_plane()[2 * w as usize + 2], 235);
    assert_eq!(yuv.y_plane()[4 * w as usize], 16);
    assert_eq!((yuv.u_plane()[5], yuv.v_plane()[5]), (128, 128));
}

#[test]
fn video_rgba_to_i420_matches_float_reference() {
    // A deterministic pseudo-random image; every sample within ±1 of
    // the rounded floating-point conversion.
    let (w, h) = (64u32, 32u32);
    let mut state = 0x1234_5678u32;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state & 0xff) as u8
    };
    let px: Vec<[u8; 3]> = (0..w * h).map(|_| [next(), next(), next()]).collect();
    let rgba = rgba_image(w, h, |x, y| px[(y * w + x) as usize]);
    let mut yuv = I420Frame::new(w, h).unwrap();
    yuv.fill_from_rgba(&rgba, w, h).unwrap();
    let at = |x: u32, y: u32| {
        let [r, g, b] = px[(y * w + x) as usize];
        (f64::from(r), f64::from(g), f64::from(b))
    };
    for y in 0..h {
        for x in 0..w {
            let (r, g, b) = at(x, y);
            let want = reference_yuv(r, g, b).0.round();
            let got = f64::from(yuv.y_plane()[(y * w + x) as usize]);
            assert!((got - want).abs() <= 1.0, "Y({x},{y}) {got} vs {want}");
        }
    }
    for by in 0..h / 2 {
        for bx in 0..w / 2 {
            let mut s = (0.0, 0.0, 0.0);
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let (r, g, b) = at(bx * 2 + dx, by * 2 + dy);
                s = (s.0 + r / 4.0, s.1 + g / 4.0, s.2 + b / 4.0);
            }
            let (_, u, v) = reference_yuv(s.0, s.1, s.2);
            let i = (by * w / 2 + bx) as usize;
            let (gu, gv) = (f64::from(yuv.u_plane()[i]), f64::from(yuv.v_plane()[i]));
            assert!((gu - u.round()).abs() <= 1.0, "U({bx},{by}) {gu} vs {u}");
            assert!((gv - v.round()).abs() <= 1.0, "V({bx},{by}) {gv} vs {v}");
        }
    }
}

#[test]
fn video_odd_source_is_cropped() {
    let (w, h) = (5u32, 3u32);
    // The last column and row are red, the rest white: after cropping
    // to 4x2 nothing red remains.
    let rgba = rgba_image(w, h, |x, y| {
        if x == 4 || y == 2 {
            [255, 0, 0]
        } else {
            [255, 255, 255]
        }
    });
    let mut yuv = I420Frame::new(4, 2).unwrap();
    yuv.fill_from_rgba(&rgba, w, h).unwrap();
    assert!(yuv.y_plane().iter().all(|&y| y == 235));
    assert!(yuv.u_plane().iter().chain(yuv.v_plane()).all(|&c| c == 128));
    // Wrong buffer sizes and sizes that do not round to the picture fail.
    assert!(matches!(
        yuv.fill_from_rgba(&rgba[4..], w, h),
        Err(MediaError::BufferSize { .. })
    ));
    assert!(matches!(
        yuv.fill_from_rgba(&rgba, 3, 5),
        Err(MediaError::InvalidSize { .. })
    ));
    assert!(I420Frame::new(3, 2).is_err());
}

#[test]
fn video_nal_unit_types_parses_both_start_codes() {
    let data = [
        0, 0, 0, 1, 0x67, 9, 0, 0, 1, 0x68, 7, 0, 0, 0, 1, 0x65, 0, 0, 3, 1,
    ];
    assert_eq!(nal_unit_types(&data), vec![NAL_SPS, NAL_PPS, NAL_IDR]);
    assert!(nal_unit_types(&[1, 2, 3]).is_empty());
}

fn grey_frame(w: u32, h: u32, shade: u8) -> Vec<u8> {
    rgba_image(w, h, |x, y| {
        if (x / 16 + y / 16) % 2 == 0 {
            [shade, shade, shade]
        } else {
            [20, 40, 60]
        }
    })
}

#[test]
fn video_fps_cap_skips_frames_arriving_too_fast() {
    let (w, h) = (64, 64);
    let mut cfg = EncoderConfig::new(w, h);
    cfg.max_fps = 30;
    let mut enc = VideoEncoder::new(cfg).unwrap();
    let mut encoded = Vec::new();
    for i in 0..100u64 {
        let rgba = grey_frame(w, h, (i * 2) as u8);
        if let Some(f) = enc.encode(&rgba, 1_000_000 + i * 1_000, false).unwrap() {
            encoded.push(f);
        }
    }
    assert!(
        (3..=4).contains(&encoded.len()),
        "{} frames encoded in 100 ms at 30 fps",
        encoded.len()
    );
    let seqs: Vec<u64> = encoded.iter().map(|f| f.seq).collect();
    assert_eq!(seqs, (0..encoded.len() as u64).collect::<Vec<_>>());
    assert_eq!(encoded[0].pts_us, 0);
    assert!(encoded.windows(2).all(|p| p[1].pts_us > p[0].pts_us));
    assert!(
        encoded
            .windows(2)
            .all(|p| p[1].capture_time_us - p[0].capture_time_us >= 33_000 / 2)
    );
}

#[test]
fn video_fps_cap_tolerates_jitter_at_the_cap() {
    // A 30 fps source with ±5 ms jitter is not thinned by a 30 fps cap.
    let (w, h) = (32, 32);
    let mut enc = VideoEncoder::new(EncoderConfig::new(w, h)).unwrap();
    let mut n = 0;
    for i in 0..60u64 {
        let jitter = if i % 2 == 0 { 5_000 } else { 0 };
        let t = i * 33_334 + jitter;
        let rgba = grey_frame(w, h, i as u8);
        n += usize::from(enc.encode(&rgba, t, false).unwrap().is_some());
    }
    assert_eq!(n, 60);
}

#[test]
fn video_keyframes_first_forced_requested_and_periodic() {
    let (w, h) = (64, 48);
    let mut cfg = EncoderConfig::new(w, h);
    cfg.keyframe_interval_s = 2;
    let mut enc = VideoEncoder::new(cfg).unwrap();
    let t = std::cell::Cell::new(0u64);
    let step = |enc: &mut VideoEncoder, force: bool, dt: u64| {
        t.set(t.get() + dt);
        let rgba = grey_frame(w, h, (t.get() / 10_000) as u8);
        enc.encode(&rgba, t.get(), force).unwrap().unwrap()
    };
    let first = step(&mut enc, false, 0);
    assert!(first.keyframe);
    assert_eq!(
        &nal_unit_types(&first.data)[..3],
        &[NAL_SPS, NAL_PPS, NAL_IDR]
    );
    assert!(first.data.starts_with(&[0, 0, 0, 1, 0x67]));
    assert_eq!(first.data[5], 66, "profile_idc: Baseline");
    let p = step(&mut enc, false, 100_000);
    assert!(!p.keyframe);
    assert_eq!(nal_unit_types(&p.data), vec![NAL_SLICE]);
    let forced = step(&mut enc, true, 100_000);
    assert!(forced.keyframe);
    assert!(nal_unit_types(&forced.data).contains(&NAL_IDR));
    assert!(nal_unit_types(&forced.data).starts_with(&[NAL_SPS, NAL_PPS]));
    assert!(!step(&mut enc, false, 100_000).keyframe);
    enc.request_keyframe();
    // A requested keyframe survives a frame skipped by the cap.
    assert!(
        enc.encode(&grey_frame(w, h, 1), t.get() + 1, false)
            .unwrap()
            .is_none()
    );
    assert!(step(&mut enc, false, 100_000).keyframe);
    assert!(!step(&mut enc, false, 1_000_000).keyframe);
    // 2 s after the last keyframe: periodic keyframe.
    assert!(step(&mut enc, false, 1_000_000).keyframe);
    // A new bitrate applies at the next keyframe.
    enc.set_bitrate(500_000).unwrap();
    assert_eq!(enc.config().bitrate_bps, 2_000_000);
    assert!(!step(&mut enc, false, 100_000).keyframe);
    assert_eq!(enc.config().bitrate_bps, 2_000_000);
    let k = step(&mut enc, true, 100_000);
    assert!(k.keyframe && nal_unit_types(&k.data).starts_with(&[NAL_SPS, NAL_PPS]));
    assert_eq!(enc.config().bitrate_bps, 500_000);
    assert!(enc.set_bitrate(1).is_err());
}

#[test]
fn video_encoder_rejects_bad_input() {
    assert!(matches!(
        VideoEncoder::new(EncoderConfig::new(8, 8)),
        Err(MediaError::InvalidSize { .. })
    ));
    let mut cfg = EncoderConfig::new(64, 64);
    cfg.max_fps = 0;
    assert!(matches!(
        VideoEncoder::new(cfg),
        Err(MediaError::Invalid { .. })
    ));
    let mut enc = VideoEncoder::new(EncoderConfig::new(64, 64)).unwrap();
    assert!(matches!(
        enc.encode(&[0; 16], 0, false),
        Err(MediaError::BufferSize { .. })
    ));
}

#[test]
fn video_odd_size_round_trips_cropped() {
    let (w, h) = (67u32, 45u32);
    let mut enc = VideoEncoder::new(EncoderConfig::new(w, h)).unwrap();
    assert_eq!(enc.encoded_size(), (66, 44));
    let rgba = grey_frame(w, h, 200);
    let f = enc.encode(&rgba, 0, false).unwrap().unwrap();
    let mut dec = VideoDecoder::new().unwrap();
    let Picture {
        width: dw,
        height: dh,
        rgba: out,
    } = dec.decode(&f.data).unwrap().unwrap();
    assert_eq!((dw, dh), (66, 44));
    assert_eq!(out.len(), 66 * 44 * 4);
}

#[test]
fn video_decoder_needs_a_keyframe() {
    let (w, h) = (64u32, 64u32);
    let mut enc = VideoEncoder::new(EncoderConfig::new(w, h)).unwrap();
    let _key = enc
        .encode(&grey_frame(w, h, 10), 0, false)
        .unwrap()
        .unwrap();
    let p = enc
        .encode(&grey_frame(w, h, 90), 100_000, false)
        .unwrap()
        .unwrap();
    let mut dec = VideoDecoder::new().unwrap();
    // A P-frame alone decodes to nothing or fails, never to a picture.
    assert!(!matches!(dec.decode(&p.data), Ok(Some(_))));
}

#[test]
fn video_types_can_move_to_worker_threads() {
    fn send<T: Send + 'static>() {}
    send::<VideoEncoder>();
    send::<VideoDecoder>();
    send::<EncodedFrame>();
    send::<LatestFrame>();
}

#[test]
fn video_pacing_clock_jumping_back_restarts_pacing() {
    let (w, h) = (32, 32);
    let mut enc = VideoEncoder::new(EncoderConfig::new(w, h)).unwrap();
    let rgba = grey_frame(w, h, 50);
    assert!(enc.encode(&rgba, 10_000_000, false).unwrap().is_some());
    assert!(enc.encode(&rgba, 10_001_000, false).unwrap().is_none());
    // 5 s back: accepted at once instead of stalling for 5 s.
    let f = enc.encode(&rgba, 5_000_000, false).unwrap().unwrap();
    assert!(f.pts_us > 0, "pts stays increasing: {f:?}");
    assert!(enc.encode(&rgba, 5_001_000, false).unwrap().is_none());
}

#[tokio::test]
async fn video_latest_frame_is_cancel_safe() {
    let frame = |seq| {
        Some(Arc::new(Frame {
            seq,
            timestamp_us: 0,
            width: 2,
            height: 2,
            rgba: vec![0; 16].into(),
        }))
    };
    let (tx, rx) = watch::channel(frame(1));
    let mut latest = LatestFrame::new(rx, 10);
    assert_eq!(latest.next().await.unwrap().frame.seq, 1);
    tx.send_replace(frame(2));
    // Cancelled while pacing (100 ms between takes at 10 fps)...
    let early = tokio::time::timeout(Duration::from_millis(10), latest.next()).await;
    assert!(early.is_err());
    drop(tx);
    // ...the frame is still delivered, even after the sender is gone.
    assert_eq!(latest.next().await.unwrap().frame.seq, 2);
    assert!(latest.next().await.is_none());
}

#[tokio::test]
async fn video_latest_frame_paces_and_keeps_the_last_frame() {
    let (tx, rx) = watch::channel(None);
    let mk = |seq: u32| {
        Some(Arc::new(Frame {
            seq,
            timestamp_us: u64::from(seq) * 1_000,
            width: 32,
            height: 32,
            rgba: grey_frame(32, 32, seq as u8).into(),
        }))
    };
    tx.send_replace(mk(1));
    let mut latest = LatestFrame::new(rx, 30);
    let producer = tokio::spawn(async move {
        let start = Instant::now();
        for seq in 2..=100 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            tx.send_replace(mk(seq));
        }
        // 1 ms sleeps overrun on a loaded machine: the bound below
        // uses the span the frames really covered.
        let span = start.elapsed();
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(tx);
        span
    });
    let mut enc = VideoEncoder::new(EncoderConfig::new(32, 32)).unwrap();
    let mut seen = Vec::new();
    while let Some(p) = latest.next().await {
        let f = &p.frame;
        let out = enc
            .encode_at(&f.rgba, f.timestamp_us, p.now_us, false)
            .unwrap();
        assert!(out.is_some(), "encoder skipped paced frame {}", f.seq);
        seen.push((f.seq, p.now_us));
    }
    let span = producer.await.unwrap();
    assert_eq!(seen[0].0, 1, "the frame present at creation comes first");
    assert_eq!(seen.last().unwrap().0, 100, "the final frame is delivered");
    assert!(seen.windows(2).all(|p| p[1].1 - p[0].1 >= 33_000));
    // ~100+ ms of 1 ms frames at 30 fps: a handful, not 100 (one per
    // 33 ms of the span, plus the first and the last).
    let most = span.as_millis() as usize / 33 + 2;
    assert!(
        seen.len() <= most,
        "{} frames taken from {span:?} of frames; at most {most} at 30 fps",
        seen.len()
    );
}

#[test]
fn video_both_tunings_round_trip_a_change() {
    let (w, h) = (96u32, 64u32);
    for tuning in [Tuning::Screen, Tuning::Camera] {
        let mut cfg = EncoderConfig::new(w, h);
        cfg.tuning = tuning;
        let mut enc = VideoEncoder::new(cfg).unwrap();
        let mut dec = VideoDecoder::new().unwrap();
        for (i, shade) in [40u8, 200].into_iter().enumerate() {
            let f = enc
                .encode(&grey_frame(w, h, shade), i as u64 * 100_000, false)
                .unwrap()
                .unwrap();
            let p = dec.decode(&f.data).unwrap().unwrap();
            let mean = p
                .rgba
                .chunks_exact(4)
                .map(|px| u64::from(px[1]))
                .sum::<u64>()
                / u64::from(w * h);
            // The keyframe is exact; the P-frame of a whole-screen change
            // may converge over a few frames, but goes the right way.
            let tolerance = if i == 0 { 4 } else { 100 };
            assert!(
                mean.abs_diff(u64::from(shade)) < tolerance,
                "{tuning:?}: shade {shade} decoded as {mean}"
            );
        }
    }
    assert_eq!("camera".parse::<Tuning>().unwrap(), Tuning::Camera);
    let e = "fast".parse::<Tuning>().unwrap_err().to_string();
    assert!(e.contains("`screen` or `camera`"), "{e}");
}

#[test]
fn converting_only_changed_rows_gives_the_same_picture() {
    let (w, h) = (64u32, 48u32);
    let mut rgba: Vec<u8> = (0..w * h * 4).map(|i| (i * 7 % 251) as u8).collect();
    let mut partial = I420Frame::new(w, h).unwrap();
    let mut hashes = Vec::new();
    assert_eq!(
        partial
            .fill_changed_from_rgba(&rgba, w, h, &mut hashes)
            .unwrap(),
        24,
        "the first call converts every row pair"
    );
    assert_eq!(
        partial
            .fill_changed_from_rgba(&rgba, w, h, &mut hashes)
            .unwrap(),
        0,
        "an unchanged screen converts nothing"
    );
    // Change one pixel in row 17 (pair 8) and a whole row 40 (pair 20).
    rgba[(17 * w as usize + 5) * 4] ^= 0xff;
    for b in &mut rgba[40 * w as usize * 4..41 * w as usize * 4] {
        *b = b.wrapping_add(50);
    }
    assert_eq!(
        partial
            .fill_changed_from_rgba(&rgba, w, h, &mut hashes)
            .unwrap(),
        2
    );
    let mut full = I420Frame::new(w, h).unwrap();
    full.fill_from_rgba(&rgba, w, h).unwrap();
    assert_eq!(partial, full, "the same picture as a whole conversion");
    // Bad input is refused as by the whole conversion.
    assert!(
        partial
            .fill_changed_from_rgba(&rgba[4..], w, h, &mut hashes)
            .is_err()
    );
}

/// A box on the screen: x, y, width, height.
type Region = (u32, u32, u32, u32);

/// Mean absolute error (RGB) of `decoded` against `source` inside the box.
fn box_error(source: &[u8], decoded: &[u8], w: u32, (x0, y0, bw, bh): Region) -> f64 {
    let mut sum = 0u64;
    for y in y0..y0 + bh {
        for x in x0..x0 + bw {
            let i = ((y * w + x) * 4) as usize;
            for c in 0..3 {
                sum += u64::from(source[i + c].abs_diff(decoded[i + c]));
            }
        }
    }
    sum as f64 / f64::from(bw * bh * 3)
}

#[test]
fn small_changes_on_a_still_screen_reach_the_viewer() {
    // A still screen where only something small changes (a caret, a
    // pressed row, an icon): the P-frame of each change must carry it, in
    // either tuning, never keep the old pixels as "background".
    let (w, h) = (320u32, 480u32);
    let page = |marks: &[(u32, u32, u32, u32, [u8; 3])]| {
        rgba_image(w, h, |x, y| {
            for &(mx, my, mw, mh, c) in marks {
                if (mx..mx + mw).contains(&x) && (my..my + mh).contains(&y) {
                    return c;
                }
            }
            // Text-like grey lines on white.
            if y % 24 < 10 && x % 50 < 38 && y > 40 {
                [90, 90, 90]
            } else {
                [255, 255, 255]
            }
        })
    };
    let caret = (101, 203, 2, 20, [20, 20, 20]);
    let pressed = (0, 300, 320, 48, [232, 232, 232]);
    // A blank strip going faintly grey: the change most like "background".
    let tint = (0, 0, 320, 40, [246, 246, 246]);
    let icon = (250, 12, 16, 16, [200, 30, 30]);
    let steps: [(&str, Vec<_>, Region); 7] = [
        ("caret shown", vec![caret], (101, 203, 2, 20)),
        ("caret hidden", vec![], (101, 203, 2, 20)),
        ("row pressed", vec![pressed], (0, 300, 320, 48)),
        ("row released", vec![], (0, 300, 320, 48)),
        ("strip faintly tinted", vec![tint], (0, 0, 320, 40)),
        ("tint gone", vec![], (0, 0, 320, 40)),
        ("icon", vec![icon], (250, 12, 16, 16)),
    ];
    for tuning in [Tuning::Screen, Tuning::Camera] {
        let mut cfg = EncoderConfig::new(w, h);
        cfg.tuning = tuning;
        cfg.keyframe_interval_s = 0;
        let mut enc = VideoEncoder::new(cfg).unwrap();
        let mut dec = VideoDecoder::new().unwrap();
        let still = page(&[]);
        let f = enc.encode(&still, 0, false).unwrap().unwrap();
        dec.decode(&f.data).unwrap().unwrap();
        // The screen rests a few seconds first (the encoder learns it).
        for s in 1..4u64 {
            let f = enc.encode(&still, s * 1_000_000, false).unwrap().unwrap();
            dec.decode(&f.data).unwrap().unwrap();
        }
        for (i, (what, marks, region)) in steps.iter().enumerate() {
            let frame = page(marks);
            let at = (4 + i as u64) * 1_000_000;
            let f = enc.encode(&frame, at, false).unwrap().unwrap();
            assert!(!f.keyframe, "{tuning:?} {what}: a P-frame");
            let p = dec.decode(&f.data).unwrap().unwrap();
            let err = box_error(&frame, &p.rgba, w, *region);
            // What the viewer would see had the encoder kept the old pixels.
            let before = page(if i == 0 { &[] } else { &steps[i - 1].1 });
            let stale = box_error(&frame, &before, w, *region);
            eprintln!("{tuning:?} {what}: error {err:.1} (old picture would be {stale:.1})");
            assert!(
                err < 12.0 && err < stale / 3.0,
                "{tuning:?} {what}: the change did not reach the viewer (error {err:.1} in the region, the old picture's {stale:.1})"
            );
        }
    }
}
