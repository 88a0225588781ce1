//! Helpers shared by the integration tests: test data paths, decoding of
//! variants, metadata checks and generated images.
#![allow(dead_code)]

use std::path::PathBuf;

use image::{DynamicImage, RgbImage};
use infinity_media::Variant;

pub const SIZES: [u32; 3] = [1280, 640, 160];

/// Path of a file in the shared test data folder, which tests read in place.
pub fn testdata(folder: &str, name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testdata"
    ))
    .join(folder)
    .join(name)
}

pub fn read(folder: &str, name: &str) -> Vec<u8> {
    let path = testdata(folder, name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// Decodes a variant with the `image` crate, checking its dimensions.
pub fn decode(variant: &Variant) -> DynamicImage {
    let image = image::load_from_memory(&variant.bytes).expect("variant decodes");
    assert_eq!(
        (image.width(), image.height()),
        (variant.width, variant.height)
    );
    image
}

/// Lists the markers of a JPEG up to its first scan.
pub fn jpeg_markers(bytes: &[u8]) -> Vec<u8> {
    assert!(bytes.starts_with(&[0xFF, 0xD8]), "not a JPEG");
    let mut markers = Vec::new();
    let mut pos = 2;
    while pos + 4 <= bytes.len() && bytes[pos] == 0xFF {
        let marker = bytes[pos + 1];
        markers.push(marker);
        if marker == 0xDA {
            break;
        }
        let length = usize::from(u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]));
        pos += 2 + length;
    }
    markers
}

/// Lists the chunk types of a PNG.
pub fn png_chunks(bytes: &[u8]) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut pos = 8;
    while pos + 8 <= bytes.len() {
        let length = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        chunks.push(String::from_utf8_lossy(&bytes[pos + 4..pos + 8]).into_owned());
        pos += 12 + length;
    }
    chunks
}

/// Asserts that a variant carries no EXIF, GPS, XMP, IPTC or ICC data.
pub fn assert_no_metadata(variant: &Variant) {
    match variant.mime {
        "image/jpeg" => {
            let markers = jpeg_markers(&variant.bytes);
            for app in [0xE1, 0xE2, 0xED] {
                assert!(
                    !markers.contains(&app),
                    "JPEG has APP{} segment",
                    app - 0xE0
                );
            }
        }
        "image/png" => {
            let chunks = png_chunks(&variant.bytes);
            for chunk in ["eXIf", "iCCP", "tEXt", "iTXt", "zTXt"] {
                assert!(!chunks.iter().any(|c| c == chunk), "PNG has {chunk} chunk");
            }
        }
        _ => {}
    }
    for needle in [&b"Exif\0\0"[..], b"ns.adobe.com", b"Photoshop 3.0"] {
        assert!(
            !variant
                .bytes
                .windows(needle.len())
                .any(|window| window == needle),
            "variant contains {:?}",
            String::from_utf8_lossy(needle)
        );
    }
}

/// Mean of each channel over a rectangle given in fractions of the image size.
pub fn region_mean(image: &RgbImage, x0: f64, y0: f64, x1: f64, y1: f64) -> [f64; 3] {
    let (w, h) = (f64::from(image.width()), f64::from(image.height()));
    let mut sum = [0.0; 3];
    let mut count = 0.0;
    for y in (y0 * h) as u32..((y1 * h) as u32).max((y0 * h) as u32 + 1) {
        for x in (x0 * w) as u32..((x1 * w) as u32).max((x0 * w) as u32 + 1) {
            let pixel = image.get_pixel(x, y).0;
            for channel in 0..3 {
                sum[channel] += f64::from(pixel[channel]);
            }
            count += 1.0;
        }
    }
    sum.map(|total| total / count)
}

pub fn mean(image: &RgbImage) -> [f64; 3] {
    region_mean(image, 0.0, 0.0, 1.0, 1.0)
}

/// Mean absolute difference per sample between two images of the same size.
pub fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let total: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    total as f64 / a.as_raw().len() as f64
}

pub fn assert_close(actual: [f64; 3], expected: [f64; 3], tolerance: f64, what: &str) {
    for channel in 0..3 {
        assert!(
            (actual[channel] - expected[channel]).abs() <= tolerance,
            "{what}: channel {channel} is {actual:?}, expected {expected:?} within {tolerance}"
        );
    }
}

/// A little-endian TIFF block with one IFD entry: Orientation (0x0112) = `value`.
pub fn exif_orientation(value: u16) -> Vec<u8> {
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&1u16.to_le_bytes());
    tiff.extend_from_slice(&0x0112u16.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&value.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_le_bytes());
    tiff
}

/// Encodes a JPEG at quality 95, with an EXIF orientation when given.
pub fn encode_jpeg(
    samples: &[u8],
    width: u16,
    height: u16,
    color: jpeg_encoder::ColorType,
    orientation: Option<u16>,
) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, 95);
    if let Some(value) = orientation {
        encoder.add_exif_metadata(&exif_orientation(value)).unwrap();
    }
    encoder.encode(samples, width, height, color).unwrap();
    bytes
}

pub fn encode_png(image: &DynamicImage) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    bytes.into_inner()
}

/// CRC-32 (IEEE) as PNG chunks use it.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG that declares `width` x `height` RGB pixels and holds no pixel data.
pub fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend_from_slice(&13u32.to_be_bytes());
    bytes.extend_from_slice(&ihdr);
    bytes.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    bytes.extend_from_slice(&0u32.to_be_bytes());
    bytes.extend_from_slice(b"IEND");
    bytes.extend_from_slice(&crc32(b"IEND").to_be_bytes());
    bytes
}
