//! Key redaction, alone and across a stream: never out of bounds, counts
//! what it zeroed, never changes a length, zeroes at least what the
//! one-packet rule zeroes for commands and events; and a capture written
//! with it reads back record for record.
#![no_main]

use bt_raw::btsnoop::{SnoopWriter, read_all};
use bt_raw::redact::{Redactor, key_ranges, redact_in_place};
use bt_raw::{Direction, H4Packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Read as a btsnoop file first: the reader must refuse junk cleanly.
    let _ = read_all(data);

    let mut redactor = Redactor::new();
    let mut rest = data;
    let mut valid = Vec::new();
    while let Some((&head, tail)) = rest.split_first() {
        let len = usize::from(head & 0x7F).min(tail.len());
        let (raw, next) = tail.split_at(len);
        rest = next;
        let dir = if head & 0x80 == 0 {
            Direction::HostToController
        } else {
            Direction::ControllerToHost
        };
        let ranges = key_ranges(raw);
        assert!(
            ranges
                .iter()
                .all(|r| r.start <= r.end && r.end <= raw.len())
        );
        let mut alone = raw.to_vec();
        let n = redact_in_place(&mut alone);
        assert!(n <= raw.len());
        assert_eq!(alone.len(), raw.len());
        let mut streamed = raw.to_vec();
        let m = redactor.redact_in_place(dir, &mut streamed);
        assert!(m <= raw.len());
        assert_eq!(streamed.len(), raw.len());
        if matches!(raw.first(), Some(0x01 | 0x04)) {
            assert_eq!(alone, streamed, "commands and events need no history");
        }
        if let Ok(p) = H4Packet::parse(raw.to_vec()) {
            valid.push((dir, p));
        }
    }

    let mut file = Vec::new();
    {
        let mut w = SnoopWriter::new(&mut file).expect("header");
        for (dir, p) in &valid {
            w.write(*dir, p, 0).expect("in-memory write");
        }
    }
    let back = read_all(&file[..]).expect("our own capture reads back");
    assert_eq!(back.len(), valid.len());
    for (r, (_, p)) in back.iter().zip(&valid) {
        assert_eq!(r.bytes.len(), p.len());
    }
});
