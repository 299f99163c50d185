//! btsnoop capture files (datalink 1002, "HCI UART (H4)"), as written by
//! Android and bumble and read by Wireshark.
//!
//! Layout (all big-endian): a 16-byte header (`"btsnoop\0"`, version 1,
//! datalink), then per packet a 24-byte record header (original length,
//! included length, flags, cumulative drops, timestamp in µs since
//! 0000-01-01) and the H4 bytes. Flags: bit 0 set = received (controller →
//! host), bit 1 set = command or event.
//!
//! [`SnoopWriter`] redacts keys by default (see [`crate::redact`]): the key
//! bytes are zeroed and every length is kept, so the capture still decodes.
//! Only [`SnoopWriter::unredacted`] writes keys, for a user who asks for it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::{Error, H4Packet, PacketType, redact};

/// The datalink type for H4 (the payload starts with the H4 type byte).
pub const DATALINK_H4: u32 = 1002;
/// µs between 0000-01-01 and the Unix epoch, as btsnoop timestamps count.
pub const EPOCH_DELTA_US: i64 = 0x00DC_DDB3_0F2F_8000;
const MAGIC: &[u8; 8] = b"btsnoop\0";

pub use crate::packet::Direction;

/// Where a capture goes: `path`, or for a capture that keeps keys
/// (`unredacted`) the same name marked `.unredacted` before its extension
/// (`cap.btsnoop` -> `cap.unredacted.btsnoop`), so the file says what it
/// holds wherever it is copied. A name that already says so is kept.
#[must_use]
pub fn capture_path(path: &Path, unredacted: bool) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    match name {
        Some(n) if unredacted && !n.contains("unredacted") => {
            let marked = match n.rsplit_once('.') {
                Some((stem, ext)) if !stem.is_empty() => format!("{stem}.unredacted.{ext}"),
                _ => format!("{n}.unredacted"),
            };
            path.with_file_name(marked)
        }
        _ => path.to_path_buf(),
    }
}

/// Creates (or truncates) a capture file readable by its owner only (0600 on
/// Unix): captures hold addresses and traffic, and keys when unredacted.
///
/// # Errors
/// The I/O error from creating the file.
pub fn create_capture(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        let file = options.open(path)?;
        // An existing file keeps its mode on open: close it too.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(file)
    }
    #[cfg(not(unix))]
    options.open(path)
}

/// Writes a btsnoop file.
#[derive(Debug)]
pub struct SnoopWriter<W: Write> {
    out: W,
    /// `None` for a capture that keeps keys.
    redactor: Option<redact::Redactor>,
    records: u64,
}

impl<W: Write> SnoopWriter<W> {
    /// Starts a capture with key redaction on, writing the file header.
    ///
    /// # Errors
    /// [`Error::Io`] from the writer.
    pub fn new(out: W) -> Result<Self, Error> {
        Self::start(out, true)
    }

    /// Starts a capture that keeps keys in clear. Only for a user who asked
    /// for it explicitly (`--unredacted`).
    ///
    /// # Errors
    /// [`Error::Io`] from the writer.
    pub fn unredacted(out: W) -> Result<Self, Error> {
        Self::start(out, false)
    }

    fn start(mut out: W, redact: bool) -> Result<Self, Error> {
        let mut h = Vec::with_capacity(16);
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&1u32.to_be_bytes());
        h.extend_from_slice(&DATALINK_H4.to_be_bytes());
        out.write_all(&h)
            .map_err(|e| Error::io("writing btsnoop header", e))?;
        Ok(Self {
            out,
            redactor: redact.then(redact::Redactor::new),
            records: 0,
        })
    }

    /// Appends one packet, stamped with `unix_us` (µs since the Unix epoch).
    ///
    /// # Errors
    /// [`Error::Io`] from the writer.
    pub fn write(&mut self, dir: Direction, packet: &H4Packet, unix_us: i64) -> Result<(), Error> {
        let mut flags = u32::from(dir == Direction::ControllerToHost);
        if matches!(packet.kind(), PacketType::Command | PacketType::Event) {
            flags |= 2;
        }
        let bytes = if let Some(r) = &mut self.redactor {
            std::borrow::Cow::Owned(r.redacted(dir, packet).0)
        } else {
            std::borrow::Cow::Borrowed(packet.as_bytes())
        };
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let mut rec = Vec::with_capacity(24 + bytes.len());
        rec.extend_from_slice(&len.to_be_bytes());
        rec.extend_from_slice(&len.to_be_bytes());
        rec.extend_from_slice(&flags.to_be_bytes());
        rec.extend_from_slice(&0u32.to_be_bytes());
        rec.extend_from_slice(&(unix_us + EPOCH_DELTA_US).to_be_bytes());
        rec.extend_from_slice(&bytes);
        self.out
            .write_all(&rec)
            .map_err(|e| Error::io("writing btsnoop record", e))?;
        self.records += 1;
        Ok(())
    }

    /// Records written.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Flushes the underlying writer.
    ///
    /// # Errors
    /// [`Error::Io`] from the writer.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.out
            .flush()
            .map_err(|e| Error::io("flushing btsnoop file", e))
    }

    /// Returns the underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// One record read back from a btsnoop file.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Record {
    /// Which way the packet travelled.
    pub direction: Direction,
    /// The H4 bytes as stored.
    pub bytes: Vec<u8>,
    /// µs since the Unix epoch.
    pub unix_us: i64,
}

