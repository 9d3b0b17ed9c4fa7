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

/// Encodes frames with OpenH264 and streams them as samples into an MP4 file.
struct VideoWriter {
    encoder: Encoder,
    muxer: Mp4Writer<BufWriter<File>>,
    yuv: Yuv420,
    width: u32,
    height: u32,
    timescale: u32,
    sample_duration: u32,
    /// SPS and PPS of the sample entry, known after the first frame.
    param_sets: Option<(Vec<u8>, Vec<u8>)>,
    /// The last sample, held back so a skipped frame can lengthen it.
    pending: Option<Mp4Sample>,
    sample_buf: Vec<u8>,
    samples_written: u32,
}

impl VideoWriter {
    fn create(path: &Path, spec: &RenderSpec) -> Result<Self, RenderError> {
        let file = File::create(path)?;
        let (timescale, sample_duration) = timescale_for(spec.fps);
        let config = Mp4Config {
            major_brand: FourCC::from(*b"isom"),
            minor_version: 512,
            compatible_brands: vec![
                FourCC::from(*b"isom"),
                FourCC::from(*b"iso2"),
                FourCC::from(*b"avc1"),
                FourCC::from(*b"mp41"),
            ],
            timescale,
        };
        let muxer = Mp4Writer::write_start(BufWriter::with_capacity(1 << 20, file), &config).map_err(mux_err)?;
        let encoder =
            Encoder::with_api_config(OpenH264API::from_source(), encoder_config(spec)).map_err(encoder_err)?;
        Ok(Self {
            encoder,
            muxer,
            yuv: Yuv420::new(spec.width as usize, spec.height as usize),
            width: spec.width,
            height: spec.height,
            timescale,
            sample_duration,
            param_sets: None,
            pending: None,
            sample_buf: Vec::with_capacity(256 * 1024),
            samples_written: 0,
        })
    }

    fn push_frame(&mut self, frame: u32, canvas: &Canvas) -> Result<(), RenderError> {
        self.yuv.convert_from(canvas);
        let bitstream = self.encoder.encode(&self.yuv).map_err(encoder_err)?;

        // Annex-B NAL units -> one length-prefixed sample; SPS/PPS go to the avcC box.
        self.sample_buf.clear();
        let mut is_sync = false;
        let mut sps: Option<Vec<u8>> = None;
        let mut pps: Option<Vec<u8>> = None;
        for l in 0..bitstream.num_layers() {
            let Some(layer) = bitstream.layer(l) else {
                continue;
            };
            for n in 0..layer.nal_count() {
                let Some(nal) = layer.nal_unit(n).map(strip_start_code) else {
                    continue;
                };
                let Some(&header) = nal.first() else {
                    continue;
                };
                match (header & 0x1f, &self.param_sets) {
                    (NAL_SPS, None) => sps = Some(nal.to_vec()),
                    (NAL_PPS, None) => pps = Some(nal.to_vec()),
                    (NAL_SPS | NAL_PPS, Some((s, p))) => {
                        // Repeated at every IDR: drop copies of the sample entry's sets,
                        // keep a changed one in-band.
                        if nal != s.as_slice() && nal != p.as_slice() {
                            tracing::warn!("h264 encoder changed its parameter sets mid-stream");
                            push_length_prefixed(&mut self.sample_buf, nal)?;
                        }
                    }
                    (NAL_AUD, _) => {}
                    (nal_type, _) => {
                        is_sync |= nal_type == NAL_IDR_SLICE;
                        push_length_prefixed(&mut self.sample_buf, nal)?;
                    }
                }
            }
        }

        if self.param_sets.is_none() {
            let (Some(sps), Some(pps)) = (sps, pps) else {
                return Err(RenderError::Encoder(
                    "first encoded frame carried no SPS/PPS".to_string(),
                ));
            };
            self.add_track(sps, pps)?;
        }

        if self.sample_buf.is_empty() {
            // A skipped frame: the previous picture stays on screen a frame longer.
            return match self.pending.as_mut() {
                Some(prev) => {
                    prev.duration += self.sample_duration;
                    Ok(())
                }
                None => Err(RenderError::Encoder(
                    "encoder produced no picture for the first frame".to_string(),
                )),
            };
        }
        let sample = Mp4Sample {
            start_time: u64::from(frame) * u64::from(self.sample_duration),
            duration: self.sample_duration,
            rendering_offset: 0,
            is_sync,
            bytes: Bytes::copy_from_slice(&self.sample_buf),
        };
        if let Some(prev) = self.pending.replace(sample) {
            self.write_sample(&prev)?;
        }
        Ok(())
    }

    fn add_track(&mut self, sps: Vec<u8>, pps: Vec<u8>) -> Result<(), RenderError> {
        if sps.len() < 4 {
            return Err(RenderError::Encoder("SPS too short".to_string()));
        }
        let track = TrackConfig {
            track_type: TrackType::Video,
            timescale: self.timescale,
            language: "und".to_string(),
            media_conf: MediaConfig::AvcConfig(AvcConfig {
                width: u16::try_from(self.width).map_err(|_| invalid("width too large"))?,
                height: u16::try_from(self.height).map_err(|_| invalid("height too large"))?,
                seq_param_set: sps.clone(),
                pic_param_set: pps.clone(),
            }),
        };
        self.muxer.add_track(&track).map_err(mux_err)?;
        self.param_sets = Some((sps, pps));
        Ok(())
    }

