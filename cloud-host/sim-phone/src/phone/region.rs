//! The shared memory region a client (the host's screen feed) gives the
//! phone to write screen images into: the Android Emulator's MMAP transport.

use sensor_proto::emulator::{Image, ImageFormat, image_format, image_transport};
use tonic::Status;

/// A client's shared memory region (`ImageTransport` channel `MMAP`): the
/// phone writes each image's pixels into it, from offset 0, and the reply
/// carries no pixels, as the Android Emulator does. The handle is the path
/// of a file the client created and sized (`file://` prefix optional).
/// Unlike the emulator, which maps any path, the sim writes only into an
/// existing regular file with one link directly in `/dev/shm` or the temp
/// dir, opened without following a symlink and without blocking (a FIFO is
/// refused, not waited on); it never creates or truncates. A client that
/// reads the region after the next image was written sees that one instead
/// (tearing, as with the emulator).
#[derive(Debug)]
pub struct Region {
    file: std::fs::File,
    len: u64,
}

/// Where the sim accepts regions: the shared memory and temp dirs.
pub(super) fn region_dir_allowed(dir: &std::path::Path) -> bool {
    dir == std::path::Path::new("/dev/shm") || dir == std::env::temp_dir()
}

impl Region {
    /// The region `want.transport` names; `None` for pixels in the message.
    ///
    /// # Errors
    /// INVALID_ARGUMENT naming what is wrong with the transport or the file.
    pub fn open(want: &ImageFormat) -> Result<Option<Self>, Status> {
        use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};

        use image_transport::TransportChannel;
        let Some(t) = &want.transport else {
            return Ok(None);
        };
        match TransportChannel::try_from(t.channel) {
            Ok(TransportChannel::Unspecified) => return Ok(None),
            Ok(TransportChannel::Mmap) => {}
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown transport channel {}",
                    t.channel
                )));
            }
        }
        if image_format::ImgFormat::try_from(want.format) == Ok(image_format::ImgFormat::Png) {
            return Err(Status::invalid_argument(
                "MMAP transport carries raw pixels: ask for RGBA8888 or RGB888, not PNG",
            ));
        }
        let path = std::path::Path::new(t.handle.strip_prefix("file://").unwrap_or(&t.handle));
        let bad =
            |why: &str| Status::invalid_argument(format!("MMAP region {}: {why}", path.display()));
        if !path.is_absolute() || !path.parent().is_some_and(region_dir_allowed) {
            return Err(bad(&format!(
                "the sim phone takes regions only directly in /dev/shm or {}",
                std::env::temp_dir().display()
            )));
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| bad(&e.to_string()))?;
        // Checked on what was opened, not on the name (which may change).
        let meta = file.metadata().map_err(|e| bad(&e.to_string()))?;
        if !meta.file_type().is_file() || meta.nlink() != 1 {
            return Err(bad(
                "not a regular file with one link (create and size it first)",
            ));
        }
        Ok(Some(Self {
            file,
            len: meta.len(),
        }))
    }

    /// Writes `image`'s pixels into the region and empties the message.
    ///
    /// # Errors
    /// FAILED_PRECONDITION when the region is too small, INTERNAL when the
    /// write fails.
    pub fn write(&self, image: &mut Image) -> Result<(), Status> {
        use std::os::unix::fs::FileExt as _;
        let need = image.image.len() as u64;
        if need > self.len {
            return Err(Status::failed_precondition(format!(
                "the MMAP region holds {} bytes; this {}x{} image needs {need}",
                self.len, image.width, image.height
            )));
        }
        self.file
            .write_all_at(&image.image, 0)
            .map_err(|e| Status::internal(format!("writing the MMAP region: {e}")))?;
        image.image = sensor_proto::bytes::Bytes::new();
        Ok(())
    }
}