/// Reads a datalink-1002 btsnoop file (used by tests and `vphonectl` checks).
///
/// # Errors
/// [`Error::BadSnoop`] for a wrong magic, version or datalink, or a truncated
/// record; [`Error::Io`] from the reader.
pub fn read_all(mut input: impl Read) -> Result<Vec<Record>, Error> {
    let mut all = Vec::new();
    input
        .read_to_end(&mut all)
        .map_err(|e| Error::io("reading btsnoop file", e))?;
    if all.len() < 16 || &all[..8] != MAGIC {
        return Err(Error::BadSnoop("missing btsnoop magic"));
    }
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    if be32(&all[8..12]) != 1 {
        return Err(Error::BadSnoop("unsupported version"));
    }
    if be32(&all[12..16]) != DATALINK_H4 {
        return Err(Error::BadSnoop("datalink is not H4 (1002)"));
    }
    let mut out = Vec::new();
    let mut at = 16;
    while at < all.len() {
        let h = all
            .get(at..at + 24)
            .ok_or(Error::BadSnoop("truncated record header"))?;
        let incl = be32(&h[4..8]) as usize;
        let flags = be32(&h[8..12]);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&h[16..24]);
        let bytes = all
            .get(at + 24..at + 24 + incl)
            .ok_or(Error::BadSnoop("truncated record"))?
            .to_vec();
        out.push(Record {
            direction: if flags & 1 == 1 {
                Direction::ControllerToHost
            } else {
                Direction::HostToController
            },
            bytes,
            unix_us: i64::from_be_bytes(ts) - EPOCH_DELTA_US,
        });
        at += 24 + incl;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(raw: &[u8]) -> H4Packet {
        H4Packet::parse(raw.to_vec()).unwrap()
    }

    fn ltk_reply() -> H4Packet {
        let mut raw = vec![0x01, 0x1A, 0x20, 18, 0x40, 0x00];
        raw.extend_from_slice(&[0x5A; 16]);
        pkt(&raw)
    }

    #[test]
    fn header_and_records_layout() {
        let mut w = SnoopWriter::new(Vec::new()).unwrap();
        w.write(
            Direction::HostToController,
            &pkt(&[0x01, 0x03, 0x0C, 0x00]),
            1_000_000,
        )
        .unwrap();
        w.write(
            Direction::ControllerToHost,
            &pkt(&[0x02, 0x40, 0x20, 0x01, 0x00, 0x99]),
            1_000_001,
        )
        .unwrap();
        let buf = w.into_inner();
        assert_eq!(&buf[..16], b"btsnoop\0\x00\x00\x00\x01\x00\x00\x03\xea");
        // First record: lengths 4/4, flags 2 (sent command), drops 0.
        assert_eq!(
            &buf[16..32],
            &[0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 0]
        );
        assert_eq!(
            i64::from_be_bytes(buf[32..40].try_into().unwrap()),
            1_000_000 + EPOCH_DELTA_US
        );
        let recs = read_all(&buf[..]).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].direction, Direction::ControllerToHost);
        assert_eq!(recs[1].bytes, vec![0x02, 0x40, 0x20, 0x01, 0x00, 0x99]);
        assert_eq!(recs[1].unix_us, 1_000_001);
    }

    #[test]
    fn keys_are_redacted_by_default_and_kept_only_when_asked() {
        let mut w = SnoopWriter::new(Vec::new()).unwrap();
        w.write(Direction::HostToController, &ltk_reply(), 0)
            .unwrap();
        let recs = read_all(&w.into_inner()[..]).unwrap();
        assert_eq!(recs[0].bytes.len(), 22);
        assert!(recs[0].bytes[6..].iter().all(|&b| b == 0));

        let mut w = SnoopWriter::unredacted(Vec::new()).unwrap();
        w.write(Direction::HostToController, &ltk_reply(), 0)
            .unwrap();
        let recs = read_all(&w.into_inner()[..]).unwrap();
        assert!(recs[0].bytes[6..].iter().all(|&b| b == 0x5A));
    }

    #[test]
    fn reader_rejects_bad_files() {
        assert!(read_all(&b"nope"[..]).is_err());
        let mut w = SnoopWriter::new(Vec::new()).unwrap();
        w.write(Direction::HostToController, &ltk_reply(), 0)
            .unwrap();
        let buf = w.into_inner();
        assert!(matches!(
            read_all(&buf[..buf.len() - 1]),
            Err(Error::BadSnoop(_))
        ));
    }

    #[test]
    fn unredacted_captures_say_so_in_their_name() {
        let p = |s: &str, u| capture_path(Path::new(s), u);
        assert_eq!(p("/x/cap.btsnoop", false), Path::new("/x/cap.btsnoop"));
        assert_eq!(
            p("/x/cap.btsnoop", true),
            Path::new("/x/cap.unredacted.btsnoop")
        );
        assert_eq!(p("cap", true), Path::new("cap.unredacted"));
        assert_eq!(p(".hidden", true), Path::new(".hidden.unredacted"));
        assert_eq!(p("a.unredacted.log", true), Path::new("a.unredacted.log"));
    }

    #[cfg(unix)]
    #[test]
    fn captures_are_private_even_over_an_open_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cap.btsnoop");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(create_capture(&path).unwrap());
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 0, "truncated");
    }
}