    fn write_sample(&mut self, sample: &Mp4Sample) -> Result<(), RenderError> {
        self.muxer.write_sample(1, sample).map_err(mux_err)?;
        self.samples_written += 1;
        Ok(())
    }

    /// Writes the last sample and the `moov` box, syncs the file; returns the sample count.
    fn finish(mut self) -> Result<u32, RenderError> {
        if let Some(prev) = self.pending.take() {
            self.write_sample(&prev)?;
        }
        self.muxer.write_end().map_err(mux_err)?;
        let file = self.muxer.into_writer().into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(self.samples_written)
    }
}

fn invalid(msg: &str) -> RenderError {
    RenderError::InvalidSpec(msg.to_string())
}

/// Checks the spec and returns the total number of frames.
fn validate(spec: &RenderSpec) -> Result<u32, RenderError> {
    let (w, h) = (spec.width, spec.height);
    if w % 2 != 0 || h % 2 != 0 {
        return Err(RenderError::InvalidSpec(format!(
            "width and height must be even, got {w}x{h}"
        )));
    }
    if w.min(h) < MIN_SIDE || w.max(h) > MAX_LONG_SIDE || w.min(h) > MAX_SHORT_SIDE {
        return Err(RenderError::InvalidSpec(format!(
            "size {w}x{h} is out of range (sides {MIN_SIDE}..={MAX_LONG_SIDE}, short side at most {MAX_SHORT_SIDE})"
        )));
    }
    if spec.fps == 0 || spec.fps > MAX_FPS {
        return Err(RenderError::InvalidSpec(format!(
            "fps must be in 1..={MAX_FPS}, got {}",
            spec.fps
        )));
    }
    let seconds = spec
        .segments
        .iter()
        .try_fold(0u32, |acc, s| acc.checked_add(s.seconds))
        .ok_or_else(|| invalid("total duration overflows"))?;
    if seconds == 0 {
        return Err(invalid("total duration must be at least one second"));
    }
    seconds.checked_mul(spec.fps).ok_or_else(|| invalid("too many frames"))
}

/// Media timescale and per-frame sample duration; chosen so that the movie and track
/// durations come out exact.
fn timescale_for(fps: u32) -> (u32, u32) {
    if 90_000 % fps == 0 {
        (90_000, 90_000 / fps)
    } else {
        (fps * 1000, 1000)
    }
}

fn encoder_config(spec: &RenderSpec) -> EncoderConfig {
    // About 0.06 bits per pixel: plenty for flat synthetic content.
    let bps = u64::from(spec.width) * u64::from(spec.height) * u64::from(spec.fps) / 16;
    let bps = bps.clamp(300_000, 16_000_000) as u32;
    EncoderConfig::new()
        .bitrate(BitRate::from_bps(bps))
        .max_frame_rate(FrameRate::from_hz(spec.fps as f32))
        .rate_control_mode(RateControlMode::Off)
        .skip_frames(false)
        .usage_type(UsageType::CameraVideoRealTime)
        .complexity(Complexity::Low)
        .intra_frame_period(IntraFramePeriod::from_num_frames(spec.fps * 2))
        .num_threads(1)
        .scene_change_detect(false)
        .background_detection(false)
        .adaptive_quantization(false)
        .vui(VuiConfig::bt709())
}

const NAL_IDR_SLICE: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;

/// Removes a leading Annex-B start code (`00 00 01` or `00 00 00 01`).
fn strip_start_code(nal: &[u8]) -> &[u8] {
    if let Some(rest) = nal.strip_prefix(&[0, 0, 0, 1]) {
        rest
    } else if let Some(rest) = nal.strip_prefix(&[0, 0, 1]) {
        rest
    } else {
        nal
    }
}

