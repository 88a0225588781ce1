//! Tests on images generated here: orientations, colour models, bit depths,
//! animation, transparency, unsupported formats and limits.

mod common;

use common::*;
use image::codecs::gif::{GifEncoder, Repeat};
use image::{
    AnimationDecoder, Delay, DynamicImage, Frame, ImageBuffer, Luma, Rgb, Rgba, RgbaImage,
};
use infinity_media::{inspect, render, validate, Format, Limits, MediaError};

const RED: [u8; 3] = [230, 20, 20];
const GREEN: [u8; 3] = [20, 200, 20];
const WHITE: [u8; 3] = [255, 255, 255];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Corner {
    TopLeft,
    TopRight,
    BottomLeft,
    BottomRight,
}

/// A 96x48 stored image: white, with a red block at stored (0, 0) and a green
/// block at the end of stored row 0.
fn marked_image() -> Vec<u8> {
    let (width, height) = (96u32, 48u32);
    let mut samples = Vec::new();
    for y in 0..height {
        for x in 0..width {
            let colour = match (x, y) {
                (0..24, 0..24) => RED,
                (72.., 0..24) => GREEN,
                _ => WHITE,
            };
            samples.extend_from_slice(&colour);
        }
    }
    samples
}

fn corner_mean(image: &image::RgbImage, corner: Corner) -> [f64; 3] {
    let (x0, y0) = match corner {
        Corner::TopLeft => (0.02, 0.02),
        Corner::TopRight => (0.88, 0.02),
        Corner::BottomLeft => (0.02, 0.88),
        Corner::BottomRight => (0.88, 0.88),
    };
    region_mean(image, x0, y0, x0 + 0.1, y0 + 0.1)
}

#[test]
fn orientation_all_eight_upright() {
    use Corner::*;
    // Where the EXIF orientation puts stored pixel (0, 0) and the end of stored
    // row 0 on display, and whether the displayed image is portrait.
    let cases = [
        (1, TopLeft, TopRight, false),
        (2, TopRight, TopLeft, false),
        (3, BottomRight, BottomLeft, false),
        (4, BottomLeft, BottomRight, false),
        (5, TopLeft, BottomLeft, true),
        (6, TopRight, BottomRight, true),
        (7, BottomRight, TopRight, true),
        (8, BottomLeft, TopLeft, true),
    ];
    let samples = marked_image();
    for (value, red_corner, green_corner, portrait) in cases {
        let bytes = encode_jpeg(&samples, 96, 48, jpeg_encoder::ColorType::Rgb, Some(value));
        let expected = if portrait { (48, 96) } else { (96, 48) };

        let inspection = inspect(&bytes, &Limits::default()).unwrap();
        assert_eq!(
            (inspection.width, inspection.height),
            expected,
            "orientation {value}"
        );

        let rendition = render(&bytes, &Limits::default(), &[1280, 32]).unwrap();
        assert_eq!((rendition.width, rendition.height), expected);
        let full = decode(&rendition.variants[0]).to_rgb8();
        assert_eq!(full.dimensions(), expected, "orientation {value}");
        let red = corner_mean(&full, red_corner);
        let green = corner_mean(&full, green_corner);
        assert_close(
            red,
            RED.map(f64::from),
            40.0,
            &format!("red, orientation {value}"),
        );
        assert_close(
            green,
            GREEN.map(f64::from),
            40.0,
            &format!("green, orientation {value}"),
        );

        let small = &rendition.variants[1];
        let small_expected = if portrait { (16, 32) } else { (32, 16) };
        assert_eq!(
            (small.width, small.height),
            small_expected,
            "orientation {value}"
        );
        assert_no_metadata(small);
    }
}

/// Four quadrants of ink: cyan, magenta plus yellow, black only, none.
fn cmyk_quadrants() -> Vec<u8> {
    let mut ink = Vec::new();
    for y in 0..32 {
        for x in 0..32 {
            let pixel = match (x < 16, y < 16) {
                (true, true) => [255, 0, 0, 0],
                (false, true) => [0, 255, 255, 0],
                (true, false) => [0, 0, 0, 255],
                (false, false) => [0, 0, 0, 0],
            };
            ink.extend_from_slice(&pixel);
        }
    }
    ink
}

