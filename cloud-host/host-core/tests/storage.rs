//! A full disk, for real: the registry on a small tmpfs that fills up. A
//! write is refused whole with an error that says the disk is full and what
//! to do, everything written before stays readable, and once space is freed
//! the same write succeeds. The same for a filesystem that turns read-only.
//! Needs root (it mounts the tmpfs).

use std::path::{Path, PathBuf};
use std::process::Command;

use host_core::registry::{PhoneRecord, Registry};
use host_core::{ErrorKind, HostError};

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "vphone-full",
            ])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed");
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn phone(name: &str) -> PhoneRecord {
    PhoneRecord::sim(name, 1)
}

#[test]
fn a_full_disk_fails_registry_writes_loudly_and_loses_nothing() {
    if !vphone_testkit::tools::require_root("mounting a small tmpfs") {
        return;
    }
    let fs = Tmpfs::mount("512k");
    // Room to free later.
    let filler: PathBuf = fs.path().join("filler");
    std::fs::write(&filler, vec![0u8; 128 * 1024]).unwrap();
    let registry = Registry::open(&fs.path().join("registry.sqlite3")).unwrap();

    let mut written = 0;
    let (failed, err) = loop {
        let name = format!("p{written}");
        match registry.insert_phone(&phone(&name)) {
            Ok(()) => written += 1,
            Err(e) => break (name, e),
        }
        assert!(written < 200_000, "512 KiB never filled up");
    };
    eprintln!("{written} phones written before the disk filled: {err}");
    // Each commit appends pages to the write-ahead log, so a few dozen fit.
    assert!(written >= 10, "the disk filled too early: {written}");
    assert!(matches!(err, HostError::StorageFull(_)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let text = err.to_string();
    assert!(
        text.contains("disk holding the data dir is full") && text.contains("free space"),
        "{text}"
    );
    assert_eq!(
        tonic::Status::from(err).code(),
        tonic::Code::Unavailable,
        "the operator API answers UNAVAILABLE"
    );

    // Nothing was lost and nothing was half-written.
    assert_eq!(registry.phones().unwrap().len(), written);
    assert!(matches!(
        registry.phone(&failed),
        Err(HostError::NotFound { .. })
    ));

    // Space freed: the same write goes through, on the same open registry.
    std::fs::remove_file(&filler).unwrap();
    registry.insert_phone(&phone(&failed)).unwrap();
    assert_eq!(registry.phones().unwrap().len(), written + 1);
    drop(registry);
    let reopened = Registry::open(&fs.path().join("registry.sqlite3")).unwrap();
    assert_eq!(reopened.phones().unwrap().len(), written + 1);
}

#[test]
fn a_read_only_data_dir_is_refused_clearly_and_loses_nothing() {
    if !vphone_testkit::tools::require_root("mounting and remounting a small tmpfs") {
        return;
    }
    let fs = Tmpfs::mount("4m");
    let path = fs.path().join("registry.sqlite3");
    Registry::open(&path)
        .unwrap()
        .insert_phone(&phone("before"))
        .unwrap();

    // A volume mounted read-only (by mistake, or by the kernel after an
    // I/O error): the host cannot keep its registry there and says why,
    // instead of SQLite's "unable to open database file". (Linux refuses to
    // remount a filesystem with files open for writing, so the registry is
    // opened on it afresh, as the host does at start.)
    remount(fs.path(), "ro");
    let err = Registry::open(&path).unwrap_err();
    assert!(matches!(err, HostError::StorageReadOnly(_)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let text = err.to_string();
    assert!(
        text.contains("data dir is read-only") && text.contains("make it writable"),
        "{text}"
    );

    // Writable again: the registry opens with everything in it, and the
    // write goes through.
    remount(fs.path(), "rw");
    let registry = Registry::open(&path).unwrap();
    registry.insert_phone(&phone("during")).unwrap();
    let mut names: Vec<String> = registry
        .phones()
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    names.sort();
    assert_eq!(names, ["before", "during"]);
}

fn remount(dir: &Path, mode: &str) {
    let status = Command::new("mount")
        .args(["-o", &format!("remount,{mode}")])
        .arg(dir)
        .status()
        .expect("run mount");
    assert!(status.success(), "mount -o remount,{mode} failed");
}
