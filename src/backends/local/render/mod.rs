//! Renderer of the built-in `local` video backend.
//!
//! It draws a synthetic clip whose look depends on the prompt: each segment's prompt
//! is hashed (SHA-256) into a palette for a scrolling background gradient and a set of
//! moving shapes, and the prompt text, the label and a running timecode are drawn on
//! top with the `font8x8` bitmap font. Frames are encoded one by one with the bundled
//! OpenH264 encoder and streamed into an MP4 file with the `mp4` crate; a WebP
//! thumbnail and a JPEG sprite sheet are written alongside by the writers shared with
//! [`crate::previews`]. Everything is pure Rust or C bundled inside a crate, so the
//! backend needs no ffmpeg or other tool at run time.

mod canvas;
mod scene;
mod video;

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use font8x8::legacy::{BASIC_LEGACY, LATIN_LEGACY};
use image::imageops::{self, FilterType};
use mp4::{AvcConfig, FourCC, MediaConfig, Mp4Config, Mp4Sample, Mp4Writer, TrackConfig, TrackType};
use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, RateControlMode, UsageType, VuiConfig,
};
use openh264::formats::YUVSource;
use sha2::{Digest, Sha256};

use self::canvas::*;
use self::scene::*;
use self::video::*;
use crate::previews::{PreviewError, SpriteSheet, TempFile, sprite_frames, thumbnail_frame, write_thumbnail};
pub use crate::previews::{
    SPRITESHEET_COLUMNS, SPRITESHEET_FILE_NAME, SPRITESHEET_ROWS, SPRITESHEET_TILE_WIDTH, THUMBNAIL_FILE_NAME,
    THUMBNAIL_MAX_SIDE,
};

/// File name of the rendered video inside the output directory.
pub const VIDEO_FILE_NAME: &str = "video.mp4";
/// Smallest accepted width or height.
pub const MIN_SIDE: u32 = 16;
/// Largest accepted long side (an OpenH264 limit).
pub const MAX_LONG_SIDE: u32 = 3840;
/// Largest accepted short side (an OpenH264 limit).
pub const MAX_SHORT_SIDE: u32 = 2160;
/// Largest accepted frame rate.
pub const MAX_FPS: u32 = 120;

/// One stretch of the video, drawn with the look of its own prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The prompt this segment illustrates.
    pub prompt: String,
    /// Length of the segment in whole seconds.
    pub seconds: u32,
}

/// What to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderSpec {
    /// Frame width in pixels; must be even.
    pub width: u32,
    /// Frame height in pixels; must be even.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// The segments, in order; the video lasts the sum of their seconds.
    pub segments: Vec<Segment>,
    /// Encoded PNG/JPEG/WebP image shown as the first frame and faded out over the first second.
    pub reference_image: Option<Vec<u8>>,
    /// Short text drawn on every frame, e.g. the video id.
    pub label: String,
}

/// What [`render`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderOutput {
    /// Size of `video.mp4` in bytes.
    pub video_bytes: u64,
    /// Size of `thumbnail.webp` in bytes.
    pub thumbnail_bytes: u64,
    /// Size of `spritesheet.jpg` in bytes.
    pub spritesheet_bytes: u64,
    /// Number of frames in the video.
    pub frames: u32,
    /// Duration of the video in milliseconds.
    pub duration_ms: u64,
}

