//! Everything a browser handset sends: control lines (any bytes, split at
//! newlines as the host splits them) through the decoder and the meaning
//! they get after admission, the `hello` -> bridge `Hello` mapping, and
//! sensor datagrams through the decoder and the latest-wins filter. A
//! refusal must carry a code and a reason; nothing may panic.
#![no_main]

use device_bridge::proto::SensorKind;
use device_bridge::web::protocol::{Up, after_admission, decode_line, decode_sensors, to_hello};
use device_bridge::{LatestWins, SampleVerdict};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        for line in rest.split(|b| *b == b'\n') {
            match decode_line(line) {
                Ok(Up::Hello(h)) => {
                    let _ = to_hello(&h).map_err(|(_, why)| assert!(!why.is_empty()));
                }
                Ok(up) => {
                    let _ = after_admission(up).map_err(|(_, why)| assert!(!why.is_empty()));
                }
                Err((_, why)) => assert!(!why.is_empty()),
            }
        }
    } else {
        let mut filter = LatestWins::new([
            SensorKind::Accelerometer,
            SensorKind::Gyroscope,
            SensorKind::Orientation,
        ]);
        match decode_sensors(rest) {
            Ok(samples) => {
                for s in samples {
                    assert!(s.values.len() <= 16 && s.values.iter().all(|v| v.is_finite()));
                    if let Ok(SampleVerdict::Apply) = filter.check(&s) {
                        assert_eq!(
                            filter.last_applied(SensorKind::try_from(s.kind).unwrap_or_default()),
                            s.seq
                        );
                    }
                }
            }
            Err((_, why)) => assert!(!why.is_empty()),
        }
    }
});
