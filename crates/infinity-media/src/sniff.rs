//! Identifies an upload by its magic bytes, never by its name or declared type.

use crate::MediaError;

/// An image format that Infinity accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    Webp,
    Gif,
}

impl Format {
    /// Returns the media type, for example `image/jpeg`.
    pub fn mime(&self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Webp => "image/webp",
            Format::Gif => "image/gif",
        }
    }

    /// Returns the short upper-case name used in messages, for example `JPEG`.
    pub fn name(&self) -> &'static str {
        match self {
            Format::Jpeg => "JPEG",
            Format::Png => "PNG",
            Format::Webp => "WebP",
            Format::Gif => "GIF",
        }
    }
}

const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// Identifies the format of `bytes` from its first bytes.
///
/// Returns `UnsupportedFormat` for recognised formats that Infinity rejects,
/// `Corrupt` for a PNG whose signature was damaged in transfer, and
/// `NotAnImage` for everything else.
pub fn detect(bytes: &[u8]) -> Result<Format, MediaError> {
    if bytes.is_empty() {
        return Err(MediaError::Empty);
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(Format::Jpeg);
    }
    if bytes.starts_with(PNG_SIGNATURE) {
        return Ok(Format::Png);
    }
    if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        return Ok(Format::Gif);
    }
    if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return Ok(Format::Webp);
    }
    if let Some(name) = unsupported_format(bytes) {
        return Err(MediaError::UnsupportedFormat(name));
    }
    if has_damaged_png_signature(bytes) {
        return Err(MediaError::corrupt("the PNG signature is damaged"));
    }
    Err(MediaError::NotAnImage)
}

/// Names a recognised format that Infinity does not accept.
fn unsupported_format(bytes: &[u8]) -> Option<&'static str> {
    if let Some(name) = iso_media_brand(bytes) {
        return Some(name);
    }
    if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        return Some("TIFF");
    }
    if is_bmp(bytes) {
        return Some("BMP");
    }
    if bytes.starts_with(b"%PDF-") {
        return Some("PDF");
    }
    if bytes.starts_with(b"8BPS") {
        return Some("Photoshop (PSD)");
    }
    if bytes.starts_with(&[0xFF, 0x0A]) || bytes.starts_with(b"\0\0\0\x0cJXL \r\n\x87\n") {
        return Some("JPEG XL");
    }
    markup_kind(bytes)
}

/// Reads the brand of an ISO base media file (HEIF, AVIF), which starts with an
/// `ftyp` box: 4 bytes of size, `ftyp`, the major brand, a version, then
/// compatible brands.
fn iso_media_brand(bytes: &[u8]) -> Option<&'static str> {
    if bytes.len() < 16 || &bytes[4..8] != b"ftyp" {
        return None;
    }
    let box_size = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let box_end = box_size.clamp(16, bytes.len());
    let major = &bytes[8..12];
    let compatible = bytes[16..box_end].chunks_exact(4);
    let brands = std::iter::once(major).chain(compatible);

    let mut heif = false;
    for brand in brands {
        match brand {
            b"avif" | b"avis" => return Some("AVIF"),
            b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" | b"mif1" | b"msf1" => {
                heif = true
            }
            _ => {}
        }
    }
    heif.then_some("HEIC")
}

/// Checks for a Windows bitmap: `BM` followed by a DIB header of a known size.
fn is_bmp(bytes: &[u8]) -> bool {
    if bytes.len() < 18 || !bytes.starts_with(b"BM") {
        return false;
    }
    let header_size = u32::from_le_bytes([bytes[14], bytes[15], bytes[16], bytes[17]]);
    matches!(header_size, 12 | 40 | 52 | 56 | 64 | 108 | 124)
}

/// Recognises SVG and other XML documents, after any byte order mark and whitespace.
fn markup_kind(bytes: &[u8]) -> Option<&'static str> {
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let start = text.iter().position(|b| !b.is_ascii_whitespace())?;
    let head = &text[start..text.len().min(start + 1024)];
    if !head.starts_with(b"<") {
        return None;
    }
    let lower = head.to_ascii_lowercase();
    if lower.windows(4).any(|window| window == b"<svg") {
        return Some("SVG");
    }
    if lower.starts_with(b"<?xml") {
        return Some("XML");
    }
    None
}

/// Checks for a PNG signature with one or two bytes changed, as newline
/// conversion or a 7-bit transfer leaves it. Such a file is a PNG, damaged
/// beyond repair.
fn has_damaged_png_signature(bytes: &[u8]) -> bool {
    if bytes.len() < PNG_SIGNATURE.len() {
        return false;
    }
    let matching = bytes
        .iter()
        .zip(PNG_SIGNATURE)
        .filter(|(a, b)| a == b)
        .count();
    matching >= 6
}
