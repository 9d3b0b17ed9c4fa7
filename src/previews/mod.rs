//! Preview images — `thumbnail.webp` and `spritesheet.jpg` — for a finished video.
//!
//! The local renderer draws its previews from the frames it renders; a remote provider
//! that returns only an MP4 gets the same two files derived from the MP4 itself by
//! [`derive_previews`]: the H.264 track is read sample by sample with the `mp4` crate,
//! decoded from the start with the bundled OpenH264 decoder (Baseline, Main and High
//! profile, B-frames included; 8-bit 4:2:0 only), and only the frames the previews
//! need are converted to RGB. The thumbnail and sprite sheet writers here are shared
//! with the local renderer (`backends::local::render`), so both paths give the same
//! sizes, layout and encoders. Everything is pure Rust or C bundled inside a crate: no
//! ffmpeg at run time.

mod color;
mod frames;
mod sps;
mod track;
mod write;

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::webp::WebPEncoder;
use image::imageops::{self, FilterType};
use image::{ExtendedColorType, ImageBuffer, ImageEncoder, Rgb, RgbImage};
use mp4::{Mp4Reader, Mp4Track, TrackType};
use openh264::OpenH264API;
use openh264::decoder::{DecodedYUV, Decoder, DecoderConfig, Flush};
use openh264::formats::YUVSource;

use self::color::*;
use self::frames::*;
pub(crate) use self::frames::{sprite_frames, thumbnail_frame};
use self::sps::*;
use self::track::*;
#[cfg(test)]
pub(crate) use self::write::fit_within;
pub(crate) use self::write::{SpriteSheet, TempFile, write_thumbnail};

/// File name of the thumbnail inside the output directory.
pub const THUMBNAIL_FILE_NAME: &str = "thumbnail.webp";
/// File name of the sprite sheet inside the output directory.
pub const SPRITESHEET_FILE_NAME: &str = "spritesheet.jpg";
/// The thumbnail is the middle frame, scaled down (keeping aspect) so that its long
/// side is at most this many pixels; smaller videos keep their own size.
pub const THUMBNAIL_MAX_SIDE: u32 = 1280;
/// Number of tile columns in the sprite sheet.
pub const SPRITESHEET_COLUMNS: u32 = 5;
/// Number of tile rows in the sprite sheet.
pub const SPRITESHEET_ROWS: u32 = 2;
/// Width of one sprite sheet tile; its height keeps the video's aspect ratio.
pub const SPRITESHEET_TILE_WIDTH: u32 = 256;

/// JPEG quality of the sprite sheet.
const SPRITESHEET_JPEG_QUALITY: u8 = 85;
/// A sample larger than this is treated as corrupt rather than read into memory.
const MAX_SAMPLE_BYTES: u32 = 64 << 20;

/// Why [`derive_previews`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    /// The file is not an MP4 the reader understands (or its structure is damaged).
    #[error("not a readable MP4 file: {0}")]
    NotMp4(String),
    /// The MP4 has no H.264 (`avc1`) video track.
    #[error("the MP4 has no H.264 video track")]
    NoH264Track,
    /// The H.264 stream uses a format the decoder does not support (e.g. 10-bit, 4:2:2).
    #[error("unsupported H.264 stream: {0}")]
    Unsupported(String),
    /// No frame could be decoded (or the decoder could not be created).
    #[error("h264 decode error: {0}")]
    Decode(String),
    /// Reading the video or writing a preview failed.
    #[error("i/o error while deriving previews: {0}")]
    Io(#[from] io::Error),
    /// Encoding the thumbnail or the sprite sheet failed.
    #[error("image error: {0}")]
    Image(#[from] image::ImageError),
    /// The MP4 parser or the decoder wrapper panicked on malformed input.
    #[error("malformed video (the parser panicked: {0})")]
    Panicked(String),
}

/// What the video turned out to be, as found while deriving its previews.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Previews {
    /// Width of the decoded frames in pixels (after the stream's cropping).
    pub width: u32,
    /// Height of the decoded frames in pixels (after the stream's cropping).
    pub height: u32,
    /// Duration of the video track in milliseconds.
    pub duration_ms: u64,
    /// Number of frames (samples) in the video track.
    pub frames: u32,
}

/// Reads the MP4 at `video` and writes `thumbnail.webp` and `spritesheet.jpg` into `dir`
/// (which must exist), exactly as the local renderer does: the middle frame as a lossless
/// WebP with its long side capped at [`THUMBNAIL_MAX_SIDE`], and a
/// [`SPRITESHEET_COLUMNS`]×[`SPRITESHEET_ROWS`] grid of [`SPRITESHEET_TILE_WIDTH`]-wide
/// tiles of evenly spaced frames as a JPEG. Each file goes through a temporary name in
/// `dir` and is renamed into place, both only after both were written.
///
/// The first H.264 video track (lowest track id) is used. Samples are read one by one
/// (the file is never loaded whole) and decoded sequentially from the start, so any GOP
/// structure works; only the frames the previews need are kept. A frame that fails to
/// decode is replaced by the nearest one that did; if none decodes, this fails.
///
/// Blocking and CPU-bound (the whole track is decoded): run it on a blocking thread.
/// Returns the video's real width, height, duration and frame count.
pub fn derive_previews(video: &Path, dir: &Path) -> Result<Previews, PreviewError> {
    // The mp4 crate has a few panicking paths on malformed files; a bad upload must fail
    // the job, not unwind through the caller.
    panic::catch_unwind(AssertUnwindSafe(|| derive(video, dir))).unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        Err(PreviewError::Panicked(msg))
    })
}

