//! Downscaling with `fast_image_resize` (SIMD convolution, Lanczos3).

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, RgbImage, RgbaImage};

use crate::MediaError;

/// Returns the size that fits `width` x `height` within a `max_side` square,
/// keeping the aspect ratio and never enlarging. Each side is at least 1.
pub(crate) fn fit(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let longest = width.max(height);
    if longest <= max_side {
        return (width, height);
    }
    let scale = f64::from(max_side) / f64::from(longest);
    let scaled = |side: u32| ((f64::from(side) * scale).round() as u32).clamp(1, max_side);
    (scaled(width), scaled(height))
}

/// Resizes an `ImageRgb8` or `ImageRgba8` to exactly `width` x `height`.
///
/// RGBA is resized with premultiplied alpha (the `fast_image_resize` default),
/// so that colour from fully transparent pixels does not bleed into edges.
pub(crate) fn resize(
    resizer: &mut Resizer,
    image: &DynamicImage,
    width: u32,
    height: u32,
) -> Result<DynamicImage, MediaError> {
    let (pixel_type, samples) = match image {
        DynamicImage::ImageRgb8(buffer) => (PixelType::U8x3, buffer.as_raw()),
        DynamicImage::ImageRgba8(buffer) => (PixelType::U8x4, buffer.as_raw()),
        other => {
            return Err(MediaError::Encode(format!(
                "resize expects 8-bit RGB or RGBA, got {:?}",
                other.color()
            )))
        }
    };
    let source = ImageRef::new(image.width(), image.height(), samples, pixel_type)
        .map_err(|error| MediaError::Encode(error.to_string()))?;
    let mut target = Image::new(width, height, pixel_type);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    resizer
        .resize(&source, &mut target, &options)
        .map_err(|error| MediaError::Encode(error.to_string()))?;

    let samples = target.into_vec();
    let resized = match pixel_type {
        PixelType::U8x3 => RgbImage::from_raw(width, height, samples).map(DynamicImage::ImageRgb8),
        _ => RgbaImage::from_raw(width, height, samples).map(DynamicImage::ImageRgba8),
    };
    resized.ok_or_else(|| MediaError::Encode("resize returned a short buffer".to_owned()))
}