fn push_length_prefixed(out: &mut Vec<u8>, nal: &[u8]) -> Result<(), RenderError> {
    let len = u32::try_from(nal.len()).map_err(|_| RenderError::Encoder("NAL unit larger than 4 GiB".to_string()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(nal);
    Ok(())
}

fn scale_progress(done: u32, total: u32, max: u8) -> u8 {
    if total == 0 {
        return max;
    }
    let p = u64::from(done.min(total)) * u64::from(max) / u64::from(total);
    p.min(u64::from(max)) as u8
}

/// Forwards non-decreasing progress values, each at most once.
struct Progress<'a> {
    sink: &'a mut dyn FnMut(u8),
    last: Option<u8>,
}

impl<'a> Progress<'a> {
    fn new(sink: &'a mut dyn FnMut(u8)) -> Self {
        Self { sink, last: None }
    }

    fn report(&mut self, p: u8) {
        let p = p.min(99);
        if self.last.is_none_or(|last| p > last) {
            self.last = Some(p);
            (self.sink)(p);
        }
    }
}

// ----------------------------------------------------------------------------------
// Pixels
// ----------------------------------------------------------------------------------

type Color = [u8; 3];

/// An RGB24 frame.
struct Canvas {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

#[inline]
fn mix(dst: u8, src: u8, alpha: u32) -> u8 {
    ((u32::from(src) * alpha + u32::from(dst) * (256 - alpha) + 128) >> 8) as u8
}

#[inline]
fn blend_px(px: &mut [u8], color: Color, alpha: u32) {
    if alpha >= 256 {
        px.copy_from_slice(&color);
    } else if alpha > 0 {
        for (d, s) in px.iter_mut().zip(color) {
            *d = mix(*d, s, alpha);
        }
    }
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            rgb: vec![0; width * height * 3],
        }
    }

    fn row_mut(&mut self, y: usize) -> &mut [u8] {
        let stride = self.width * 3;
        &mut self.rgb[y * stride..(y + 1) * stride]
    }

    /// Blends `color` over the rectangle `[x0, x1) x [y0, y1)` (clipped).
    fn fill_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, color: Color, alpha: u32) {
        let x0 = x0.clamp(0, self.width as i64) as usize;
        let x1 = x1.clamp(0, self.width as i64) as usize;
        let y0 = y0.clamp(0, self.height as i64) as usize;
        let y1 = y1.clamp(0, self.height as i64) as usize;
        if x0 >= x1 || alpha == 0 {
            return;
        }
        for y in y0..y1 {
            let row = self.row_mut(y);
            for px in row[x0 * 3..x1 * 3].chunks_exact_mut(3) {
                blend_px(px, color, alpha);
            }
        }
    }

    /// Blends a filled circle (horizontally anti-aliased) over the canvas.
    fn fill_circle(&mut self, cx: f32, cy: f32, r: f32, color: Color, alpha: u32) {
        if r <= 0.0 {
            return;
        }
        let (w, h) = (self.width as f32, self.height as f32);
        let y_start = (cy - r).floor().clamp(0.0, h) as usize;
        let y_end = (cy + r).ceil().clamp(0.0, h) as usize;
        for y in y_start..y_end {
            let dy = y as f32 + 0.5 - cy;
            let d2 = r * r - dy * dy;
            if d2 <= 0.0 {
                continue;
            }
            let half = d2.sqrt();
            let (left, right) = (cx - half, cx + half);
            let x_start = left.floor().clamp(0.0, w) as usize;
            let x_end = right.ceil().clamp(0.0, w) as usize;
            let row = self.row_mut(y);
            for x in x_start..x_end {
                let xf = x as f32;
                let cover = ((xf + 1.0).min(right) - xf.max(left)).clamp(0.0, 1.0);
                let a = if cover >= 1.0 {
                    alpha
                } else {
                    (alpha as f32 * cover) as u32
                };
                blend_px(&mut row[x * 3..x * 3 + 3], color, a);
            }
        }
    }

    /// Draws `text` with the 8x8 font, each font pixel `scale` x `scale` screen pixels.
    fn draw_text(&mut self, x: i64, y: i64, text: &str, scale: u32, color: Color, alpha: u32) {
        let s = i64::from(scale);
        for (i, c) in text.chars().enumerate() {
            let gx = x + i as i64 * 8 * s;
            if gx >= self.width as i64 {
                break;
            }
            let glyph = glyph(c);
            for (row, bits) in glyph.iter().enumerate() {
                if *bits == 0 {
                    continue;
                }
                let py = y + row as i64 * s;
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        let px = gx + col * s;
                        self.fill_rect(px, py, px + s, py + s, color, alpha);
                    }
                }
            }
        }
    }

    /// White text with a dark drop shadow, readable on any background.
    fn draw_text_shadowed(&mut self, x: i64, y: i64, text: &str, scale: u32) {
        let off = i64::from((scale / 2).max(1));
        self.draw_text(x + off, y + off, text, scale, [0, 0, 0], 200);
        self.draw_text(x, y, text, scale, [255, 255, 255], 256);
    }
}

fn glyph(c: char) -> [u8; 8] {
    let cp = c as usize;
    let fallback = BASIC_LEGACY[usize::from(b'?')];
    if cp < 0x20 {
        // Control characters render as blanks.
        [0; 8]
    } else if cp < 0x80 {
        BASIC_LEGACY.get(cp).copied().unwrap_or(fallback)
    } else if (0xA0..=0xFF).contains(&cp) {
        LATIN_LEGACY.get(cp - 0xA0).copied().unwrap_or(fallback)
    } else {
        fallback
    }
}

/// Cuts `text` to at most `max` characters, ending in "..." when shortened.
fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    if max <= 3 {
        return ".".repeat(max);
    }
    let mut s: String = text.chars().take(max - 3).collect();
    s.push_str("...");
    s
}

/// Greedy word wrap to lines of at most `width` characters, at most `max_lines` lines;
/// over-long words are broken and the last line ends in "..." if text was cut.
fn wrap_text(text: &str, width: usize, max_lines: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut current_len = 0usize;
    let mut truncated = false;
    'words: for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let sep = usize::from(current_len > 0);
            if current_len + sep + word.len() <= width {
                if sep == 1 {
                    current.push(' ');
                }
                current.extend(word.iter());
                current_len += sep + word.len();
                continue 'words;
            }
            if current_len == 0 {
                // The word alone is too long: hard-break it.
                let rest = word.split_off(width);
                current.extend(word.iter());
                word = rest;
            }
            lines.push(std::mem::take(&mut current));
            current_len = 0;
            if lines.len() == max_lines {
                truncated = true;
                break 'words;
            }
        }
    }
    if !truncated && current_len > 0 {
        lines.push(current);
    }
    if truncated && let Some(last) = lines.last_mut() {
        let keep = width.saturating_sub(3);
        let mut s: String = last.chars().take(keep).collect();
        s.push_str("...");
        *last = s;
    }
    lines
}

