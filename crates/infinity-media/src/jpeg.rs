//! JPEG headers and decoding through `zune-jpeg`, with CMYK kept as ink values
//! so that the colour stage can convert it through its ICC profile.

use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, RgbImage};
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crate::decode::{Decoded, Pixels};
use crate::{Limits, MediaError};

/// What the segments before the first scan say about a JPEG.
pub(crate) struct JpegHeader {
    pub width: u32,
    pub height: u32,
    pub orientation: Orientation,
    /// The transform byte of an Adobe APP14 segment: 0 for CMYK, 1 for YCbCr,
    /// 2 for YCCK. Its presence also means that CMYK samples are stored inverted.
    adobe_transform: Option<u8>,
}

/// Reads the frame header and EXIF orientation without decoding any pixels.
pub(crate) fn read_header(bytes: &[u8]) -> Result<JpegHeader, MediaError> {
    let segments = scan_segments(bytes)?;
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), decoder_options(None));
    decoder.decode_headers().map_err(decode_error)?;
    if !segments.has_end_of_image {
        return Err(MediaError::corrupt("the file ends before the image data"));
    }
    let info = decoder
        .info()
        .ok_or_else(|| MediaError::corrupt("no frame header"))?;
    let orientation = decoder
        .exif()
        .and_then(|exif| Orientation::from_exif_chunk(exif))
        .unwrap_or(Orientation::NoTransforms);
    Ok(JpegHeader {
        width: u32::from(info.width),
        height: u32::from(info.height),
        orientation,
        adobe_transform: segments.adobe_transform,
    })
}

/// Decodes the whole image; the caller has checked the header against `limits`.
pub(crate) fn decode(bytes: &[u8], limits: &Limits) -> Result<Decoded, MediaError> {
    let header = read_header(bytes)?;
    let mut probe = JpegDecoder::new_with_options(ZCursor::new(bytes), decoder_options(None));
    probe.decode_headers().map_err(decode_error)?;
    let input = probe.input_colorspace().unwrap_or(ColorSpace::Unknown);
    let icc = probe.icc_profile();

    let output = match input {
        ColorSpace::Luma => ColorSpace::Luma,
        ColorSpace::CMYK | ColorSpace::YCCK => input,
        _ => ColorSpace::RGB,
    };
    let (width, height) = (header.width, header.height);
    let channels = output.num_components() as u64;
    limits.check_alloc(u64::from(width) * u64::from(height) * channels)?;

    let mut decoder = JpegDecoder::new_with_options(
        ZCursor::new(bytes),
        decoder_options(Some(limits)).jpeg_set_out_colorspace(output),
    );
    let samples = decoder.decode().map_err(decode_error)?;
    let pixels = match output {
        ColorSpace::Luma => GrayImage::from_raw(width, height, samples)
            .map(DynamicImage::ImageLuma8)
            .map(Pixels::Image),
        ColorSpace::RGB => RgbImage::from_raw(width, height, samples)
            .map(DynamicImage::ImageRgb8)
            .map(Pixels::Image),
        _ => Some(Pixels::Cmyk {
            width,
            height,
            ink: to_ink(samples, output, header.adobe_transform.is_some()),
        }),
    };
    let pixels =
        pixels.ok_or_else(|| MediaError::corrupt("the decoder returned too few samples"))?;
    Ok(Decoded {
        pixels,
        icc,
        orientation: header.orientation,
    })
}

fn decoder_options(limits: Option<&Limits>) -> DecoderOptions {
    let max = limits.map_or(usize::from(u16::MAX), |limits| {
        limits.max_dimension as usize
    });
    DecoderOptions::default()
        .set_max_width(max)
        .set_max_height(max)
        .set_strict_mode(true)
}