fn derive(video: &Path, dir: &Path) -> Result<Previews, PreviewError> {
    let started = Instant::now();
    let file = File::open(video)?;
    let size = file.metadata()?.len();
    let mut reader =
        Mp4Reader::read_header(crate::media::Bounded::new(BufReader::new(file), size), size).map_err(mp4_err)?;
    let track = H264Track::find(&reader)?;
    let total = track.sample_count;
    if total == 0 {
        return Err(PreviewError::Decode("the video track has no samples".to_string()));
    }

    let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
    let mut decoder = Decoder::with_api_config(OpenH264API::from_source(), config)
        .map_err(|e| PreviewError::Decode(e.to_string()))?;
    let mut picker = FramePicker::new(total, track.color);
    let mut annexb = Vec::with_capacity(256 * 1024);
    let mut failed = 0u32;
    let mut params_sent = false;
    let mut first_failure: Option<String> = None;
    let mut fail = |failed: &mut u32, why: String| {
        *failed += 1;
        first_failure.get_or_insert(why);
    };

    for id in 1..=total {
        if picker.is_done() {
            break; // the last tile is at 95%: the rest of the video is not needed
        }
        let declared = reader.tracks().get(&track.id).and_then(|t| sample_size(t, id));
        if declared.is_some_and(|s| s > MAX_SAMPLE_BYTES || u64::from(s) > size) {
            fail(&mut failed, format!("sample {id} has an impossible size"));
            continue;
        }
        let sample = match reader.read_sample(track.id, id) {
            Ok(Some(sample)) => sample,
            Ok(None) => {
                fail(&mut failed, format!("sample {id} is missing"));
                continue;
            }
            // A truncated file: the samples past its end are lost, the rest still count.
            Err(mp4::Error::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                fail(&mut failed, format!("sample {id} lies past the end of the file"));
                continue;
            }
            Err(e) => return Err(mp4_err(e)),
        };
        annexb.clear();
        if !params_sent {
            // The parameter sets from the avcC box go in front of the first sample.
            params_sent = true;
            for ps in &track.param_sets {
                annexb.extend_from_slice(&[0, 0, 0, 1]);
                annexb.extend_from_slice(ps);
            }
        }
        if !to_annex_b(&sample.bytes, track.length_size, &mut annexb) {
            fail(&mut failed, format!("sample {id} has a malformed NAL unit length"));
            continue;
        }
        if annexb.is_empty() {
            fail(&mut failed, format!("sample {id} holds no NAL unit"));
            continue;
        }
        match decoder.decode(&annexb) {
            Ok(Some(yuv)) => picker.push(&yuv, failed)?,
            Ok(None) => {}
            Err(e) => fail(&mut failed, format!("sample {id}: {e}")),
        }
    }
    match decoder.flush_remaining() {
        Ok(frames) => {
            for yuv in &frames {
                picker.push(yuv, failed)?;
            }
        }
        Err(e) => fail(&mut failed, format!("flushing the decoder: {e}")),
    }
    let decoded = picker.decoded;
    let picked = picker.finish()?.ok_or_else(|| {
        PreviewError::Decode(format!(
            "none of the {total} frames could be decoded ({})",
            first_failure.as_deref().unwrap_or("the decoder returned no picture")
        ))
    })?;
    if failed > 0 {
        tracing::warn!(
            video = %video.display(),
            failed,
            decoded,
            first_failure = first_failure.as_deref().unwrap_or(""),
            "some frames could not be decoded; previews use the nearest decoded frames"
        );
    }

    let thumb_tmp = TempFile::new(dir, THUMBNAIL_FILE_NAME);
    let (tw, th, thumb_rgb) = picked.thumbnail;
    write_thumbnail(&thumb_tmp.tmp, tw, th, thumb_rgb)?;
    let sheet_tmp = TempFile::new(dir, SPRITESHEET_FILE_NAME);
    picked.sprite.write(&sheet_tmp.tmp)?;
    thumb_tmp.commit()?;
    sheet_tmp.commit()?;

    let duration_ms = track.duration_ms;
    tracing::debug!(
        video = %video.display(),
        width = picked.width,
        height = picked.height,
        frames = total,
        decoded,
        duration_ms,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "derived previews from mp4"
    );
    Ok(Previews {
        width: picked.width,
        height: picked.height,
        duration_ms,
        frames: total,
    })
}

fn mp4_err(e: mp4::Error) -> PreviewError {
    match e {
        mp4::Error::IoError(e) => PreviewError::Io(e),
        other => PreviewError::NotMp4(other.to_string()),
    }
}

/// `ticks / timescale` seconds in milliseconds, rounded; 0 for a zero timescale.
fn ticks_to_ms(ticks: u64, timescale: u32) -> u64 {
    if timescale == 0 {
        return 0;
    }
    let ms = (u128::from(ticks) * 1000 + u128::from(timescale) / 2) / u128::from(timescale);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
