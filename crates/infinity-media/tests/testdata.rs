//! Tests on the shared test images, read in place: real photos must give
//! upright, metadata-free sRGB variants; hostile files a specific 4xx, quickly.

mod common;

use std::time::{Duration, Instant};

use common::*;
use image::{imageops, AnimationDecoder, DynamicImage, RgbImage};
use infinity_media::{inspect, render, validate, Format, Limits, Rendition};

/// Renders a file and checks what every accepted upload must satisfy.
fn render_checked(folder: &str, name: &str, displayed: (u32, u32)) -> Rendition {
    let bytes = read(folder, name);
    let inspection = inspect(&bytes, &Limits::default()).unwrap();
    assert_eq!(
        (inspection.width, inspection.height),
        displayed,
        "{name} inspect"
    );
    assert_eq!(
        validate(&bytes, &Limits::default()).unwrap(),
        inspection,
        "{name}"
    );

    let rendition = render(&bytes, &Limits::default(), &SIZES).unwrap();
    assert_eq!((rendition.width, rendition.height), displayed, "{name}");
    assert_eq!(rendition.variants.len(), SIZES.len());
    let longest = displayed.0.max(displayed.1);
    for (variant, size) in rendition.variants.iter().zip(SIZES) {
        assert_eq!(variant.size, size);
        assert_eq!(
            variant.width.max(variant.height),
            longest.min(size),
            "{name} at {size}"
        );
        let ratio_in = f64::from(displayed.0) / f64::from(displayed.1);
        let ratio_out = f64::from(variant.width) / f64::from(variant.height);
        assert!(
            (ratio_in - ratio_out).abs() < 0.02,
            "{name} aspect {ratio_out}"
        );
        assert_no_metadata(variant);
        let decoded = decode(variant);
        assert!(matches!(
            decoded.color(),
            image::ColorType::Rgb8 | image::ColorType::Rgba8
        ));
    }
    rendition
}

type Transform = fn(&RgbImage) -> RgbImage;

/// Decodes the stored pixels of a test file, ignoring its orientation, and
/// applies `transform` to them.
fn reference(name: &str, transform: Transform, size: (u32, u32)) -> RgbImage {
    let stored = image::load_from_memory(&read("images", name))
        .unwrap()
        .to_rgb8();
    imageops::resize(
        &transform(&stored),
        size.0,
        size.1,
        imageops::FilterType::Triangle,
    )
}

#[test]
fn photos_oriented_by_exif() {
    // File, the transform that makes the stored pixels upright, a wrong one
    // with the same output size, and the displayed size.
    let cases: [(&str, Transform, Transform, (u32, u32)); 4] = [
        (
            "Landscape_3.jpg",
            imageops::rotate180,
            Clone::clone,
            (1800, 1200),
        ),
        (
            "Landscape_6.jpg",
            imageops::rotate90,
            imageops::rotate270,
            (1800, 1200),
        ),
        (
            "Landscape_8.jpg",
            imageops::rotate270,
            imageops::rotate90,
            (1800, 1200),
        ),
        (
            "Portrait_2.jpg",
            imageops::flip_horizontal,
            Clone::clone,
            (1200, 1800),
        ),
    ];
    for (name, upright, wrong, displayed) in cases {
        let rendition = render_checked("images", name, displayed);
        let small = decode(&rendition.variants[2]).to_rgb8();
        let right = mean_abs_diff(&small, &reference(name, upright, small.dimensions()));
        assert!(
            right < 12.0,
            "{name}: differs from the upright reference by {right}"
        );
        let wrong = mean_abs_diff(&small, &reference(name, wrong, small.dimensions()));
        assert!(
            wrong > 2.0 * right,
            "{name}: a wrong orientation is as close ({wrong})"
        );
    }
}

