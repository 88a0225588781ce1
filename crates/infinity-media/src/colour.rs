//! Converts decoded samples to 8-bit sRGB through the embedded ICC profile.

use image::{DynamicImage, RgbImage, RgbaImage};
use lcms2::{
    ColorSpaceSignature, Flags, InfoType, Intent, Locale, PixelFormat, Profile, Transform,
};

use crate::decode::{Decoded, Pixels};
use crate::MediaError;

/// Returns the image as 8-bit sRGB: `ImageRgba8` when some pixel is not fully
/// opaque, `ImageRgb8` otherwise. Untagged images are taken to be sRGB, and an
/// embedded profile that lcms2 cannot use is ignored, as browsers do.
pub(crate) fn to_srgb(decoded: Decoded) -> Result<DynamicImage, MediaError> {
    let profile = decoded
        .icc
        .as_deref()
        .and_then(|icc| Profile::new_icc(icc).ok())
        .filter(|profile| !is_srgb(profile));

    match decoded.pixels {
        Pixels::Cmyk { width, height, ink } => {
            let rgb = profile
                .filter(|profile| profile.color_space() == ColorSpaceSignature::CmykData)
                .and_then(|profile| transform(&profile, PixelFormat::CMYK_8, &ink, false))
                .unwrap_or_else(|| naive_cmyk_to_rgb(&ink));
            rgb_image(width, height, rgb)
        }
        Pixels::Image(image) => Ok(convert_image(image, profile)),
    }
}

fn convert_image(image: DynamicImage, profile: Option<Profile>) -> DynamicImage {
    let alpha = has_transparency(&image);
    let expected_space = if is_grey(&image) {
        ColorSpaceSignature::GrayData
    } else {
        ColorSpaceSignature::RgbData
    };
    let converted = profile
        .filter(|profile| profile.color_space() == expected_space)
        .and_then(|profile| {
            let (format, samples) = lcms_input(&image)?;
            transform(&profile, format, &samples, alpha)
        });

    let (width, height) = (image.width(), image.height());
    match (converted, alpha) {
        (Some(rgba), true) => RgbaImage::from_raw(width, height, rgba)
            .map(DynamicImage::ImageRgba8)
            .unwrap_or_else(|| DynamicImage::ImageRgba8(image.to_rgba8())),
        (Some(rgb), false) => match RgbImage::from_raw(width, height, rgb) {
            Some(buffer) => DynamicImage::ImageRgb8(buffer),
            None => DynamicImage::ImageRgb8(image.to_rgb8()),
        },
        (None, true) => DynamicImage::ImageRgba8(image.to_rgba8()),
        (None, false) => DynamicImage::ImageRgb8(image.to_rgb8()),
    }
}

/// Runs an lcms2 transform from `format` in `profile` to sRGB, 8 bits a sample,
/// keeping alpha when `alpha` is set. Returns `None` when lcms2 rejects the pair.
fn transform(
    profile: &Profile,
    format: PixelFormat,
    samples: &[u8],
    alpha: bool,
) -> Option<Vec<u8>> {
    let srgb = Profile::new_srgb();
    let (output, flags) = if alpha {
        (PixelFormat::RGBA_8, Flags::COPY_ALPHA)
    } else {
        (PixelFormat::RGB_8, Flags::default())
    };
    let transform: Transform<u8, u8> =
        Transform::new_flags(profile, format, &srgb, output, Intent::Perceptual, flags).ok()?;
    let pixels = samples.len() / format.bytes_per_pixel();
    let mut converted = vec![0; pixels * output.bytes_per_pixel()];
    transform.transform_pixels(samples, &mut converted);
    Some(converted)
}

/// Returns the lcms2 pixel format and the native-endian sample bytes of `image`.
fn lcms_input(image: &DynamicImage) -> Option<(PixelFormat, Vec<u8>)> {
    let input = match image {
        DynamicImage::ImageLuma8(buffer) => (PixelFormat::GRAY_8, buffer.as_raw().clone()),
        DynamicImage::ImageLumaA8(buffer) => (PixelFormat::GRAYA_8, buffer.as_raw().clone()),
        DynamicImage::ImageRgb8(buffer) => (PixelFormat::RGB_8, buffer.as_raw().clone()),
        DynamicImage::ImageRgba8(buffer) => (PixelFormat::RGBA_8, buffer.as_raw().clone()),
        DynamicImage::ImageLuma16(buffer) => (PixelFormat::GRAY_16, native_bytes(buffer.as_raw())),
        DynamicImage::ImageLumaA16(buffer) => {
            (PixelFormat::GRAYA_16, native_bytes(buffer.as_raw()))
        }
        DynamicImage::ImageRgb16(buffer) => (PixelFormat::RGB_16, native_bytes(buffer.as_raw())),
        DynamicImage::ImageRgba16(buffer) => (PixelFormat::RGBA_16, native_bytes(buffer.as_raw())),
        other => (
            PixelFormat::RGBA_16,
            native_bytes(other.to_rgba16().as_raw()),
        ),
    };
    Some(input)
}

fn native_bytes(samples: &[u16]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|sample| sample.to_ne_bytes())
        .collect()
}

/// Checks whether the profile describes sRGB, so that converting would change nothing.
fn is_srgb(profile: &Profile) -> bool {
    profile
        .info(InfoType::Description, Locale::none())
        .is_some_and(|description| description.to_ascii_lowercase().contains("srgb"))
}

fn is_grey(image: &DynamicImage) -> bool {
    !image.color().has_color()
}

/// Checks whether any pixel of `image` is not fully opaque.
pub(crate) fn has_transparency(image: &DynamicImage) -> bool {
    match image {
        DynamicImage::ImageLumaA8(buffer) => buffer.pixels().any(|pixel| pixel.0[1] < u8::MAX),
        DynamicImage::ImageRgba8(buffer) => buffer.pixels().any(|pixel| pixel.0[3] < u8::MAX),
        DynamicImage::ImageLumaA16(buffer) => buffer.pixels().any(|pixel| pixel.0[1] < u16::MAX),
        DynamicImage::ImageRgba16(buffer) => buffer.pixels().any(|pixel| pixel.0[3] < u16::MAX),
        DynamicImage::ImageRgba32F(buffer) => buffer.pixels().any(|pixel| pixel.0[3] < 1.0),
        _ => false,
    }
}

/// Converts ink amounts to RGB without a profile: each colour is white minus
/// its ink, darkened by the black ink.
fn naive_cmyk_to_rgb(ink: &[u8]) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(ink.len() / 4 * 3);
    for pixel in ink.chunks_exact(4) {
        let white = 255 - u32::from(pixel[3]);
        for &colour_ink in &pixel[..3] {
            let value = (255 - u32::from(colour_ink)) * white / 255;
            rgb.push(value as u8);
        }
    }
    rgb
}

fn rgb_image(width: u32, height: u32, rgb: Vec<u8>) -> Result<DynamicImage, MediaError> {
    let samples = rgb.len();
    RgbImage::from_raw(width, height, rgb)
        .map(DynamicImage::ImageRgb8)
        .ok_or_else(|| {
            MediaError::Encode(format!(
                "colour conversion returned {samples} samples for {width}x{height} pixels"
            ))
        })
}
