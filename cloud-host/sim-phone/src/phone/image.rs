//! Screen images in the format a client asks for: RGBA or PNG, scaled to
//! fit, rotated, in the message or in a shared region.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use sensor_proto::emulator::{Image, ImageFormat, Rotation, image_format};
use tonic::Status;

use crate::encode_png;

use super::*;

/// Converts a frame for `want` (and writes it into `region`) on a blocking
/// thread at bulk priority: the API thread that applies sensors and input
/// must not spend milliseconds on pixels.
pub(super) async fn image_for(
    phone: SimPhone,
    frame: Arc<Frame>,
    want: ImageFormat,
    region: Option<Arc<Region>>,
) -> Result<Image, Status> {
    let rotation = phone.state().rotation;
    tokio::task::spawn_blocking(move || {
        device_bridge::bulk_thread_priority();
        let mut image = encode_image(&frame, &want, rotation)?;
        if let Some(region) = &region {
            region.write(&mut image)?;
            phone.stats().region_images.fetch_add(1, Ordering::Relaxed);
        }
        Ok(image)
    })
    .await
    .map_err(|e| Status::internal(format!("image conversion failed: {e}")))?
}

/// Converts a frame to the format and size an `ImageFormat` asks for.
///
/// # Errors
/// INVALID_ARGUMENT / UNIMPLEMENTED statuses naming the unsupported request.
pub fn encode_image(frame: &Frame, want: &ImageFormat, rotation: i32) -> Result<Image, Status> {
    if want.display != 0 {
        return Err(Status::invalid_argument(format!(
            "display {} does not exist",
            want.display
        )));
    }
    let fmt = image_format::ImgFormat::try_from(want.format)
        .map_err(|_| Status::invalid_argument(format!("unknown image format {}", want.format)))?;
    let (w, h) = fit(frame.width, frame.height, want.width, want.height);
    let native = (w, h) == (frame.width, frame.height);
    let rgba: std::borrow::Cow<'_, [u8]> = if native {
        std::borrow::Cow::Borrowed(&frame.rgba)
    } else {
        std::borrow::Cow::Owned(scale_nearest(&frame.rgba, frame.width, frame.height, w, h))
    };
    let bytes: sensor_proto::bytes::Bytes = match fmt {
        // The common case shares the frame's buffer: no 3.7 MB copy per client.
        image_format::ImgFormat::Rgba8888 if native => frame.rgba.clone(),
        image_format::ImgFormat::Rgba8888 => rgba.into_owned().into(),
        image_format::ImgFormat::Rgb888 => rgba
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect::<Vec<u8>>()
            .into(),
        image_format::ImgFormat::Png => encode_png(w, h, &rgba)
            .map_err(|e| Status::internal(format!("PNG encoding failed: {e}")))?
            .into(),
    };
    Ok(Image {
        format: Some(ImageFormat {
            format: want.format,
            rotation: Some(Rotation {
                rotation,
                x_axis: 0.0,
                y_axis: 0.0,
                z_axis: f64::from(rotation) * -90.0,
            }),
            width: w,
            height: h,
            display: 0,
            transport: None,
            folded_display: None,
            display_mode: 0,
        }),
        width: w,
        height: h,
        image: bytes,
        seq: frame.seq,
        timestamp_us: frame.timestamp_us,
    })
}

/// The largest size inside `want` (0 = native) that keeps the aspect ratio.
pub(super) fn fit(w: u32, h: u32, want_w: u32, want_h: u32) -> (u32, u32) {
    match (want_w, want_h) {
        (0, 0) => (w, h),
        (ww, 0) => (
            ww.min(w * 4).max(1),
            ((u64::from(h) * u64::from(ww) / u64::from(w)) as u32).max(1),
        ),
        (0, wh) => (
            ((u64::from(w) * u64::from(wh) / u64::from(h)) as u32).max(1),
            wh.min(h * 4).max(1),
        ),
        (ww, wh) => {
            if u64::from(ww) * u64::from(h) <= u64::from(wh) * u64::from(w) {
                fit(w, h, ww, 0)
            } else {
                fit(w, h, 0, wh)
            }
        }
    }
}

pub(super) fn scale_nearest(src: &[u8], sw: u32, sh: u32, dw: u32, dh: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(dw as usize * dh as usize * 4);
    for y in 0..dh {
        let sy = (u64::from(y) * u64::from(sh) / u64::from(dh)) as usize;
        for x in 0..dw {
            let sx = (u64::from(x) * u64::from(sw) / u64::from(dw)) as usize;
            let i = (sy * sw as usize + sx) * 4;
            out.extend_from_slice(&src[i..i + 4]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_aspect() {
        assert_eq!(fit(720, 1280, 0, 0), (720, 1280));
        assert_eq!(fit(720, 1280, 360, 0), (360, 640));
        assert_eq!(fit(720, 1280, 0, 640), (360, 640));
        assert_eq!(fit(720, 1280, 360, 360), (202, 360));
        assert_eq!(fit(720, 1280, 1000, 640), (360, 640));
    }

    #[test]
    fn scale_nearest_picks_source_pixels() {
        // 2x1 image: red, blue -> 1x1 keeps the first.
        let src = [255, 0, 0, 255, 0, 0, 255, 255];
        assert_eq!(scale_nearest(&src, 2, 1, 1, 1), vec![255, 0, 0, 255]);
        assert_eq!(scale_nearest(&src, 2, 1, 4, 1).len(), 16);
    }
}
