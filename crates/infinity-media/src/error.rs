//! The error type returned by every entry point of the crate.

/// A reason an upload was rejected or could not be rendered.
///
/// The `Display` text is written for the person who uploaded the file, so the
/// API can send it as is; `status` gives the HTTP status to send with it.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("the file is empty")]
    Empty,

    #[error("the file is {size} bytes, more than the limit of {limit} bytes")]
    TooManyBytes { size: usize, limit: usize },

    /// A recognised image or document format that Infinity does not accept.
    #[error("{0} images are not supported; upload JPEG, PNG, WebP or GIF")]
    UnsupportedFormat(&'static str),

    #[error("the file is not a supported image; upload JPEG, PNG, WebP or GIF")]
    NotAnImage,

    #[error("the image declares a width or height of 0 ({width}x{height})")]
    ZeroDimension { width: u32, height: u32 },

    #[error(
        "the image declares {width}x{height} pixels, more than the limit of {limit} pixels \
         on either side"
    )]
    TooWide { width: u32, height: u32, limit: u32 },

    #[error("the image declares {width}x{height} pixels, more than the limit of {limit} pixels")]
    TooManyPixels { width: u32, height: u32, limit: u64 },

    #[error("the animation has {frames} frames, more than the limit of {limit}")]
    TooManyFrames { frames: u64, limit: u32 },

    #[error("decoding the image needs more than the memory limit of {limit} bytes")]
    MemoryLimit { limit: u64 },

    /// A valid file that uses a coding feature the decoders do not implement.
    #[error(
        "the image uses a feature that is not supported ({0}); re-save it as a baseline JPEG or PNG"
    )]
    UnsupportedFeature(String),

    /// A decoder stopped because the image needs more than the configured limits.
    #[error("the image exceeds a decoding limit: {0}")]
    DecoderLimit(String),

    #[error("the image is truncated or corrupt: {0}")]
    Corrupt(String),

    /// A failure on Infinity's side while writing a variant, not a problem with the upload.
    #[error("failed to encode a variant: {0}")]
    Encode(String),
}

impl MediaError {
    /// Returns the HTTP status for this error: 413 for too many bytes, 415 for a
    /// recognised but unsupported format, 500 when encoding fails, 422 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            MediaError::TooManyBytes { .. } => 413,
            MediaError::UnsupportedFormat(_) => 415,
            MediaError::Encode(_) => 500,
            _ => 422,
        }
    }

    pub(crate) fn corrupt(detail: impl std::fmt::Display) -> Self {
        MediaError::Corrupt(detail.to_string())
    }
}
