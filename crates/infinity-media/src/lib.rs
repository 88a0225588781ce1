//! Turns uploaded image bytes into safe photo variants.
//!
//! Uploads are identified by content, checked against [`Limits`] from their
//! headers before any pixel is decoded, then decoded with bounded memory. Each
//! variant is resized, turned upright by its EXIF orientation, converted to
//! 8-bit sRGB and written as a fresh file that carries no metadata of the upload.
//!
//! Every function is synchronous and CPU-bound: call it through
//! [`background::run`], which runs it on a low-priority image thread.

mod animation;
pub mod background;
mod colour;
mod decode;
mod encode;
mod error;
mod gif_blocks;
mod header;
mod jpeg;
mod limits;
mod resize;
mod sniff;
mod variants;

pub use error::MediaError;
pub use limits::Limits;
pub use sniff::Format;

/// What an upload declares: its format and displayed size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub format: Format,
    /// Width as displayed, after the EXIF orientation.
    pub width: u32,
    /// Height as displayed, after the EXIF orientation.
    pub height: u32,
    /// Whether the file is an animation (GIF, WebP or PNG with more than one frame).
    pub animated: bool,
}

/// The variants of one upload, with the displayed size of the source.
#[derive(Debug, Clone)]
pub struct Rendition {
    pub width: u32,
    pub height: u32,
    pub animated: bool,
    /// Set when the variants differ from the upload in a way the user should
    /// know about, such as an animation kept only as its first frame.
    pub note: Option<String>,
    /// One variant for each requested size, in the order requested.
    pub variants: Vec<Variant>,
}

/// One encoded, upright, metadata-free variant.
#[derive(Debug, Clone)]
pub struct Variant {
    /// The requested size: the maximum of the longest side, in pixels.
    pub size: u32,
    pub width: u32,
    pub height: u32,
    pub mime: &'static str,
    /// File extension without the dot, for example `jpg`.
    pub extension: &'static str,
    pub bytes: Vec<u8>,
}

/// Identifies `bytes` by content and checks the sizes its header declares
/// against `limits`, without decoding any pixel.
pub fn inspect(bytes: &[u8], limits: &Limits) -> Result<Inspection, MediaError> {
    let header = read_header(bytes, limits)?;
    Ok(inspection(&header))
}

/// Inspects `bytes`, then decodes the whole image (every frame of a GIF) with
/// bounded memory. Returns `Ok` only if the image decodes completely.
pub fn validate(bytes: &[u8], limits: &Limits) -> Result<Inspection, MediaError> {
    let header = read_header(bytes, limits)?;
    if header.format == Format::Gif && header.animated {
        animation::decode_frames(bytes, limits)?;
    } else {
        decode::decode_still(bytes, &header, limits)?;
    }
    Ok(inspection(&header))
}

/// Decodes `bytes` and makes one variant for each of `sizes`: the longest side
/// at most that size, never enlarged.
///
/// Animated GIFs stay animated. Animated WebP and PNG files become a still of
/// their first frame, which `Rendition::note` states.
pub fn render(bytes: &[u8], limits: &Limits, sizes: &[u32]) -> Result<Rendition, MediaError> {
    let header = read_header(bytes, limits)?;
    let (width, height) = header.displayed_size();

    if header.format == Format::Gif && header.animated {
        let frames = animation::decode_frames(bytes, limits)?;
        return Ok(Rendition {
            width,
            height,
            animated: true,
            note: None,
            variants: animation::render(&frames, sizes)?,
        });
    }

    let decoded = decode::decode_still(bytes, &header, limits)?;
    let orientation = decoded.orientation;
    let srgb = colour::to_srgb(decoded)?;
    let note = header.animated.then(|| {
        format!(
            "the {} animation was converted to a still image of its first frame",
            header.format.name()
        )
    });
    Ok(Rendition {
        width,
        height,
        animated: header.animated,
        note,
        variants: variants::render(&srgb, orientation, sizes)?,
    })
}

fn read_header(bytes: &[u8], limits: &Limits) -> Result<header::Header, MediaError> {
    limits.check_bytes(bytes)?;
    let format = sniff::detect(bytes)?;
    header::read(bytes, format, limits)
}

fn inspection(header: &header::Header) -> Inspection {
    let (width, height) = header.displayed_size();
    Inspection {
        format: header.format,
        width,
        height,
        animated: header.animated,
    }
}
