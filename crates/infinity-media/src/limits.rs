//! Upload limits and the checks that apply them before any pixel is decoded.

use crate::MediaError;

/// Bounds on what an upload may declare and what decoding it may cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum size of the uploaded file, in bytes.
    pub max_bytes: usize,
    /// Maximum width times height of the image (of the canvas, for animations).
    pub max_pixels: u64,
    /// Maximum width or height, in pixels.
    pub max_dimension: u32,
    /// Maximum number of frames in an animation.
    pub max_frames: u32,
    /// Maximum memory the decoders may allocate, in bytes.
    pub max_alloc: u64,
}

impl Default for Limits {
    /// 25 MiB, 50 megapixels, 12000 pixels on a side, 300 frames and 512 MiB
    /// of decoder memory: room for any phone or camera photo.
    fn default() -> Self {
        Limits {
            max_bytes: 25 * 1024 * 1024,
            max_pixels: 50_000_000,
            max_dimension: 12_000,
            max_frames: 300,
            max_alloc: 512 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// Rejects an empty or oversized file before anything parses it.
    pub(crate) fn check_bytes(&self, bytes: &[u8]) -> Result<(), MediaError> {
        if bytes.is_empty() {
            return Err(MediaError::Empty);
        }
        if bytes.len() > self.max_bytes {
            return Err(MediaError::TooManyBytes {
                size: bytes.len(),
                limit: self.max_bytes,
            });
        }
        Ok(())
    }

    /// Rejects declared dimensions that are zero or over the limits.
    pub(crate) fn check_dimensions(&self, width: u32, height: u32) -> Result<(), MediaError> {
        if width == 0 || height == 0 {
            return Err(MediaError::ZeroDimension { width, height });
        }
        if width > self.max_dimension || height > self.max_dimension {
            return Err(MediaError::TooWide {
                width,
                height,
                limit: self.max_dimension,
            });
        }
        if u64::from(width) * u64::from(height) > self.max_pixels {
            return Err(MediaError::TooManyPixels {
                width,
                height,
                limit: self.max_pixels,
            });
        }
        Ok(())
    }

    /// Rejects an animation with too many frames, or one whose decoded frames
    /// (RGBA, 4 bytes a pixel) would not fit in the memory limit.
    pub(crate) fn check_frames(
        &self,
        frames: u64,
        width: u32,
        height: u32,
    ) -> Result<(), MediaError> {
        if frames > u64::from(self.max_frames) {
            return Err(MediaError::TooManyFrames {
                frames,
                limit: self.max_frames,
            });
        }
        let needed = frames
            .saturating_mul(u64::from(width) * u64::from(height))
            .saturating_mul(4);
        self.check_alloc(needed)
    }

    /// Rejects a decode that would allocate more than `max_alloc` bytes.
    pub(crate) fn check_alloc(&self, needed: u64) -> Result<(), MediaError> {
        if needed > self.max_alloc {
            return Err(MediaError::MemoryLimit {
                limit: self.max_alloc,
            });
        }
        Ok(())
    }

    /// Converts these limits into the `image` crate's decoder limits.
    pub(crate) fn decoder_limits(&self) -> image::Limits {
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(self.max_dimension);
        limits.max_image_height = Some(self.max_dimension);
        limits.max_alloc = Some(self.max_alloc);
        limits
    }
}