#[test]
fn photos_accepted_and_clean() {
    let cases = [
        ("astronaut.png", (512, 512)),
        ("chelsea.png", (451, 300)),
        ("coffee.png", (600, 400)),
        ("rocket.jpg", (640, 427)),
        ("scaledown-test.jpg", (4032, 3024)),
        ("tower_progressive.jpg", (512, 512)),
        ("flower.jpg", (480, 360)),
    ];
    for (name, displayed) in cases {
        let rendition = render_checked("images", name, displayed);
        assert!(
            rendition.variants.iter().all(|v| v.mime == "image/jpeg"),
            "{name}"
        );
        assert!(!rendition.animated);
    }
}

#[test]
fn cmyk_photo_colours_plausible() {
    let rendition = render_checked("images", "Channel_digital_image_CMYK_color.jpg", (500, 333));
    let rgb = decode(&rendition.variants[1]).to_rgb8();
    // The lawn on the left is green and the path on the right is light grey;
    // inverted CMYK would make the lawn magenta and the path dark.
    let [r, g, b] = region_mean(&rgb, 0.02, 0.55, 0.30, 0.75);
    assert!(
        g > r + 15.0 && g > b + 15.0,
        "lawn is not green: {r} {g} {b}"
    );
    let path = region_mean(&rgb, 0.85, 0.70, 0.98, 0.95);
    assert!(
        path.iter().all(|&channel| channel > 120.0),
        "path is dark: {path:?}"
    );
}

#[test]
fn png_16_bit_photo_similar_mean() {
    let rendition = render_checked("images", "monkey16.png", (149, 227));
    let source = image::load_from_memory(&read("images", "monkey16.png")).unwrap();
    assert_eq!(source.color(), image::ColorType::Rgb16);
    let output = decode(&rendition.variants[0]).to_rgb8();
    assert_close(mean(&output), mean(&source.to_rgb8()), 4.0, "monkey16 mean");
}

#[test]
fn alpha_photos_keep_transparency() {
    for (folder, name, displayed) in [
        ("images", "gama-srgb-order-issue304.png", (320, 480)),
        ("unusual", "transparent.png", (200, 150)),
    ] {
        let rendition = render_checked(folder, name, displayed);
        let variant = &rendition.variants[0];
        assert_eq!(variant.mime, "image/png", "{name}");
        let rgba = decode(variant).to_rgba8();
        assert!(
            rgba.pixels().any(|pixel| pixel.0[3] < 255),
            "{name} lost its alpha"
        );
    }
}

#[test]
fn animated_gif_photo_keeps_frames() {
    let rendition = render_checked("images", "iss634.gif", (245, 245));
    assert!(rendition.animated);
    let source_frames = frames(&read("images", "iss634.gif"));
    let output_frames = frames(&rendition.variants[0].bytes);
    assert_eq!(output_frames.len(), 42);
    for (index, (source, output)) in source_frames.iter().zip(&output_frames).enumerate() {
        assert_close(mean(output), mean(source), 12.0, &format!("frame {index}"));
    }
}

fn frames(bytes: &[u8]) -> Vec<RgbImage> {
    let decoder = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(bytes)).unwrap();
    let frames = decoder.into_frames().collect_frames().unwrap();
    frames
        .into_iter()
        .map(|frame| DynamicImage::ImageRgba8(frame.into_buffer()).to_rgb8())
        .collect()
}

#[test]
fn unusual_files_accepted_or_named() {
    for (name, displayed) in [
        ("Landscape_0.jpg", (1800, 1200)),
        ("icc_profile_big.jpg", (425, 250)),
        ("mjpeg.jpg", (960, 720)),
        ("wrongextension.png", (448, 600)),
    ] {
        render_checked("unusual", name, displayed);
    }
    let wrong = inspect(&read("unusual", "wrongextension.png"), &Limits::default()).unwrap();
    assert_eq!(wrong.format, Format::Jpeg);

    let error = validate(&read("unusual", "testimgari.jpg"), &Limits::default()).unwrap_err();
    assert_eq!(error.status(), 422);
    assert!(
        error.to_string().contains("arithmetic JPEG coding"),
        "{error}"
    );
}

