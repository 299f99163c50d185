//! Pictures as PNG.

use std::io::Cursor;
use std::path::Path;

use crate::{MediaError, Picture};

/// Encodes a tightly packed RGBA8888 image as PNG (fast compression).
///
/// # Errors
/// [`MediaError::BufferSize`] when `rgba` does not hold `width * height`
/// pixels; [`MediaError::Png`].
pub fn encode_png(width: u32, height: u32, rgba: &[u8]) -> Result<Vec<u8>, MediaError> {
    let expected = (width as usize)
        .checked_mul(height as usize)
        .and_then(|n| n.checked_mul(4))
        .ok_or(MediaError::InvalidSize { width, height })?;
    if rgba.len() != expected {
        return Err(MediaError::BufferSize {
            expected,
            actual: rgba.len(),
        });
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(Cursor::new(&mut out), width, height);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(rgba)?;
        writer.finish()?;
    }
    Ok(out)
}

/// Writes a picture as a PNG file.
///
/// # Errors
/// [`MediaError::Io`] naming the file, or the encoding errors of
/// [`encode_png`].
pub fn save_png(path: &Path, pic: &Picture) -> Result<(), MediaError> {
    let png = encode_png(pic.width, pic.height, &pic.rgba)?;
    std::fs::write(path, png).map_err(|source| MediaError::Io {
        context: format!("writing {}", path.display()),
        source,
    })
}
