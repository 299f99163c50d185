//! The sensor recording format the companion replays (`--sensors
//! replay:FILE`) and the `--sensors` spec itself. A recording that parses
//! is in time order.
#![no_main]

use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use mobile_client::sensors::SourceSpec;
use mobile_client::sensors::replay::Recording;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rec) = Recording::parse(text, "fuzz") {
        let times: Vec<u64> = rec.records.iter().map(|r| r.timestamp_ns()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    }
    let _ = SourceSpec::from_str(text);
});