#[test]
fn cmyk_and_ycck_jpeg_not_inverted() {
    let ink = cmyk_quadrants();
    for color in [
        jpeg_encoder::ColorType::Cmyk,
        jpeg_encoder::ColorType::CmykAsYcck,
    ] {
        let bytes = encode_jpeg(&ink, 32, 32, color, None);
        let rendition = render(&bytes, &Limits::default(), &[1280]).unwrap();
        let variant = &rendition.variants[0];
        assert_eq!(variant.mime, "image/jpeg");
        let rgb = decode(variant).to_rgb8();
        let what = format!("{color:?}");
        assert_close(
            region_mean(&rgb, 0.1, 0.1, 0.4, 0.4),
            [0.0, 255.0, 255.0],
            30.0,
            &what,
        );
        assert_close(
            region_mean(&rgb, 0.6, 0.1, 0.9, 0.4),
            [255.0, 0.0, 0.0],
            30.0,
            &what,
        );
        assert_close(
            region_mean(&rgb, 0.1, 0.6, 0.4, 0.9),
            [0.0, 0.0, 0.0],
            30.0,
            &what,
        );
        assert_close(
            region_mean(&rgb, 0.6, 0.6, 0.9, 0.9),
            [255.0, 255.0, 255.0],
            30.0,
            &what,
        );
    }
}

#[test]
fn png_16_bit_becomes_8_bit_same_mean() {
    let image = ImageBuffer::from_fn(64, 48, |x, y| {
        Rgb([(x * 1000) as u16, (y * 1300) as u16, 40_000u16])
    });
    let source = DynamicImage::ImageRgb16(image);
    let expected = mean(&source.to_rgb8());
    let rendition = render(&encode_png(&source), &Limits::default(), &[1280]).unwrap();
    let variant = &rendition.variants[0];
    let output = decode(variant);
    assert_eq!(output.color(), image::ColorType::Rgb8);
    assert_eq!(variant.mime, "image/jpeg");
    assert_close(mean(&output.to_rgb8()), expected, 3.0, "16-bit mean");
}

#[test]
fn greyscale_png_becomes_rgb_grey() {
    let image = ImageBuffer::from_fn(64, 64, |x, _| Luma([(x * 4) as u8]));
    let source = DynamicImage::ImageLuma8(image);
    let rendition = render(&encode_png(&source), &Limits::default(), &[160]).unwrap();
    let rgb = decode(&rendition.variants[0]).to_rgb8();
    let [r, g, b] = mean(&rgb);
    assert!(
        (r - g).abs() < 2.0 && (g - b).abs() < 2.0,
        "not grey: {r} {g} {b}"
    );
    assert!((r - 126.0).abs() < 4.0, "mean {r}, expected about 126");
}

fn animated_gif(colours: &[[u8; 4]]) -> Vec<u8> {
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut bytes);
        encoder.set_repeat(Repeat::Infinite).unwrap();
        for colour in colours {
            let buffer = RgbaImage::from_pixel(40, 30, Rgba(*colour));
            let delay = Delay::from_numer_denom_ms(100, 1);
            encoder
                .encode_frame(Frame::from_parts(buffer, 0, 0, delay))
                .unwrap();
        }
    }
    bytes
}

#[test]
fn animated_gif_keeps_coloured_frames() {
    let colours = [[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255]];
    let bytes = animated_gif(&colours);
    let inspection = inspect(&bytes, &Limits::default()).unwrap();
    assert!(inspection.animated);
    assert_eq!(inspection.format, Format::Gif);

    let rendition = render(&bytes, &Limits::default(), &[1280, 20]).unwrap();
    assert!(rendition.animated);
    assert_eq!(rendition.note, None);
    let small = &rendition.variants[1];
    assert_eq!(
        (small.width, small.height, small.mime),
        (20, 15, "image/gif")
    );

    let decoder = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(&small.bytes)).unwrap();
    let frames = decoder.into_frames().collect_frames().unwrap();
    assert_eq!(frames.len(), colours.len());
    for (frame, colour) in frames.iter().zip(colours) {
        let rgb = DynamicImage::ImageRgba8(frame.buffer().clone()).to_rgb8();
        let expected = [colour[0], colour[1], colour[2]].map(f64::from);
        assert_close(mean(&rgb), expected, 10.0, "frame colour");
        assert_eq!(frame.delay(), Delay::from_numer_denom_ms(100, 1));
    }
}

#[test]
fn transparency_gives_png_with_alpha() {
    let image = RgbaImage::from_fn(80, 40, |x, _| {
        if x < 40 {
            Rgba([200, 30, 30, 255])
        } else {
            Rgba([0, 0, 0, 0])
        }
    });
    let bytes = encode_png(&DynamicImage::ImageRgba8(image));
    let rendition = render(&bytes, &Limits::default(), &[40]).unwrap();
    let variant = &rendition.variants[0];
    assert_eq!((variant.mime, variant.extension), ("image/png", "png"));
    assert_no_metadata(variant);
    let rgba = decode(variant).to_rgba8();
    assert_eq!(rgba.get_pixel(2, 10).0[3], 255);
    assert_eq!(rgba.get_pixel(38, 10).0[3], 0);
}