/// I420 frame handed to the encoder.
struct Yuv420 {
    width: usize,
    height: usize,
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
}

impl Yuv420 {
    fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            y: vec![0; width * height],
            u: vec![128; width * height / 4],
            v: vec![128; width * height / 4],
        }
    }

    /// BT.709 limited-range conversion with 2x2 chroma averaging.
    fn convert_from(&mut self, canvas: &Canvas) {
        let w = self.width;
        let cw = w / 2;
        let stride = w * 3;
        // Blocks of 16 pixels: de-interleave first so the arithmetic vectorizes.
        let src = canvas.rgb.chunks_exact(48);
        let src_rest = src.remainder();
        let mut dst = self.y.chunks_exact_mut(16);
        for (px, y) in src.zip(&mut dst) {
            let (mut r, mut g, mut b) = ([0u32; 16], [0u32; 16], [0u32; 16]);
            for i in 0..16 {
                r[i] = u32::from(px[3 * i]);
                g[i] = u32::from(px[3 * i + 1]);
                b[i] = u32::from(px[3 * i + 2]);
            }
            for i in 0..16 {
                y[i] = luma(r[i], g[i], b[i]);
            }
        }
        for (p, y) in src_rest.chunks_exact(3).zip(dst.into_remainder()) {
            *y = luma(u32::from(p[0]), u32::from(p[1]), u32::from(p[2]));
        }
        let rows = canvas.rgb.chunks_exact(stride * 2);
        let us = self.u.chunks_exact_mut(cw);
        let vs = self.v.chunks_exact_mut(cw);
        for ((rgb2, urow), vrow) in rows.zip(us).zip(vs) {
            let (r0, r1) = rgb2.split_at(stride);
            // Blocks of 8 chroma samples (16 pixels of both rows), de-interleaved first.
            let (a_blocks, b_blocks) = (r0.chunks_exact(48), r1.chunks_exact(48));
            let (a_rest, b_rest) = (a_blocks.remainder(), b_blocks.remainder());
            let mut u_blocks = urow.chunks_exact_mut(8);
            let mut v_blocks = vrow.chunks_exact_mut(8);
            for ((a, b), (u, v)) in a_blocks.zip(b_blocks).zip((&mut u_blocks).zip(&mut v_blocks)) {
                let (mut sr, mut sg, mut sb) = ([0i32; 8], [0i32; 8], [0i32; 8]);
                for i in 0..8 {
                    let (rr, gg, bb) = sum_2x2(&a[6 * i..6 * i + 6], &b[6 * i..6 * i + 6]);
                    sr[i] = rr;
                    sg[i] = gg;
                    sb[i] = bb;
                }
                for i in 0..8 {
                    u[i] = chroma(-6596 * sr[i] - 22189 * sg[i] + 28785 * sb[i]);
                    v[i] = chroma(28785 * sr[i] - 26145 * sg[i] - 2640 * sb[i]);
                }
            }
            let rest = a_rest.chunks_exact(6).zip(b_rest.chunks_exact(6));
            let uv_rest = u_blocks.into_remainder().iter_mut();
            for ((pa, pb), (u, v)) in rest.zip(uv_rest.zip(v_blocks.into_remainder().iter_mut())) {
                let (sr, sg, sb) = sum_2x2(pa, pb);
                *u = chroma(-6596 * sr - 22189 * sg + 28785 * sb);
                *v = chroma(28785 * sr - 26145 * sg - 2640 * sb);
            }
        }
    }
}

/// Sums R, G and B over a 2x2 block given as two rows of two RGB pixels.
#[inline]
fn sum_2x2(a: &[u8], b: &[u8]) -> (i32, i32, i32) {
    let s = |i: usize| i32::from(a[i]) + i32::from(a[i + 3]) + i32::from(b[i]) + i32::from(b[i + 3]);
    (s(0), s(1), s(2))
}

#[inline]
fn luma(r: u32, g: u32, b: u32) -> u8 {
    // At most 16 + 219 = 235, so the cast never truncates.
    (16 + ((11966 * r + 40254 * g + 4064 * b + 32768) >> 16)) as u8
}

/// `sum` is a chroma dot product over four pixels, with 16-bit fixed-point weights.
#[inline]
fn chroma(sum: i32) -> u8 {
    (128 + ((sum + (1 << 17)) >> 18)).clamp(16, 240) as u8
}

impl YUVSource for Yuv420 {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn strides(&self) -> (usize, usize, usize) {
        (self.width, self.width / 2, self.width / 2)
    }

    fn y(&self) -> &[u8] {
        &self.y
    }

    fn u(&self) -> &[u8] {
        &self.u
    }

    fn v(&self) -> &[u8] {
        &self.v
    }
}

// ----------------------------------------------------------------------------------
// Scene
// ----------------------------------------------------------------------------------

/// Small deterministic generator (splitmix64) seeded from the prompt hash.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }

    fn sign(&mut self) -> f32 {
        if self.next_u64() & 1 == 0 { 1.0 } else { -1.0 }
    }
}

