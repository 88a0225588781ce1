//! Makes the sized, upright variants of a still image.

use fast_image_resize::Resizer;
use image::metadata::Orientation;
use image::DynamicImage;

use crate::header::swaps_axes;
use crate::{encode, resize, MediaError, Variant};

/// Resizes `image` (8-bit sRGB, as stored) for each of `sizes`, turns each
/// result upright by `orientation` and encodes it.
///
/// The variants are made largest first, each from the previous one, so a big
/// photo is read at full size only once. Variants come back in the order of `sizes`.
pub(crate) fn render(
    image: &DynamicImage,
    orientation: Orientation,
    sizes: &[u32],
) -> Result<Vec<Variant>, MediaError> {
    let mut order: Vec<u32> = sizes.to_vec();
    order.sort_unstable_by(|a, b| b.cmp(a));
    order.dedup();

    let mut resizer = Resizer::new();
    let mut previous: Option<DynamicImage> = None;
    let mut made = Vec::with_capacity(order.len());
    for &size in &order {
        let (width, height) = resize::fit(image.width(), image.height(), size);
        let source = previous.as_ref().unwrap_or(image);
        let resized = if (source.width(), source.height()) == (width, height) {
            source.clone()
        } else {
            resize::resize(&mut resizer, source, width, height)?
        };
        made.push((size, upright_variant(size, &resized, orientation)?));
        previous = Some(resized);
    }

    let variants = sizes
        .iter()
        .filter_map(|size| made.iter().find(|(made_size, _)| made_size == size))
        .map(|(_, variant)| variant.clone())
        .collect();
    Ok(variants)
}

fn upright_variant(
    size: u32,
    resized: &DynamicImage,
    orientation: Orientation,
) -> Result<Variant, MediaError> {
    let encoded = if orientation == Orientation::NoTransforms {
        encode::encode(resized)?
    } else {
        let mut upright = resized.clone();
        upright.apply_orientation(orientation);
        encode::encode(&upright)?
    };
    let (width, height) = if swaps_axes(orientation) {
        (resized.height(), resized.width())
    } else {
        (resized.width(), resized.height())
    };
    Ok(Variant {
        size,
        width,
        height,
        mime: encoded.mime,
        extension: encoded.extension,
        bytes: encoded.bytes,
    })
}