#[test]
fn opaque_alpha_channel_gives_jpeg() {
    let image = RgbaImage::from_pixel(30, 30, Rgba([10, 120, 200, 255]));
    let bytes = encode_png(&DynamicImage::ImageRgba8(image));
    let rendition = render(&bytes, &Limits::default(), &[160]).unwrap();
    assert_eq!(rendition.variants[0].mime, "image/jpeg");
    assert_close(
        mean(&decode(&rendition.variants[0]).to_rgb8()),
        [10.0, 120.0, 200.0],
        4.0,
        "colour",
    );
}

#[test]
fn variants_never_enlarged() {
    let source = DynamicImage::new_rgb8(50, 30);
    let rendition = render(&encode_png(&source), &Limits::default(), &[1280, 160, 20]).unwrap();
    let sizes: Vec<(u32, u32, u32)> = rendition
        .variants
        .iter()
        .map(|v| (v.size, v.width, v.height))
        .collect();
    assert_eq!(sizes, vec![(1280, 50, 30), (160, 50, 30), (20, 20, 12)]);
}

#[test]
fn empty_file_rejected() {
    let error = validate(&[], &Limits::default()).unwrap_err();
    assert_eq!(error.status(), 422);
    assert_eq!(error.to_string(), "the file is empty");
}

#[test]
fn png_named_jpg_detected_by_content() {
    let path = std::env::temp_dir().join(format!("infinity-media-{}.jpg", std::process::id()));
    std::fs::write(&path, encode_png(&DynamicImage::new_rgb8(8, 8))).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let inspection = validate(&bytes, &Limits::default()).unwrap();
    assert_eq!(inspection.format, Format::Png);
    assert_eq!(inspection.format.mime(), "image/png");
}

#[test]
fn declared_size_over_limit_rejected() {
    let bytes = png_header_only(30_000, 30_000);
    let started = std::time::Instant::now();
    let error = validate(&bytes, &Limits::default()).unwrap_err();
    assert!(
        started.elapsed().as_millis() < 100,
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(error.status(), 422);
    assert!(
        matches!(error, MediaError::TooWide { width: 30_000, .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .starts_with("the image declares 30000x30000 pixels"),
        "{error}"
    );

    let limits = Limits {
        max_pixels: 10_000,
        ..Limits::default()
    };
    let error = inspect(&png_header_only(200, 100), &limits).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the image declares 200x100 pixels, more than the limit of 10000 pixels"
    );
}

#[test]
fn too_many_bytes_is_413() {
    let limits = Limits {
        max_bytes: 100,
        ..Limits::default()
    };
    let error = inspect(&[0u8; 101], &limits).unwrap_err();
    assert_eq!(error.status(), 413);
    assert!(
        error
            .to_string()
            .contains("101 bytes, more than the limit of 100"),
        "{error}"
    );
}

#[test]
fn unsupported_formats_are_415() {
    let mut bmp = b"BM".to_vec();
    bmp.extend_from_slice(&[0; 12]);
    bmp.extend_from_slice(&40u32.to_le_bytes());
    bmp.extend_from_slice(&[0; 36]);
    let cases: [(&[u8], &str); 7] = [
        (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic", "HEIC"),
        (b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf", "AVIF"),
        (b"II*\0\x08\0\0\0\0\0\0\0", "TIFF"),
        (b"MM\0*\0\0\0\x08\0\0\0\0", "TIFF"),
        (&bmp, "BMP"),
        (
            b"  <?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
            "SVG",
        ),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "PDF"),
    ];
    for (bytes, name) in cases {
        let error = inspect(bytes, &Limits::default()).unwrap_err();
        assert_eq!(error.status(), 415, "{name}");
        assert_eq!(
            error.to_string(),
            format!("{name} images are not supported; upload JPEG, PNG, WebP or GIF")
        );
    }
}

#[test]
fn unknown_bytes_are_422() {
    let error = inspect(b"hello, this is text", &Limits::default()).unwrap_err();
    assert_eq!(error.status(), 422);
    assert!(
        error.to_string().contains("not a supported image"),
        "{error}"
    );
}

#[test]
fn too_many_frames_rejected() {
    let bytes = animated_gif(&[[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255]]);
    let limits = Limits {
        max_frames: 2,
        ..Limits::default()
    };
    let error = inspect(&bytes, &limits).unwrap_err();
    assert_eq!(error.status(), 422);
    assert_eq!(
        error.to_string(),
        "the animation has 3 frames, more than the limit of 2"
    );
}