/// Why [`render`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The spec cannot be rendered (odd or out-of-range size, zero duration, ...).
    #[error("invalid render spec: {0}")]
    InvalidSpec(String),
    /// Reading or writing a file failed.
    #[error("i/o error while rendering: {0}")]
    Io(#[from] io::Error),
    /// The H.264 encoder failed or produced unusable output.
    #[error("h264 encoder error: {0}")]
    Encoder(String),
    /// Writing the MP4 container failed.
    #[error("mp4 mux error: {0}")]
    Mux(String),
    /// Decoding the reference image or encoding the thumbnail/sprite sheet failed.
    #[error("image error: {0}")]
    Image(#[from] image::ImageError),
    /// `cancel()` returned true.
    #[error("render cancelled")]
    Cancelled,
}

fn encoder_err(e: openh264::Error) -> RenderError {
    RenderError::Encoder(e.to_string())
}

/// The shared preview writers fail only with i/o and image errors (a frame buffer of
/// the wrong size is an image error); the other variants come from decoding only.
fn preview_err(e: PreviewError) -> RenderError {
    match e {
        PreviewError::Io(e) => RenderError::Io(e),
        PreviewError::Image(e) => RenderError::Image(e),
        other => RenderError::InvalidSpec(other.to_string()),
    }
}

fn mux_err(e: mp4::Error) -> RenderError {
    match e {
        mp4::Error::IoError(io) => RenderError::Io(io),
        other => RenderError::Mux(other.to_string()),
    }
}

/// Writes `video.mp4`, `thumbnail.webp`, `spritesheet.jpg` into `dir` (must exist).
///
/// Calls `progress(p)` with p in 0..=99, non-decreasing, as frames are encoded.
/// Blocking and CPU-bound: run it on a blocking thread. Each file is written to a
/// temporary name in `dir` and renamed into place (the video last), so a crash never
/// leaves a half-written final file. `cancel()` is polled before every frame; when it
/// returns true the render stops with [`RenderError::Cancelled`] and the temporary
/// files are removed.
pub fn render(
    spec: &RenderSpec,
    dir: &Path,
    progress: &mut dyn FnMut(u8),
    cancel: &dyn Fn() -> bool,
) -> Result<RenderOutput, RenderError> {
    let started = Instant::now();
    let total_frames = validate(spec)?;
    let mut progress = Progress::new(progress);
    progress.report(0);
    if cancel() {
        return Err(RenderError::Cancelled);
    }
    let scene = Scene::new(spec, total_frames)?;
    let (width, height) = (spec.width, spec.height);

    // Video, capturing the middle frame and the sprite tiles on the way.
    let mut sprite = SpriteSheet::new(width, height, sprite_frames(total_frames));
    let thumb_frame = thumbnail_frame(total_frames);
    let mut thumbnail: Option<Vec<u8>> = None;
    let video_tmp = TempFile::new(dir, VIDEO_FILE_NAME);
    let mut video = VideoWriter::create(&video_tmp.tmp, spec)?;
    let mut canvas = Canvas::new(width as usize, height as usize);
    for frame in 0..total_frames {
        if cancel() {
            return Err(RenderError::Cancelled);
        }
        scene.draw(frame, &mut canvas);
        if frame == thumb_frame {
            thumbnail = Some(canvas.rgb.clone());
        }
        sprite.capture(frame, width, height, &canvas.rgb).map_err(preview_err)?;
        video.push_frame(frame, &canvas)?;
        progress.report(scale_progress(frame + 1, total_frames, 95));
    }
    let samples = video.finish()?;

    // Thumbnail: the middle frame, long side at most THUMBNAIL_MAX_SIDE.
    if cancel() {
        return Err(RenderError::Cancelled);
    }
    let thumb_rgb = thumbnail.ok_or_else(|| invalid("the middle frame was not captured"))?;
    let thumb_tmp = TempFile::new(dir, THUMBNAIL_FILE_NAME);
    write_thumbnail(&thumb_tmp.tmp, width, height, thumb_rgb).map_err(preview_err)?;
    progress.report(97);

    // Sprite sheet.
    if cancel() {
        return Err(RenderError::Cancelled);
    }
    let sheet_tmp = TempFile::new(dir, SPRITESHEET_FILE_NAME);
    sprite.write(&sheet_tmp.tmp).map_err(preview_err)?;
    progress.report(98);

    // Publish: the video last, so its presence implies the other two.
    if cancel() {
        return Err(RenderError::Cancelled);
    }
    let thumbnail_bytes = thumb_tmp.commit()?;
    let spritesheet_bytes = sheet_tmp.commit()?;
    let video_bytes = video_tmp.commit()?;
    progress.report(99);

    tracing::debug!(
        width,
        height,
        fps = spec.fps,
        frames = total_frames,
        samples,
        video_bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "local render finished"
    );
    Ok(RenderOutput {
        video_bytes,
        thumbnail_bytes,
        spritesheet_bytes,
        frames: total_frames,
        duration_ms: u64::from(total_frames) * 1000 / u64::from(spec.fps),
    })
}

#[cfg(test)]
mod tests;
