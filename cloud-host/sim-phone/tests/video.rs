//! End-to-end checks of the H.264 pipeline on sim phone frames: the stream
//! is valid for ffprobe, and decoding puts the on-screen elements where the
//! scene put them.

use sim_phone::{
    BUBBLE_RGB, DEFAULT_HEIGHT, DEFAULT_WIDTH, RIPPLE_RGB, Renderer, Ripple, SceneState,
    StatusClock, bubble_center, ripple_dot_radius,
};
use vphone_media::{
    EncodedFrame, EncoderConfig, NAL_IDR, NAL_PPS, NAL_SPS, VideoDecoder, VideoEncoder,
    nal_unit_types,
};

const W: u32 = DEFAULT_WIDTH;
const H: u32 = DEFAULT_HEIGHT;
const FRAME_US: u64 = 33_334;

/// Frame `i` of a scene with a tilting phone and a touch ripple.
fn scene(i: u32) -> (SceneState, (f32, f32)) {
    let t = i as f32 / 30.0;
    let touch = (180.0 + 8.0 * i as f32, 300.0 + 5.0 * i as f32);
    let scene = SceneState {
        clock_unix_s: 1_700_000_000,
        clock_face: StatusClock::Seconds,
        battery_percent: 80,
        accel: [4.0 * (t * 3.0).sin(), 3.0 * (t * 2.0).cos(), 8.5],
        touches: vec![Ripple {
            x: touch.0,
            y: touch.1,
            age_ms: 250,
            id: 0,
        }],
        ..SceneState::default()
    };
    (scene, touch)
}

/// An encoded frame and what it shows.
struct Encoded {
    frame: EncodedFrame,
    scene: SceneState,
    touch: (f32, f32),
}

/// Renders and encodes `n` frames of [`scene`] at 30 fps.
fn encode_scenes(n: u32) -> Vec<Encoded> {
    let mut renderer = Renderer::new(W, H).unwrap();
    let mut enc = VideoEncoder::new(EncoderConfig::new(W, H)).unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let (s, touch) = scene(i);
        let rgba = renderer.render(&s);
        let t = 5_000_000 + u64::from(i) * FRAME_US;
        let f = enc
            .encode(rgba, t, false)
            .unwrap()
            .unwrap_or_else(|| panic!("frame {i} skipped at 30 fps"));
        out.push(Encoded {
            frame: f,
            scene: s,
            touch,
        });
    }
    out
}

fn near(px: &[u8], rgb: [u8; 3], tol: u8) -> bool {
    px[..3].iter().zip(rgb).all(|(&a, b)| a.abs_diff(b) <= tol)
}

/// Centroid and count of the pixels within `tol` of `rgb`.
fn find_colour(rgba: &[u8], w: u32, rgb: [u8; 3], tol: u8) -> Option<((f32, f32), usize)> {
    let (mut sx, mut sy, mut n) = (0f64, 0f64, 0usize);
    for (i, px) in rgba.chunks_exact(4).enumerate() {
        if near(px, rgb, tol) {
            sx += (i as u32 % w) as f64 + 0.5;
            sy += (i as u32 / w) as f64 + 0.5;
            n += 1;
        }
    }
    (n > 0).then(|| (((sx / n as f64) as f32, (sy / n as f64) as f32), n))
}

#[test]
fn video_stream_of_30_sim_frames_passes_ffprobe() {
    let frames: Vec<EncodedFrame> = encode_scenes(30).into_iter().map(|e| e.frame).collect();
    assert!(frames[0].keyframe);
    assert_eq!(
        &nal_unit_types(&frames[0].data)[..3],
        &[NAL_SPS, NAL_PPS, NAL_IDR]
    );
    assert!(frames[1..].iter().all(|f| !f.keyframe));
    let stream: Vec<u8> = frames.iter().flat_map(|f| f.data.iter().copied()).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim.h264");
    std::fs::write(&path, &stream).unwrap();

    let Some(ffprobe) = vphone_testkit::tools::require("ffprobe") else {
        return;
    };
    assert_eq!(
        vphone_testkit::tools::ffprobe_stream(&ffprobe, &path, true),
        "h264,720,1280,30"
    );
}

#[test]
fn video_round_trip_keeps_ripple_and_bubble_in_place() {
    let encoded = encode_scenes(12);
    let mut dec = VideoDecoder::new().unwrap();
    let dot_r = ripple_dot_radius(W, H);
    let mut checked = 0;
    for (i, e) in encoded.iter().enumerate() {
        let touch = e.touch;
        let pic = dec
            .decode(&e.frame.data)
            .unwrap()
            .unwrap_or_else(|| panic!("frame {i} decoded to nothing"));
        let (w, h, rgba) = (pic.width, pic.height, pic.rgba);
        assert_eq!((w, h), (W, H));
        // Check the keyframe, a P-frame early on, and the last P-frame.
        if ![0, 1, encoded.len() - 1].contains(&i) {
            continue;
        }
        let (c, n) = find_colour(&rgba, w, RIPPLE_RGB, 48)
            .unwrap_or_else(|| panic!("frame {i}: no ripple colour found"));
        let area = std::f32::consts::PI * dot_r * dot_r;
        assert!(
            (n as f32) > 0.5 * area && (n as f32) < 1.5 * area,
            "frame {i}: {n} ripple pixels, dot area {area}"
        );
        let d = (c.0 - touch.0).hypot(c.1 - touch.1);
        assert!(d <= 3.0, "frame {i}: ripple at {c:?}, touch at {touch:?}");

        let want = bubble_center(W, H, e.scene.accel);
        let (c, _) = find_colour(&rgba, w, BUBBLE_RGB, 40)
            .unwrap_or_else(|| panic!("frame {i}: no bubble colour found"));
        let d = (c.0 - want.0).hypot(c.1 - want.1);
        assert!(d <= 3.0, "frame {i}: bubble at {c:?}, expected {want:?}");
        checked += 1;
    }
    assert_eq!(checked, 3);
}
