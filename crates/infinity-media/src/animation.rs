//! Animated GIFs: bounded decoding of every frame and resized animated variants.

use std::io::Cursor;

use fast_image_resize::Resizer;
use image::codecs::gif::{GifDecoder, GifEncoder, Repeat};
use image::{AnimationDecoder, DynamicImage, Frame, ImageDecoder};

use crate::decode::{guard_panics, image_error};
use crate::{resize, Limits, MediaError, Variant};

/// Colour quantisation speed for the GIF encoder, from 1 (best, slowest) to
/// 30; 10 is the `image` crate's default.
const GIF_SPEED: i32 = 10;

/// Decodes every frame of a GIF, each composited onto the full canvas as RGBA
/// (the `image` decoder applies the disposal methods), so no frame comes out
/// blank or partial.
pub(crate) fn decode_frames(bytes: &[u8], limits: &Limits) -> Result<Vec<Frame>, MediaError> {
    guard_panics(|| {
        let mut decoder = GifDecoder::new(Cursor::new(bytes)).map_err(image_error)?;
        decoder
            .set_limits(limits.decoder_limits())
            .map_err(image_error)?;
        let mut frames = Vec::new();
        for frame in decoder.into_frames() {
            frames.push(frame.map_err(image_error)?);
            if frames.len() > limits.max_frames as usize {
                return Err(MediaError::TooManyFrames {
                    frames: frames.len() as u64,
                    limit: limits.max_frames,
                });
            }
        }
        if frames.is_empty() {
            return Err(MediaError::corrupt("the GIF contains no frames"));
        }
        Ok(frames)
    })
}

/// Makes an animated GIF variant for each of `sizes`, every frame resized
/// with its delay kept. Sizes that give the same dimensions share one encoding.
pub(crate) fn render(frames: &[Frame], sizes: &[u32]) -> Result<Vec<Variant>, MediaError> {
    let Some(first) = frames.first() else {
        return Err(MediaError::corrupt("the GIF contains no frames"));
    };
    let (canvas_width, canvas_height) = first.buffer().dimensions();
    let mut resizer = Resizer::new();
    let mut variants: Vec<Variant> = Vec::with_capacity(sizes.len());

    for &size in sizes {
        let (width, height) = resize::fit(canvas_width, canvas_height, size);
        let reused = variants
            .iter()
            .find(|variant| (variant.width, variant.height) == (width, height));
        let bytes = match reused {
            Some(variant) => variant.bytes.clone(),
            None => encode_animation(&mut resizer, frames, width, height)?,
        };
        variants.push(Variant {
            size,
            width,
            height,
            mime: "image/gif",
            extension: "gif",
            bytes,
        });
    }
    Ok(variants)
}

fn encode_animation(
    resizer: &mut Resizer,
    frames: &[Frame],
    width: u32,
    height: u32,
) -> Result<Vec<u8>, MediaError> {
    let mut bytes = Vec::new();
    let mut encoder = GifEncoder::new_with_speed(&mut bytes, GIF_SPEED);
    let encode_error = |error: image::ImageError| MediaError::Encode(error.to_string());
    encoder.set_repeat(Repeat::Infinite).map_err(encode_error)?;

    for frame in frames {
        let canvas = DynamicImage::ImageRgba8(frame.buffer().clone());
        let resized = if (canvas.width(), canvas.height()) == (width, height) {
            canvas
        } else {
            resize::resize(resizer, &canvas, width, height)?
        };
        let resized_frame = Frame::from_parts(resized.into_rgba8(), 0, 0, frame.delay());
        encoder.encode_frame(resized_frame).map_err(encode_error)?;
    }
    drop(encoder);
    Ok(bytes)
}