/// Turns stored CMYK or YCCK samples into ink amounts (0 = no ink, 255 = full).
///
/// YCCK stores C, M and Y as if they were R, G and B, so the JFIF YCbCr
/// conversion gives 255 minus each stored value, as in libjpeg. Files with an
/// Adobe segment, which includes every YCCK file and those from Photoshop,
/// store all four channels inverted.
fn to_ink(mut samples: Vec<u8>, stored: ColorSpace, inverted: bool) -> Vec<u8> {
    for pixel in samples.chunks_exact_mut(4) {
        if stored == ColorSpace::YCCK {
            let [r, g, b] = ycbcr_to_rgb(pixel[0], pixel[1], pixel[2]);
            pixel[0] = 255 - r;
            pixel[1] = 255 - g;
            pixel[2] = 255 - b;
        }
        if inverted {
            pixel.iter_mut().for_each(|value| *value = 255 - *value);
        }
    }
    samples
}

fn ycbcr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let y = f32::from(y);
    let cb = f32::from(cb) - 128.0;
    let cr = f32::from(cr) - 128.0;
    let clamp = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    [
        clamp(y + 1.402 * cr),
        clamp(y - 0.344_136 * cb - 0.714_136 * cr),
        clamp(y + 1.772 * cb),
    ]
}

fn decode_error(error: zune_jpeg::errors::DecodeErrors) -> MediaError {
    use zune_jpeg::errors::DecodeErrors;
    match error {
        DecodeErrors::ExhaustedData => MediaError::corrupt("the file ends before the image data"),
        DecodeErrors::ZeroError => {
            MediaError::corrupt("the frame header declares a width or height of 0")
        }
        DecodeErrors::IoErrors(_) => MediaError::corrupt("the file ends inside a header segment"),
        DecodeErrors::Unsupported(scheme) => MediaError::UnsupportedFeature(format!("{scheme:?}")),
        DecodeErrors::FormatStatic(detail) => {
            MediaError::corrupt(detail.trim_start_matches("[strict-mode]: "))
        }
        DecodeErrors::Format(detail)
        | DecodeErrors::HuffmanDecode(detail)
        | DecodeErrors::DqtError(detail)
        | DecodeErrors::SosError(detail)
        | DecodeErrors::SofError(detail)
        | DecodeErrors::MCUError(detail) => MediaError::corrupt(detail.trim()),
        other => MediaError::corrupt(format!("{other:?}")),
    }
}

/// What the segment walk finds besides the frame header.
struct Segments {
    adobe_transform: Option<u8>,
    /// Whether an end-of-image marker follows the first scan. A file without
    /// one is truncated, and `zune-jpeg` may fill the missing part with grey
    /// rather than fail, so the caller rejects it.
    has_end_of_image: bool,
}

/// Walks the marker segments before the first scan and rejects coding
/// processes that the decoder does not implement.
fn scan_segments(bytes: &[u8]) -> Result<Segments, MediaError> {
    let mut adobe_transform = None;
    let mut has_end_of_image = false;
    let mut pos = 2;
    while pos + 1 < bytes.len() {
        if bytes[pos] != 0xFF {
            // Stray bytes between segments: skip to the next marker, as libjpeg does.
            pos += 1;
            continue;
        }
        let marker = bytes[pos + 1];
        match marker {
            0xFF => {
                pos += 1;
                continue;
            }
            0x01 | 0xD0..=0xD7 => {
                pos += 2;
                continue;
            }
            0xDA => {
                has_end_of_image = bytes[pos..].windows(2).any(|pair| pair == [0xFF, 0xD9]);
                break;
            }
            0xD9 => break,
            _ => {}
        }
        check_coding_process(marker)?;
        let Some(length) = bytes.get(pos + 2..pos + 4) else {
            break;
        };
        let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
        let segment = bytes
            .get(pos + 4..(pos + 2 + length).min(bytes.len()))
            .unwrap_or(&[]);
        if marker == 0xEE && segment.len() >= 12 && segment.starts_with(b"Adobe") {
            adobe_transform = Some(segment[11]);
        }
        pos += 2 + length.max(2);
    }
    Ok(Segments {
        adobe_transform,
        has_end_of_image,
    })
}

fn check_coding_process(marker: u8) -> Result<(), MediaError> {
    let feature = match marker {
        0xC3 => "lossless JPEG coding",
        0xC5..=0xC7 => "hierarchical JPEG coding",
        0xC9..=0xCB | 0xCD..=0xCF => "arithmetic JPEG coding",
        _ => return Ok(()),
    };
    Err(MediaError::UnsupportedFeature(feature.to_owned()))
}
