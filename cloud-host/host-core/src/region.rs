//! The shared memory region a phone writes screen images into
//! (`ImageTransport` `MMAP` of the emulator's `streamScreenshot`), so
//! megabytes of pixels per frame skip protobuf, HTTP/2 and TCP: one write
//! by the phone, one read here. It is a file in `/dev/shm` (memory, never
//! disk) or the temp dir, mode 0600. Its name is removed as soon as the
//! phone holds the file open ([`ScreenRegion::unlink`]), so the memory goes
//! when the last of the two closes it, even if this process is killed;
//! names left by processes that died before that are swept at the next
//! [`ScreenRegion::create`].

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::HostError;

/// A screen region owned by the host.
#[derive(Debug)]
pub(crate) struct ScreenRegion {
    path: PathBuf,
    file: std::fs::File,
    len: u64,
    linked: bool,
}

const PREFIX: &str = "vphone-screen-";

/// Age after which a named region of a dead process is removed.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes regions named by processes that no longer run.
fn sweep(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        // A live region keeps its name only until the phone's first image,
        // so an old name whose process is gone is stale. (The age also
        // spares a host in another PID namespace sharing /dev/shm.)
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|a| a > STALE_AFTER));
        if old && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

impl ScreenRegion {
    /// Creates a region of `len` bytes.
    ///
    /// # Errors
    /// [`HostError::Io`] when the file cannot be created or sized.
    pub(crate) fn create(len: u64) -> Result<Self, HostError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(|| sweep(&dir));
        let path = dir.join(format!(
            "{PREFIX}{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            crate::unix_ns()
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                HostError::io(format!("creating the screen region {}", path.display()), e)
            })?;
        let region = Self {
            path,
            file,
            len,
            linked: true,
        };
        region
            .file
            .set_len(len)
            .map_err(|e| HostError::io(format!("sizing the screen region to {len} bytes"), e))?;
        Ok(region)
    }

    /// Its path, for the phone.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the region's name once the phone holds it open (after its
    /// first image): the memory stays until both close it.
    pub(crate) fn unlink(&mut self) {
        if std::mem::take(&mut self.linked)
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            tracing::debug!(error = %e, path = %self.path.display(), "cannot remove the screen region's name");
        }
    }

    /// The first `len` bytes (an image the phone has just written).
    ///
    /// # Errors
    /// [`HostError::Invalid`] when `len` exceeds the region, [`HostError::Io`]
    /// when reading fails.
    pub(crate) fn read(&self, len: usize) -> Result<Vec<u8>, HostError> {
        if len as u64 > self.len {
            return Err(HostError::Internal {
                what: "screen image",
                why: format!("{len} bytes do not fit the {}-byte region", self.len),
            });
        }
        use std::io::{Read as _, Seek as _, SeekFrom};
        let err = |e| HostError::io("reading the screen region", e);
        // Read into the new buffer's spare capacity: no zeroing of megabytes
        // that are overwritten at once (`read_to_end` fills uninitialised
        // capacity). Only this region's reader moves the file offset.
        let mut buf = Vec::with_capacity(len);
        let mut file = &self.file;
        file.seek(SeekFrom::Start(0)).map_err(err)?;
        file.take(len as u64).read_to_end(&mut buf).map_err(err)?;
        if buf.len() != len {
            return Err(err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)));
        }
        Ok(buf)
    }
}

impl Drop for ScreenRegion {
    fn drop(&mut self) {
        self.unlink();
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt as _;

    use super::*;

    #[test]
    fn region_is_private_sized_readable_and_removed() {
        use std::os::unix::fs::PermissionsExt as _;
        let r = ScreenRegion::create(4096).expect("region");
        let path = r.path().to_path_buf();
        let meta = std::fs::metadata(&path).expect("exists");
        assert_eq!(meta.len(), 4096);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // What a phone writes is what the host reads.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("phone opens it")
            .write_all_at(b"pixels", 0)
            .expect("phone writes");
        assert_eq!(r.read(6).expect("read"), b"pixels");
        assert!(r.read(4097).is_err(), "more than the region is refused");
        drop(r);
        assert!(!path.exists(), "removed when dropped");
    }

    #[test]
    fn unlinked_region_still_reads_and_stale_names_are_swept() {
        let mut r = ScreenRegion::create(64).expect("region");
        let path = r.path().to_path_buf();
        let phone = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("phone opens it");
        r.unlink();
        assert!(!path.exists(), "name gone once the phone holds it");
        phone
            .write_all_at(b"still shared", 0)
            .expect("phone writes");
        assert_eq!(r.read(12).expect("read"), b"still shared");

        // Names left by processes that are gone (pids beyond pid_max), one
        // of a live process (this one) and one that is not a region.
        let dir = tempfile::tempdir().expect("dir");
        let dead = dir.path().join(format!("{PREFIX}4294967295-0-1"));
        let live = dir
            .path()
            .join(format!("{PREFIX}{}-0-1", std::process::id()));
        let other = dir.path().join("unrelated-4294967295");
        let fresh_dead = dir.path().join(format!("{PREFIX}4294967294-0-1"));
        for p in [&dead, &live, &other, &fresh_dead] {
            std::fs::write(p, b"x").expect("write");
        }
        let long_ago = std::time::SystemTime::now() - 2 * STALE_AFTER;
        for p in [&dead, &live, &other] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .expect("open")
                .set_modified(long_ago)
                .expect("age it");
        }
        sweep(dir.path());
        assert!(!dead.exists(), "old, its process gone: removed");
        assert!(live.exists(), "its process runs: kept");
        assert!(other.exists(), "not ours: kept");
        assert!(fresh_dead.exists(), "too young to judge: kept");
    }
}
