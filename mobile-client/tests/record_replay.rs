//! Recording a synthetic session and replaying the file yields the same
//! samples and locations.

use mobile_client::proto::{ActiveSensor, ActiveSensors, Location, SensorBatch, SensorKind};
use mobile_client::sensors::SensorSource;
use mobile_client::sensors::replay::{
    Recorder, Recording, RecordingSource, ReplayOptions, ReplaySource,
};
use mobile_client::sensors::synthetic::{SyntheticConfig, SyntheticSource};
use mobile_client::sensors::{Sampler, SourceSpec};

const MS: u64 = 1_000_000;
const START: u64 = 3_000_000_000;

fn active() -> ActiveSensors {
    let sensor = |kind: SensorKind, rate_hz: f32| ActiveSensor {
        kind: kind as i32,
        rate_hz,
        max_latency_ms: 0,
    };
    ActiveSensors {
        sensors: vec![
            sensor(SensorKind::Accelerometer, 200.0),
            sensor(SensorKind::Gyroscope, 50.0),
            sensor(SensorKind::Orientation, 20.0),
            sensor(SensorKind::MagnetometerUncalibrated, 10.0),
            sensor(SensorKind::Pressure, 2.0),
        ],
        location_wanted: true,
        location_interval_ms: 500,
    }
}

/// Polls the sampler every millisecond for `ms` milliseconds.
fn drive<S: SensorSource>(sampler: &mut Sampler<S>, ms: u64) -> (Vec<SensorBatch>, Vec<Location>) {
    sampler.set_active(&active(), START);
    let mut batches = Vec::new();
    let mut locations = Vec::new();
    for i in 0..ms {
        let now = START + i * MS;
        let batch = sampler.poll(now);
        if !batch.samples.is_empty() {
            batches.push(batch);
        }
        locations.extend(sampler.poll_location(now));
    }
    (batches, locations)
}

#[test]
fn record_then_replay_gives_the_same_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("walk.rec");

    let synthetic = SyntheticSource::new(SyntheticConfig::default());
    let recorder = Recorder::create(&path).unwrap();
    let mut sampler = Sampler::new(RecordingSource::new(synthetic, recorder));
    let (recorded, recorded_locations) = drive(&mut sampler, 2000);
    sampler.into_source().into_parts().unwrap();

    let total: usize = recorded.iter().map(|b| b.samples.len()).sum();
    assert_eq!(total, 400 + 100 + 40 + 20 + 4);
    assert_eq!(recorded_locations.len(), 4);

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# vphone sensor recording v1\n"), "{text}");
    assert_eq!(text.lines().count(), 1 + total + 4);
    assert_eq!(
        Recording::parse(&text, "walk.rec").unwrap().records.len(),
        total + 4
    );

    let replay = ReplaySource::open(
        &path,
        ReplayOptions {
            speed: 1.0,
            looping: false,
        },
    )
    .unwrap();
    let mut kinds: Vec<i32> = replay.capabilities().iter().map(|c| c.kind).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, vec![1, 2, 4, 7, 12]);
    let mut sampler = Sampler::new(replay);
    let (replayed, replayed_locations) = drive(&mut sampler, 2000);
    assert_eq!(replayed, recorded);
    assert_eq!(replayed_locations, recorded_locations);
    // Past the end: nothing more, and the source says so.
    assert!(!sampler.source().finished());
    assert!(sampler.poll(START + 2100 * MS).samples.is_empty());
    assert!(sampler.source().finished());

    // Through the CLI-facing spec, too (looping).
    let spec: SourceSpec = format!("replay:{}", path.display()).parse().unwrap();
    let mut looping = Sampler::new(spec.open().unwrap());
    let (first_pass, _) = drive(&mut looping, 2000);
    assert_eq!(first_pass, recorded);
    assert!(!looping.source().finished());
}

#[test]
fn replay_at_double_speed_compresses_time() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("fast.rec");
    let mut sampler = Sampler::new(RecordingSource::new(
        SyntheticSource::new(SyntheticConfig::default()),
        Recorder::create(&path).unwrap(),
    ));
    let (recorded, _) = drive(&mut sampler, 1000);
    sampler.into_source().into_parts().unwrap();
    let recorded_gyro: Vec<_> = recorded
        .iter()
        .flat_map(|b| &b.samples)
        .filter(|s| s.kind == SensorKind::Gyroscope as i32)
        .collect();

    let replay = ReplaySource::open(
        &path,
        ReplayOptions {
            speed: 2.0,
            looping: false,
        },
    )
    .unwrap();
    let mut sampler = Sampler::new(replay);
    // Half a second at 2x plays the whole second; the 50 Hz gyro, sampled
    // at up to 50 Hz, keeps every other recorded sample.
    let (replayed, _) = drive(&mut sampler, 500);
    let gyro: Vec<_> = replayed
        .iter()
        .flat_map(|b| &b.samples)
        .filter(|s| s.kind == SensorKind::Gyroscope as i32)
        .collect();
    assert_eq!(gyro.len(), 25);
    for (i, s) in gyro.iter().enumerate() {
        let original = recorded_gyro[2 * i];
        assert_eq!(s.values, original.values);
        assert_eq!(s.seq, i as u64 + 1);
        assert_eq!(s.timestamp_ns - START, (original.timestamp_ns - START) / 2);
    }
}
