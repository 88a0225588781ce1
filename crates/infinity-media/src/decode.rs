//! Full, bounded decoding of a still image (the first frame of an animation).

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use image::codecs::gif::GifDecoder;
use image::codecs::png::PngDecoder;
use image::codecs::webp::WebPDecoder;
use image::error::LimitErrorKind;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError};

use crate::header::Header;
use crate::{jpeg, Format, Limits, MediaError};

/// Decoded samples, before colour conversion.
pub(crate) enum Pixels {
    /// Grey, RGB, with or without alpha, 8 or 16 bits a sample.
    Image(DynamicImage),
    /// Four samples a pixel giving the amount of cyan, magenta, yellow and black ink.
    Cmyk {
        width: u32,
        height: u32,
        ink: Vec<u8>,
    },
}

/// A decoded image with what the colour and orientation stages need.
pub(crate) struct Decoded {
    pub pixels: Pixels,
    /// Embedded ICC profile, if any.
    pub icc: Option<Vec<u8>>,
    pub orientation: Orientation,
}

/// Decodes the first (for most files, the only) frame of an image whose header
/// has been checked against `limits`.
pub(crate) fn decode_still(
    bytes: &[u8],
    header: &Header,
    limits: &Limits,
) -> Result<Decoded, MediaError> {
    let cursor = Cursor::new(bytes);
    guard_panics(|| match header.format {
        Format::Jpeg => jpeg::decode(bytes, limits),
        Format::Png => decode_with(PngDecoder::new(cursor).map_err(image_error)?, limits),
        Format::Webp => decode_with(WebPDecoder::new(cursor).map_err(image_error)?, limits),
        Format::Gif => decode_with(GifDecoder::new(cursor).map_err(image_error)?, limits),
    })
}

fn decode_with(mut decoder: impl ImageDecoder, limits: &Limits) -> Result<Decoded, MediaError> {
    decoder
        .set_limits(limits.decoder_limits())
        .map_err(image_error)?;
    // A profile or EXIF block that fails to parse is ignored, as browsers do.
    let icc = decoder.icc_profile().ok().flatten();
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let image = DynamicImage::from_decoder(decoder).map_err(image_error)?;
    Ok(Decoded {
        pixels: Pixels::Image(image),
        icc,
        orientation,
    })
}

/// Runs a decoder and turns a panic inside it into a 422, so that a decoder
/// bug triggered by a malformed file rejects that file instead of failing the job.
pub(crate) fn guard_panics<T>(
    decode: impl FnOnce() -> Result<T, MediaError>,
) -> Result<T, MediaError> {
    catch_unwind(AssertUnwindSafe(decode))
        .unwrap_or_else(|_| Err(MediaError::corrupt("the decoder failed on malformed data")))
}

/// Maps an `image` crate error to the message a user sees.
pub(crate) fn image_error(error: ImageError) -> MediaError {
    match error {
        ImageError::Limits(limit) => match limit.kind() {
            LimitErrorKind::InsufficientMemory => {
                MediaError::DecoderLimit("not enough memory allowed".to_owned())
            }
            _ => MediaError::DecoderLimit(limit.to_string()),
        },
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            MediaError::corrupt("the file ends before the image data is complete")
        }
        ImageError::Unsupported(unsupported) => {
            MediaError::UnsupportedFeature(unsupported.to_string())
        }
        other => MediaError::corrupt(other),
    }
}