/// Hostile files and the text each error must contain; `None` marks a file
/// that decodes completely and is accepted.
const HOSTILE: [(&str, Option<&str>); 41] = [
    (
        "65536-uint32-limit.png",
        Some("declares 65536x65536 pixels"),
    ),
    ("badadler.png", None),
    ("badcrc.png", Some("CRC error")),
    ("broken.jpg", Some("not a supported image")),
    ("broken.png", Some("appeared before IHDR")),
    ("corrupt-header.jpg", Some("ends inside a header segment")),
    ("empty.jpg", Some("the file is empty")),
    ("extraneous-bytes-after-sos.jpg", None),
    ("giant-image.jpg", Some("declares 20000x14000 pixels")),
    (
        "hippopotamus.interlaced.truncated.png",
        Some("ends before the image data"),
    ),
    ("hopper_bad_exif.jpg", Some("Bad Huffman Code")),
    ("huge_IDAT.png", Some("ends before the image data")),
    ("huge_iCCP_chunk.png", Some("ends before the image data")),
    ("invalid-dimensions.jpg", Some("width or height of 0")),
    ("invalid-exif.jpg", None),
    ("junk_jpeg_header.jpg", Some("Extra bytes between headers")),
    ("missing-frame-image-1410.jpg", Some("truncated or corrupt")),
    ("missing-sof.jpg", Some("ends inside a header segment")),
    ("no-frames.gif", Some("contains no frames")),
    ("null_height.jpg", Some("width or height of 0")),
    (
        "peacock.progressive.truncated.jpeg",
        Some("ends before the image data"),
    ),
    ("truncated.jpg", Some("ends before the image data")),
    ("truncated.png", Some("ends before the image data")),
    ("truncated_image.png", Some("ends before the image data")),
    ("truncated_jpeg.jpg", Some("ends before the image data")),
    ("ultrahdr.jpg", Some("ends before the image data")),
    ("x_ihdr_missing.png", Some("appeared before IHDR")),
    ("x_image-issue1075.png", Some("Corrupt deflate stream")),
    ("x_issue214.png", Some("width or height of 0")),
    ("x_unexpected_eof.png", Some("appeared before IHDR")),
    ("xc1n0g08.png", Some("Invalid color type 1")),
    ("xc9n2c08.png", Some("Invalid color type 9")),
    ("xcrn0g04.png", Some("PNG signature is damaged")),
    ("xd0n2c08.png", Some("Invalid bit depth 0")),
    ("xd3n2c08.png", Some("Invalid bit depth 3")),
    ("xdtn0g01.png", Some("IDAT or fdAT chunk is missing")),
    ("xhdn0g08.png", Some("CRC error")),
    ("xlfn0g04.png", Some("PNG signature is damaged")),
    ("xs1n0g01.png", Some("PNG signature is damaged")),
    ("xs2n0g01.png", Some("PNG signature is damaged")),
    ("xs4n0g01.png", Some("PNG signature is damaged")),
];

#[test]
fn hostile_files_rejected_quickly() {
    let listed = std::fs::read_dir(testdata("hostile", "")).unwrap().count();
    assert_eq!(
        listed,
        HOSTILE.len(),
        "a hostile file has no expected outcome"
    );
    for (name, expected) in HOSTILE {
        let bytes = read("hostile", name);
        let started = Instant::now();
        let validated = validate(&bytes, &Limits::default());
        let rendered = render(&bytes, &Limits::default(), &SIZES);
        let elapsed = started.elapsed();
        match expected {
            Some(text) => {
                assert!(elapsed < Duration::from_secs(3), "{name} took {elapsed:?}");
                let error = validated.expect_err(name);
                let status = error.status();
                assert!((400..500).contains(&status), "{name}: status {status}");
                assert!(error.to_string().contains(text), "{name}: {error}");
                let render_error = rendered.expect_err(name);
                assert_eq!(render_error.to_string(), error.to_string(), "{name}");
            }
            None => {
                validated.unwrap_or_else(|error| panic!("{name}: {error}"));
                let rendition = rendered.unwrap_or_else(|error| panic!("{name}: {error}"));
                rendition.variants.iter().for_each(assert_no_metadata);
            }
        }
    }
}
