//! Walks the block structure of a GIF to count its frames without decompressing them.

use crate::MediaError;

/// The logical screen size and frame count of a GIF.
pub(crate) struct GifScreen {
    pub width: u32,
    pub height: u32,
    pub frames: u64,
}

const EXTENSION: u8 = 0x21;
const IMAGE_DESCRIPTOR: u8 = 0x2C;
const TRAILER: u8 = 0x3B;

/// Counts the image descriptors in `bytes`. A file that ends without a trailer
/// is counted up to where it ends; the full decode decides whether it is usable.
pub(crate) fn scan(bytes: &[u8]) -> Result<GifScreen, MediaError> {
    let screen = bytes
        .get(6..13)
        .ok_or_else(|| MediaError::corrupt("the GIF header is incomplete"))?;
    let width = u32::from(u16::from_le_bytes([screen[0], screen[1]]));
    let height = u32::from(u16::from_le_bytes([screen[2], screen[3]]));
    let mut pos = 13 + color_table_len(screen[4]);
    let mut frames = 0;

    while let Some(&introducer) = bytes.get(pos) {
        match introducer {
            TRAILER => break,
            EXTENSION => pos = skip_sub_blocks(bytes, pos + 2),
            IMAGE_DESCRIPTOR => {
                frames += 1;
                let Some(&packed) = bytes.get(pos + 9) else {
                    break;
                };
                // Descriptor (10 bytes), local colour table, LZW code size byte.
                pos = skip_sub_blocks(bytes, pos + 10 + color_table_len(packed) + 1);
            }
            other => {
                return Err(MediaError::corrupt(format!(
                    "unexpected GIF block type 0x{other:02X} at byte {pos}"
                )));
            }
        }
    }
    if frames == 0 {
        return Err(MediaError::corrupt("the GIF contains no frames"));
    }
    Ok(GifScreen {
        width,
        height,
        frames,
    })
}

/// Size in bytes of the colour table that a packed-fields byte announces.
fn color_table_len(packed: u8) -> usize {
    if packed & 0x80 == 0 {
        0
    } else {
        3 << ((packed & 0x07) + 1)
    }
}

/// Returns the position after the chain of sub-blocks that starts at `pos`,
/// or the end of `bytes` when the chain is cut off.
fn skip_sub_blocks(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(&size) = bytes.get(pos) {
        pos += 1;
        if size == 0 {
            return pos;
        }
        pos += usize::from(size);
    }
    bytes.len()
}
