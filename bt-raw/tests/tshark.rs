//! A btsnoop file written by bt-raw is read by an independent decoder:
//! Wireshark's `tshark`. It must see every packet, decode the LE encryption
//! command, and show the LTK zeroed.

use std::process::Command;

use bt_raw::H4Packet;
use bt_raw::btsnoop::{Direction, SnoopWriter};

fn tshark_available() -> bool {
    vphone_testkit::tools::require("tshark").is_some()
}

fn pkt(raw: Vec<u8>) -> H4Packet {
    H4Packet::parse(raw).unwrap()
}

fn capture(unredacted: bool) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = std::io::BufWriter::new(file.reopen().unwrap());
    let mut w = if unredacted {
        SnoopWriter::unredacted(out).unwrap()
    } else {
        SnoopWriter::new(out).unwrap()
    };
    let t0 = 1_764_000_000_000_000i64;
    let mut enc = vec![0x01, 0x19, 0x20, 28, 0x40, 0x00];
    enc.extend_from_slice(&[0x11; 8]); // random
    enc.extend_from_slice(&[0x22, 0x33]); // ediv
    enc.extend_from_slice(&[0xA5; 16]); // LTK
    let packets = [
        (Direction::HostToController, vec![0x01, 0x03, 0x0C, 0x00]),
        (
            Direction::ControllerToHost,
            vec![0x04, 0x0E, 0x04, 0x01, 0x03, 0x0C, 0x00],
        ),
        (Direction::HostToController, enc),
        (
            Direction::ControllerToHost,
            vec![0x04, 0x0F, 0x04, 0x00, 0x01, 0x19, 0x20],
        ),
        // ATT Read Request on handle 0x0003 over the LE link 0x0040.
        (
            Direction::HostToController,
            vec![
                0x02, 0x40, 0x00, 0x07, 0x00, 0x03, 0x00, 0x04, 0x00, 0x0A, 0x03, 0x00,
            ],
        ),
    ];
    for (i, (dir, raw)) in packets.into_iter().enumerate() {
        w.write(dir, &pkt(raw), t0 + i as i64 * 1000).unwrap();
    }
    w.flush().unwrap();
    file
}

fn tshark_verbose(path: &std::path::Path) -> String {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(path)
        .arg("-V")
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn tshark_decodes_our_btsnoop_with_ltk_redacted() {
    if !tshark_available() {
        return;
    }
    let file = capture(false);
    let text = tshark_verbose(file.path());
    let frames = text.matches("\nFrame ").count() + usize::from(text.starts_with("Frame "));
    assert_eq!(frames, 5, "{text}");
    assert!(text.contains("LE Start Encryption"), "{text}");
    assert!(
        text.contains("Long Term Key: 00000000000000000000000000000000"),
        "{text}"
    );
    assert!(
        !text.to_lowercase().contains("a5a5a5a5"),
        "LTK leaked into the capture"
    );
    assert!(text.contains("Read Request"), "ATT not decoded: {text}");
}

#[test]
fn unredacted_capture_keeps_the_ltk_for_tshark() {
    if !tshark_available() {
        return;
    }
    let file = capture(true);
    let text = tshark_verbose(file.path());
    assert!(
        text.to_lowercase()
            .contains("long term key: a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5"),
        "{text}"
    );
}

/// Writes `packets` to a redacted capture and returns tshark's full decode
/// with the hex dump of every frame.
fn decode_redacted(packets: Vec<(Direction, Vec<u8>)>) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut w = SnoopWriter::new(std::io::BufWriter::new(file.reopen().unwrap())).unwrap();
    for (i, (dir, raw)) in packets.into_iter().enumerate() {
        w.write(dir, &pkt(raw), 1_764_000_000_000_000 + i as i64 * 1000)
            .unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file.path())
        .args(["-V", "-x"])
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn tshark_sees_passkeys_oob_data_dhkeys_and_split_smp_keys_zeroed() {
    if !tshark_available() {
        return;
    }
    let up = Direction::HostToController;
    let down = Direction::ControllerToHost;
    // Each secret uses its own filler byte, so a leak names its packet.
    let passkey = [[0x01; 6].as_slice(), &0x000C_3C3Cu32.to_le_bytes()].concat();
    let oob = [[0x01; 6].as_slice(), &[0xC4; 16], &[0xC5; 16]].concat();
    let mut dhkey = vec![0x04, 0x3E, 34, 0x09, 0x00];
    dhkey.extend_from_slice(&[0xC6; 32]);
    // SMP Encryption Information (code 0x06, LTK) on link 0x0040, in a start
    // fragment holding the L2CAP header, the code and 5 key bytes, and a
    // continuation with the other 11.
    let first = [
        [0x02, 0x40, 0x20, 10, 0x00, 17, 0x00, 0x06, 0x00, 0x06].as_slice(),
        &[0xC7; 5],
    ]
    .concat();
    let rest = [[0x02, 0x40, 0x10, 11, 0x00].as_slice(), &[0xC7; 11]].concat();
    let packets = vec![
        (
            up,
            H4Packet::command(0x042E, &passkey)
                .unwrap()
                .as_bytes()
                .to_vec(),
        ),
        (
            up,
            H4Packet::command(0x0430, &oob).unwrap().as_bytes().to_vec(),
        ),
        (down, dhkey),
        (down, first),
        (down, rest),
    ];
    let text = decode_redacted(packets).to_lowercase();
    for decoded in [
        "user passkey request reply",
        "remote oob data request reply",
        "le generate dhkey complete",
        "encryption information",
    ] {
        assert!(
            text.contains(decoded),
            "tshark did not decode {decoded}: {text}"
        );
    }
    for (secret, hex) in [
        ("passkey", "3c 3c 0c"),
        ("OOB C", "c4 c4 c4 c4"),
        ("OOB R", "c5 c5 c5 c5"),
        ("DHKey", "c6 c6 c6 c6"),
        ("split LTK", "c7 c7"),
    ] {
        assert!(
            !text.contains(hex),
            "the {secret} leaked into the capture: {text}"
        );
    }
}
