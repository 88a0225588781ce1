//! Reads what an image declares about itself (format, size, orientation,
//! frame count) without decoding its pixels.

use std::io::Cursor;

use image::codecs::png::PngDecoder;
use image::codecs::webp::WebPDecoder;
use image::metadata::Orientation;
use image::ImageDecoder;

use crate::decode::image_error;
use crate::{gif_blocks, jpeg, Format, Limits, MediaError};

/// The declared properties of an upload, as stored (before orientation).
pub(crate) struct Header {
    pub format: Format,
    pub width: u32,
    pub height: u32,
    pub orientation: Orientation,
    /// Number of frames for a GIF; 1 for every other format.
    pub frames: u64,
    /// Whether the file is an animation (an animated GIF, WebP or PNG).
    pub animated: bool,
}

impl Header {
    /// Returns the width and height as displayed, after the EXIF orientation.
    pub fn displayed_size(&self) -> (u32, u32) {
        if swaps_axes(self.orientation) {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

/// Checks whether applying `orientation` turns the image by a quarter turn.
pub(crate) fn swaps_axes(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// Parses the header of `bytes`, already identified as `format`, and checks
/// its declared size and frame count against `limits`.
pub(crate) fn read(bytes: &[u8], format: Format, limits: &Limits) -> Result<Header, MediaError> {
    let header = match format {
        Format::Jpeg => read_jpeg(bytes)?,
        Format::Png => read_png(bytes, limits)?,
        Format::Webp => read_webp(bytes, limits)?,
        Format::Gif => read_gif(bytes)?,
    };
    limits.check_dimensions(header.width, header.height)?;
    if header.format == Format::Gif {
        limits.check_frames(header.frames, header.width, header.height)?;
    }
    Ok(header)
}

fn read_jpeg(bytes: &[u8]) -> Result<Header, MediaError> {
    let header = jpeg::read_header(bytes)?;
    Ok(Header {
        format: Format::Jpeg,
        width: header.width,
        height: header.height,
        orientation: header.orientation,
        frames: 1,
        animated: false,
    })
}

fn read_png(bytes: &[u8], limits: &Limits) -> Result<Header, MediaError> {
    // Check the IHDR size first, so an oversized image is rejected by its
    // declared size even when the rest of the file is missing or damaged.
    if let Some(ihdr) = bytes.get(12..24).filter(|ihdr| ihdr.starts_with(b"IHDR")) {
        let width = u32::from_be_bytes([ihdr[4], ihdr[5], ihdr[6], ihdr[7]]);
        let height = u32::from_be_bytes([ihdr[8], ihdr[9], ihdr[10], ihdr[11]]);
        limits.check_dimensions(width, height)?;
    }
    let mut decoder =
        PngDecoder::with_limits(Cursor::new(bytes), header_limits(limits)).map_err(image_error)?;
    let (width, height) = decoder.dimensions();
    let animated = decoder.is_apng().map_err(image_error)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    Ok(Header {
        format: Format::Png,
        width,
        height,
        orientation,
        frames: 1,
        animated,
    })
}

fn read_webp(bytes: &[u8], limits: &Limits) -> Result<Header, MediaError> {
    let mut decoder = WebPDecoder::new(Cursor::new(bytes)).map_err(image_error)?;
    decoder
        .set_limits(header_limits(limits))
        .map_err(image_error)?;
    let (width, height) = decoder.dimensions();
    let animated = decoder.has_animation();
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    Ok(Header {
        format: Format::Webp,
        width,
        height,
        orientation,
        frames: 1,
        animated,
    })
}

fn read_gif(bytes: &[u8]) -> Result<Header, MediaError> {
    let screen = gif_blocks::scan(bytes)?;
    Ok(Header {
        format: Format::Gif,
        width: screen.width,
        height: screen.height,
        orientation: Orientation::NoTransforms,
        frames: screen.frames,
        animated: screen.frames > 1,
    })
}

/// Decoder limits for header parsing: memory only, so that dimensions over
/// the limit reach `Limits::check_dimensions` and get its message.
fn header_limits(limits: &Limits) -> image::Limits {
    let mut decoder_limits = image::Limits::no_limits();
    decoder_limits.max_alloc = Some(limits.max_alloc);
    decoder_limits
}
