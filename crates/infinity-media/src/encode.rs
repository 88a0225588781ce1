//! Writes variants as fresh files from pixels, so no metadata of the upload
//! (EXIF, GPS, XMP, IPTC, ICC) can reach them.

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{DynamicImage, ExtendedColorType, ImageEncoder};
use jpeg_encoder::{ColorType, Encoder};

use crate::MediaError;

/// JPEG quality for opaque variants: a common choice for photos on the web,
/// where artefacts are hard to see and files are about half the size of quality 95.
const JPEG_QUALITY: u8 = 82;

/// An encoded variant: its bytes and the media type and extension to store it under.
pub(crate) struct Encoded {
    pub bytes: Vec<u8>,
    pub mime: &'static str,
    pub extension: &'static str,
}

/// Encodes an opaque `ImageRgb8` as JPEG and an `ImageRgba8` as PNG.
///
/// Transparent variants are PNG rather than WebP because the `image` crate
/// (0.25) only writes lossless WebP, so WebP would give no lossy size saving,
/// while PNG is read by every client and image tool.
pub(crate) fn encode(image: &DynamicImage) -> Result<Encoded, MediaError> {
    match image {
        DynamicImage::ImageRgb8(buffer) => {
            let bytes = encode_jpeg(buffer.as_raw(), buffer.width(), buffer.height())?;
            Ok(Encoded {
                bytes,
                mime: "image/jpeg",
                extension: "jpg",
            })
        }
        DynamicImage::ImageRgba8(buffer) => {
            let mut bytes = Vec::new();
            PngEncoder::new_with_quality(&mut bytes, CompressionType::Fast, FilterType::Adaptive)
                .write_image(
                    buffer.as_raw(),
                    buffer.width(),
                    buffer.height(),
                    ExtendedColorType::Rgba8,
                )
                .map_err(|error| MediaError::Encode(error.to_string()))?;
            Ok(Encoded {
                bytes,
                mime: "image/png",
                extension: "png",
            })
        }
        other => Err(MediaError::Encode(format!(
            "encode expects 8-bit RGB or RGBA, got {:?}",
            other.color()
        ))),
    }
}

fn encode_jpeg(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, MediaError> {
    let too_large = || MediaError::Encode(format!("{width}x{height} is too large for JPEG"));
    let width = u16::try_from(width).map_err(|_| too_large())?;
    let height = u16::try_from(height).map_err(|_| too_large())?;
    let mut bytes = Vec::new();
    Encoder::new(&mut bytes, JPEG_QUALITY)
        .encode(rgb, width, height, ColorType::Rgb)
        .map_err(|error| MediaError::Encode(error.to_string()))?;
    Ok(bytes)
}