fn hsv(h: f32, s: f32, v: f32) -> Color {
    let h = h.rem_euclid(360.0) / 60.0;
    let c = v * s;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    let to8 = |f: f32| ((f + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    [to8(r), to8(g), to8(b)]
}

#[derive(Clone, Copy)]
enum ShapeKind {
    Circle,
    Rect,
}

struct Shape {
    kind: ShapeKind,
    color: Color,
    alpha: u32,
    /// Base size as a fraction of the short side.
    size: f32,
    /// Aspect factors of a rectangle.
    aspect: (f32, f32),
    /// Path amplitude as a fraction of width/height.
    amp: (f32, f32),
    /// Angular speed in rad/s.
    speed: (f32, f32),
    phase: (f32, f32),
    pulse_phase: f32,
}

/// The look of one prompt.
struct Look {
    /// Background colours along the gradient direction, one period plus one row's worth.
    gradient: Vec<u8>,
    period: usize,
    /// Scroll speed in gradient periods per second.
    scroll: f32,
    anti_diagonal: bool,
    shapes: Vec<Shape>,
    accent: Color,
    prompt_lines: Vec<String>,
}

impl Look {
    fn new(prompt: &str, width: usize, height: usize, wrap_width: usize, max_lines: usize) -> Self {
        let digest = Sha256::digest(prompt.as_bytes());
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&digest[..8]);
        let mut rng = Rng(u64::from_le_bytes(seed));

        let base_hue = f32::from(digest[8]) / 255.0 * 360.0;
        let stops = [
            hsv(base_hue, rng.range(0.55, 0.9), rng.range(0.35, 0.6)),
            hsv(
                base_hue + rng.range(60.0, 150.0),
                rng.range(0.5, 0.9),
                rng.range(0.45, 0.75),
            ),
            hsv(
                base_hue + rng.range(180.0, 300.0),
                rng.range(0.5, 0.9),
                rng.range(0.3, 0.6),
            ),
        ];
        let period = width + height;
        let mut gradient = Vec::with_capacity((period + width) * 3);
        for i in 0..period + width {
            let pos = (i % period) as f32 / period as f32 * 3.0;
            let k = (pos as usize).min(2);
            let t = pos - k as f32;
            let t = t * t * (3.0 - 2.0 * t);
            let (a, b) = (stops[k], stops[(k + 1) % 3]);
            for ch in 0..3 {
                let v = f32::from(a[ch]) + (f32::from(b[ch]) - f32::from(a[ch])) * t;
                gradient.push(v.round().clamp(0.0, 255.0) as u8);
            }
        }

        let shapes = (0..5)
            .map(|_| Shape {
                kind: if rng.next_u64() & 1 == 0 {
                    ShapeKind::Circle
                } else {
                    ShapeKind::Rect
                },
                color: hsv(
                    base_hue + rng.range(0.0, 360.0),
                    rng.range(0.35, 0.9),
                    rng.range(0.8, 1.0),
                ),
                alpha: rng.range(150.0, 225.0) as u32,
                size: rng.range(0.05, 0.15),
                aspect: (rng.range(0.6, 1.5), rng.range(0.6, 1.5)),
                amp: (rng.range(0.15, 0.4), rng.range(0.15, 0.38)),
                speed: (rng.sign() * rng.range(0.5, 1.6), rng.sign() * rng.range(0.5, 1.6)),
                phase: (
                    rng.range(0.0, std::f32::consts::TAU),
                    rng.range(0.0, std::f32::consts::TAU),
                ),
                pulse_phase: rng.range(0.0, std::f32::consts::TAU),
            })
            .collect();

        Self {
            gradient,
            period,
            scroll: rng.range(0.04, 0.12),
            anti_diagonal: rng.next_u64() & 1 == 1,
            shapes,
            accent: hsv(base_hue + 180.0, 0.7, 1.0),
            prompt_lines: wrap_text(prompt, wrap_width, max_lines),
        }
    }
}

struct SegmentRange {
    end_frame: u32,
    look: Look,
}

/// Everything needed to draw any frame.
struct Scene {
    width: usize,
    height: usize,
    fps: u32,
    total_frames: u32,
    segments: Vec<SegmentRange>,
    reference: Option<Vec<u8>>,
    label: String,
    unit: u32,
    margin: i64,
}

impl Scene {
    fn new(spec: &RenderSpec, total_frames: u32) -> Result<Self, RenderError> {
        let width = spec.width as usize;
        let height = spec.height as usize;
        let unit = (spec.width.min(spec.height) / 240).max(2);
        let margin = i64::from(unit) * 6;
        let wrap_width = ((width as i64 - 2 * margin) / (8 * i64::from(unit))).max(4) as usize;
        let max_lines = if width >= height { 4 } else { 6 };

        let mut segments = Vec::with_capacity(spec.segments.len());
        let mut end_frame = 0u32;
        for seg in &spec.segments {
            let frames = seg.seconds * spec.fps;
            if frames == 0 {
                continue;
            }
            segments.push(SegmentRange {
                end_frame: end_frame + frames,
                look: Look::new(&seg.prompt, width, height, wrap_width, max_lines),
            });
            end_frame += frames;
        }

        let reference = match &spec.reference_image {
            Some(bytes) => Some(prepare_reference(bytes, spec.width, spec.height)?),
            None => None,
        };

        Ok(Self {
            width,
            height,
            fps: spec.fps,
            total_frames,
            segments,
            reference,
            label: spec.label.clone(),
            unit,
            margin,
        })
    }

    fn draw(&self, frame: u32, canvas: &mut Canvas) {
        let Some((index, seg)) = self
            .segments
            .iter()
            .enumerate()
            .find(|(_, s)| frame < s.end_frame)
            .or_else(|| self.segments.iter().enumerate().next_back())
        else {
            return;
        };
        let look = &seg.look;
        let t = frame as f32 / self.fps as f32;
        let (w, h) = (self.width, self.height);

        // Scrolling diagonal gradient: every row is a slice of the precomputed ramp.
        let offset = ((t * look.scroll).fract() * look.period as f32) as usize % look.period;
        for y in 0..h {
            let start = if look.anti_diagonal {
                (offset + look.period - y % look.period) % look.period
            } else {
                (offset + y) % look.period
            };
            let src = &look.gradient[start * 3..(start + w) * 3];
            canvas.row_mut(y).copy_from_slice(src);
        }

        // Moving shapes.
        let short = w.min(h) as f32;
        for s in &look.shapes {
            let cx = w as f32 * (0.5 + s.amp.0 * (s.speed.0 * t + s.phase.0).sin());
            let cy = h as f32 * (0.5 + s.amp.1 * (s.speed.1 * t + s.phase.1).sin());
            let size = short * s.size * (1.0 + 0.2 * (2.0 * t + s.pulse_phase).sin());
            match s.kind {
                ShapeKind::Circle => canvas.fill_circle(cx, cy, size, s.color, s.alpha),
                ShapeKind::Rect => {
                    let (hw, hh) = (size * s.aspect.0, size * s.aspect.1);
                    canvas.fill_rect(
                        (cx - hw) as i64,
                        (cy - hh) as i64,
                        (cx + hw) as i64,
                        (cy + hh) as i64,
                        s.color,
                        s.alpha,
                    );
                }
            }
        }

        // Reference image: the first frame, fading out over the first second.
        if let Some(reference) = &self.reference
            && frame < self.fps
        {
            let alpha = 256 * (self.fps - frame) / self.fps;
            if alpha >= 256 {
                canvas.rgb.copy_from_slice(reference);
            } else {
                for (d, s) in canvas.rgb.iter_mut().zip(reference) {
                    *d = mix(*d, *s, alpha);
                }
            }
        }

        self.draw_overlay(frame, index, look, canvas);
    }

    fn draw_overlay(&self, frame: u32, seg_index: usize, look: &Look, canvas: &mut Canvas) {
        let unit = self.unit;
        let u = i64::from(unit);
        let m = self.margin;
        let w = self.width as i64;
        let h = self.height as i64;
        let big = unit + unit / 2;
        let b = i64::from(big);
        let text_cols = |scale: i64| ((w - 2 * m) / (8 * scale)).max(1) as usize;

        // Header: label, timecode, frame info.
        let info = format!(
            "seg {}/{}  frame {}/{}  {}x{}@{}",
            seg_index + 1,
            self.segments.len(),
            frame + 1,
            self.total_frames,
            self.width,
            self.height,
            self.fps
        );
        let header_h = m + 8 * u + 2 * u + 8 * b + 2 * u + 8 * u + m / 2;
        canvas.fill_rect(0, 0, w, header_h, [0, 0, 0], 80);
        let mut y = m;
        canvas.draw_text_shadowed(m, y, &truncate_chars(&self.label, text_cols(u)), unit);
        y += 8 * u + 2 * u;
        canvas.draw_text_shadowed(m, y, &timecode(frame, self.fps, self.total_frames), big);
        y += 8 * b + 2 * u;
        canvas.draw_text_shadowed(m, y, &truncate_chars(&info, text_cols(u)), unit);

        // Footer: prompt panel and a progress bar.
        let bar_h = 2 * u;
        let line_h = 10 * u;
        let lines = look.prompt_lines.len() as i64;
        if lines > 0 {
            let panel_h = lines * line_h + m;
            let top = h - bar_h - panel_h;
            canvas.fill_rect(0, top, w, h - bar_h, [0, 0, 0], 120);
            for (i, line) in look.prompt_lines.iter().enumerate() {
                canvas.draw_text_shadowed(m, top + m / 2 + i as i64 * line_h + u, line, unit);
            }
        }
        canvas.fill_rect(0, h - bar_h, w, h, [0, 0, 0], 160);
        let filled = w * i64::from(frame + 1) / i64::from(self.total_frames.max(1));
        canvas.fill_rect(0, h - bar_h, filled, h, look.accent, 256);
    }
}

/// `MM:SS.mmm / MM:SS` for the frame's start time and the total length.
fn timecode(frame: u32, fps: u32, total_frames: u32) -> String {
    let ms = u64::from(frame) * 1000 / u64::from(fps);
    let total_s = u64::from(total_frames) / u64::from(fps);
    format!(
        "{:02}:{:02}.{:03} / {:02}:{:02}",
        ms / 60_000,
        (ms / 1000) % 60,
        ms % 1000,
        total_s / 60,
        total_s % 60
    )
}

/// Decodes the reference image and scales it to cover the frame, cropping the overflow.
fn prepare_reference(bytes: &[u8], width: u32, height: u32) -> Result<Vec<u8>, RenderError> {
    let img = image::load_from_memory(bytes)?.to_rgb8();
    let (iw, ih) = img.dimensions();
    if iw == 0 || ih == 0 {
        return Err(invalid("reference image is empty"));
    }
    let scale = f64::max(f64::from(width) / f64::from(iw), f64::from(height) / f64::from(ih));
    let sw = ((f64::from(iw) * scale).ceil() as u32).max(width);
    let sh = ((f64::from(ih) * scale).ceil() as u32).max(height);
    let resized = if (sw, sh) == (iw, ih) {
        img
    } else {
        imageops::resize(&img, sw, sh, FilterType::Triangle)
    };
    let cropped = imageops::crop_imm(&resized, (sw - width) / 2, (sh - height) / 2, width, height).to_image();
    Ok(cropped.into_raw())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::previews::fit_within;
    use image::{ExtendedColorType, ImageEncoder, Rgb, RgbImage};
    use std::cell::Cell;
    use std::fs;
    use std::io::BufReader;

    fn spec(prompt: &str) -> RenderSpec {
        RenderSpec {
            width: 640,
            height: 360,
            fps: 12,
            segments: vec![Segment {
                prompt: prompt.to_string(),
                seconds: 2,
            }],
            reference_image: None,
            label: "video_test123".to_string(),
        }
    }

    /// A one-second variant, to keep the slower (debug-build) tests quick.
    fn short_spec(prompt: &str) -> RenderSpec {
        let mut s = spec(prompt);
        s.segments[0].seconds = 1;
        s
    }

    fn open_mp4(path: &Path) -> mp4::Mp4Reader<BufReader<File>> {
        let file = File::open(path).unwrap();
        let size = file.metadata().unwrap().len();
        mp4::Mp4Reader::read_header(BufReader::new(file), size).unwrap()
    }

    /// Decodes every sample with OpenH264's decoder; returns the first frame as RGB.
    fn decode_all(path: &Path) -> (usize, Vec<u8>) {
        let mut reader = open_mp4(path);
        let track_id = *reader.tracks().keys().next().unwrap();
        let track = reader.tracks().get(&track_id).unwrap();
        let sps = track.sequence_parameter_set().unwrap().to_vec();
        let pps = track.picture_parameter_set().unwrap().to_vec();
        let count = reader.sample_count(track_id).unwrap();
        let mut decoder = openh264::decoder::Decoder::new().unwrap();
        let mut decoded = 0;
        let mut first = Vec::new();
        for id in 1..=count {
            let sample = reader.read_sample(track_id, id).unwrap().unwrap();
            let mut annexb = Vec::new();
            if id == 1 {
                for ps in [&sps, &pps] {
                    annexb.extend_from_slice(&[0, 0, 0, 1]);
                    annexb.extend_from_slice(ps);
                }
            }
            let mut rest = &sample.bytes[..];
            while rest.len() >= 4 {
                let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                annexb.extend_from_slice(&[0, 0, 0, 1]);
                annexb.extend_from_slice(&rest[4..4 + len]);
                rest = &rest[4 + len..];
            }
            assert!(rest.is_empty(), "trailing bytes in sample {id}");
            if let Some(yuv) = decoder.decode(&annexb).unwrap() {
                if decoded == 0 {
                    let (w, h) = yuv.dimensions();
                    first = vec![0; w * h * 3];
                    yuv.write_rgb8(&mut first);
                }
                decoded += 1;
            }
        }
        (decoded, first)
    }

    #[test]
    fn renders_valid_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let out = render(&spec("a red fox in the snow"), dir.path(), &mut |_| {}, &|| false).unwrap();
        assert_eq!(out.frames, 24);
        assert_eq!(out.duration_ms, 2000);

        let video = dir.path().join(VIDEO_FILE_NAME);
        assert_eq!(out.video_bytes, fs::metadata(&video).unwrap().len());
        let reader = open_mp4(&video);
        assert_eq!(reader.tracks().len(), 1);
        let (track_id, track) = reader.tracks().iter().next().unwrap();
        let track_id = *track_id;
        assert_eq!(track.width(), 640);
        assert_eq!(track.height(), 360);
        assert_eq!(track.media_type().unwrap(), mp4::MediaType::H264);
        assert_eq!(reader.sample_count(track_id).unwrap(), 24);
        let ms = reader.duration().as_millis() as i64;
        assert!((ms - 2000).abs() <= 84, "duration {ms} ms");
        assert!((track.frame_rate() - 12.0).abs() < 0.01);
        let mut reader = reader;
        let first = reader.read_sample(track_id, 1).unwrap().unwrap();
        assert!(first.is_sync);

        let (decoded, _) = decode_all(&video);
        assert_eq!(decoded, 24);

        let thumb = image::open(dir.path().join(THUMBNAIL_FILE_NAME)).unwrap();
        assert_eq!((thumb.width(), thumb.height()), (640, 360));
        let sheet = image::open(dir.path().join(SPRITESHEET_FILE_NAME)).unwrap();
        assert_eq!((sheet.width(), sheet.height()), (5 * 256, 2 * 144));

        // Only the three final files remain; no temporary leftovers.
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["spritesheet.jpg", "thumbnail.webp", "video.mp4"]);
    }

    #[test]
    fn different_prompts_give_different_frames() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        render(&short_spec("a red fox in the snow"), a.path(), &mut |_| {}, &|| false).unwrap();
        render(&short_spec("a blue whale at dawn"), b.path(), &mut |_| {}, &|| false).unwrap();
        let ta = image::open(a.path().join(THUMBNAIL_FILE_NAME)).unwrap().to_rgb8();
        let tb = image::open(b.path().join(THUMBNAIL_FILE_NAME)).unwrap().to_rgb8();
        let diff: u64 = ta
            .as_raw()
            .iter()
            .zip(tb.as_raw())
            .map(|(x, y)| u64::from(x.abs_diff(*y)))
            .sum();
        let mean = diff as f64 / ta.as_raw().len() as f64;
        assert!(mean > 10.0, "thumbnails too similar: mean diff {mean}");
    }

    #[test]
    fn frames_change_over_time() {
        let s = spec("a red fox in the snow");
        let scene = Scene::new(&s, 24).unwrap();
        let mut a = Canvas::new(640, 360);
        let mut b = Canvas::new(640, 360);
        scene.draw(0, &mut a);
        scene.draw(23, &mut b);
        assert_ne!(a.rgb, b.rgb);
    }

    #[test]
    fn extension_uses_each_segments_look() {
        let mut s = short_spec("first prompt");
        s.segments.push(Segment {
            prompt: "second prompt, entirely different".to_string(),
            seconds: 1,
        });
        let dir = tempfile::tempdir().unwrap();
        let out = render(&s, dir.path(), &mut |_| {}, &|| false).unwrap();
        assert_eq!(out.frames, 24);
        assert_eq!(out.duration_ms, 2000);
        let reader = open_mp4(&dir.path().join(VIDEO_FILE_NAME));
        let track_id = *reader.tracks().keys().next().unwrap();
        assert_eq!(reader.sample_count(track_id).unwrap(), 24);

        let scene = Scene::new(&s, 24).unwrap();
        assert_eq!(scene.segments.len(), 2);
        assert_ne!(scene.segments[0].look.gradient, scene.segments[1].look.gradient);
    }

    #[test]
    fn reference_image_is_the_first_frame() {
        let mut img = RgbImage::new(100, 50);
        for p in img.pixels_mut() {
            *p = Rgb([250, 20, 20]);
        }
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(img.as_raw(), 100, 50, ExtendedColorType::Rgb8)
            .unwrap();
        let mut s = short_spec("anything");
        s.reference_image = Some(png);
        let dir = tempfile::tempdir().unwrap();
        render(&s, dir.path(), &mut |_| {}, &|| false).unwrap();
        let (decoded, first) = decode_all(&dir.path().join(VIDEO_FILE_NAME));
        assert_eq!(decoded, 12);
        // Sample the middle of the frame (away from the text overlays).
        let i = (180 * 640 + 320) * 3;
        let px = &first[i..i + 3];
        assert!(px[0] > 200 && px[1] < 70 && px[2] < 70, "pixel {px:?}");
    }

    #[test]
    fn bad_reference_image_is_an_image_error() {
        let mut s = spec("anything");
        s.reference_image = Some(b"not an image".to_vec());
        let dir = tempfile::tempdir().unwrap();
        let err = render(&s, dir.path(), &mut |_| {}, &|| false).unwrap_err();
        assert!(matches!(err, RenderError::Image(_)), "{err}");
    }

    #[test]
    fn cancellation_stops_early_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let calls = Cell::new(0u32);
        let cancel = || {
            calls.set(calls.get() + 1);
            calls.get() > 5
        };
        let err = render(&spec("cancel me"), dir.path(), &mut |_| {}, &cancel).unwrap_err();
        assert!(matches!(err, RenderError::Cancelled));
        assert_eq!(calls.get(), 6);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn progress_is_monotonic_and_reaches_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = Vec::new();
        render(&short_spec("progress"), dir.path(), &mut |p| seen.push(p), &|| false).unwrap();
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert_eq!(seen.first(), Some(&0));
        assert_eq!(seen.last(), Some(&99));
        assert!(seen.iter().all(|p| *p <= 99));
        assert!(seen.len() > 10);
    }

    #[test]
    fn invalid_specs_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut odd = spec("x");
        odd.width = 641;
        let mut zero = spec("x");
        zero.segments[0].seconds = 0;
        let mut no_fps = spec("x");
        no_fps.fps = 0;
        let mut huge = spec("x");
        huge.width = 4096;
        for s in [odd, zero, no_fps, huge] {
            let err = render(&s, dir.path(), &mut |_| {}, &|| false).unwrap_err();
            assert!(matches!(err, RenderError::InvalidSpec(_)), "{err}");
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn wraps_and_truncates_text() {
        assert_eq!(wrap_text("a bb ccc dddd", 6, 4), ["a bb", "ccc", "dddd"]);
        assert_eq!(wrap_text("abcdefghij", 4, 4), ["abcd", "efgh", "ij"]);
        let lines = wrap_text("one two three four five six seven", 9, 2);
        assert_eq!(lines, ["one two", "three..."]);
        assert!(wrap_text("", 10, 3).is_empty());
        assert_eq!(truncate_chars("hello world", 8), "hello...");
        assert_eq!(truncate_chars("hi", 8), "hi");
    }

    #[test]
    fn sizes_and_timecodes() {
        assert_eq!(fit_within(1920, 1080, 1280), (1280, 720));
        assert_eq!(fit_within(720, 1280, 1280), (720, 1280));
        assert_eq!(fit_within(1024, 1792, 1280), (731, 1280));
        assert_eq!(timecode(30, 24, 96), "00:01.250 / 00:04");
        assert_eq!(timescale_for(24), (90_000, 3750));
        assert_eq!(timescale_for(7), (7000, 1000));
        assert_eq!(strip_start_code(&[0, 0, 0, 1, 0x67]), &[0x67]);
        assert_eq!(strip_start_code(&[0, 0, 1, 0x68]), &[0x68]);
    }
}
