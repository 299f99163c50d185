//! Files and directories the host keeps to itself: created 0700, checked
//! for owner and mode before the host trusts what they hold.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::HostError;

/// Creates `dir` (and its parents) for the host's private use, or checks an
/// existing one: it must be a real directory (not a symlink) owned by the
/// host's user; its mode is set to 0700.
///
/// # Errors
/// [`HostError::Denied`] when another user owns it or it is a symlink;
/// [`HostError::Io`] when it cannot be created.
pub fn private_dir(dir: &Path) -> Result<(), HostError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| HostError::io(format!("creating {}", dir.display()), e))?;
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| HostError::io(format!("checking {}", dir.display()), e))?;
    mine(dir, &meta)?;
    if !meta.is_dir() {
        return Err(denied(dir, "is not a directory"));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| HostError::io(format!("making {} private", dir.display()), e))
}

pub(crate) fn denied(path: &Path, why: &str) -> HostError {
    HostError::Denied(format!(
        "{} {why}; the host only trusts files that are its own",
        path.display()
    ))
}

/// Not a symlink, and owned by the host's user.
fn mine(path: &Path, meta: &std::fs::Metadata) -> Result<(), HostError> {
    if meta.file_type().is_symlink() {
        return Err(denied(path, "is a symlink"));
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(denied(
            path,
            &format!("belongs to uid {}, not to the host's user", meta.uid()),
        ));
    }
    Ok(())
}

/// A secret the operator provides (a key, a token; maybe a mounted
/// Secret, owned by root): refused when every user of the machine may read
/// it. Its owner is not checked (a Kubernetes Secret's files are root's,
/// readable through the pod's group).
///
/// # Errors
/// [`HostError::Denied`] when others may read it; [`HostError::Io`] when
/// it cannot be examined.
pub fn not_readable_by_others(path: &Path) -> Result<(), HostError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| HostError::io(format!("checking {}", path.display()), e))?;
    if meta.mode() & 0o004 != 0 {
        return Err(HostError::Denied(format!(
            "{} is readable by every user (mode {:o}); make it private: chmod o-rwx",
            path.display(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// [`mine`], and nobody else may write it.
pub(crate) fn owned_by_us(path: &Path, meta: &std::fs::Metadata) -> Result<(), HostError> {
    mine(path, meta)?;
    if meta.mode() & 0o022 != 0 {
        return Err(denied(
            path,
            &format!("may be written by others (mode {:o})", meta.mode() & 0o7777),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_private_dir_is_made_0700_and_closed_again_at_every_start() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700, "an opened data dir is closed again");
    }

    #[test]
    fn a_symlinked_or_foreign_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = private_dir(&link).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Denied, "{e}");
        assert!(e.to_string().contains("is a symlink"), "{e}");
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&real, Some(65534), Some(65534)).unwrap();
            let e = private_dir(&real).unwrap_err();
            assert!(e.to_string().contains("belongs to uid 65534"), "{e}");
        } else {
            eprintln!("SKIPPED (needs root): the foreign-owner half");
        }
    }
}
