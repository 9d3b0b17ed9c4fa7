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

// ----------------------------------------------------------------------------------
// The H.264 track
// ----------------------------------------------------------------------------------

/// What is needed from the video track to decode it.
struct H264Track {
    id: u32,
    sample_count: u32,
    /// Size of the NAL unit length prefixes in the samples (1, 2, 3 or 4 bytes).
    length_size: usize,
    /// SPS and PPS NAL units from the `avcC` box, fed to the decoder before the first sample.
    param_sets: Vec<Vec<u8>>,
    color: ColorSpace,
    /// The media duration: from the track header (`mdhd`), or else the sum of the
    /// sample durations (`stts`).
    duration_ms: u64,
}

impl H264Track {
    fn find<R: io::Read + io::Seek>(reader: &Mp4Reader<R>) -> Result<Self, PreviewError> {
        let (track, avc1) = reader
            .tracks()
            .values()
            .filter(|t| t.track_type().is_ok_and(|tt| tt == TrackType::Video))
            .filter_map(|t| Some((t, t.trak.mdia.minf.stbl.stsd.avc1.as_ref()?)))
            .min_by_key(|(t, _)| t.track_id())
            .ok_or(PreviewError::NoH264Track)?;
        // The mp4 crate reads every sample of a fragmented track from the same offset.
        if !track.trafs.is_empty() {
            return Err(PreviewError::Unsupported(
                "fragmented MP4 (moof boxes); remux it with +faststart instead".to_string(),
            ));
        }
        let avcc = &avc1.avcc;
        let sps_info = avcc
            .sequence_parameter_sets
            .first()
            .and_then(|sps| parse_sps(&sps.bytes));
        if let Some(info) = &sps_info
            && (info.chroma_format_idc != 1 || info.bit_depth_luma != 8 || info.bit_depth_chroma != 8)
        {
            return Err(PreviewError::Unsupported(format!(
                "chroma format {} with {}-bit luma and {}-bit chroma (only 8-bit 4:2:0 decodes)",
                info.chroma_format_idc, info.bit_depth_luma, info.bit_depth_chroma
            )));
        }
        let param_sets = avcc
            .sequence_parameter_sets
            .iter()
            .chain(&avcc.picture_parameter_sets)
            .map(|nal| nal.bytes.clone())
            .filter(|nal| !nal.is_empty())
            .collect();
        let timescale = track.trak.mdia.mdhd.timescale;
        let mut duration = track.trak.mdia.mdhd.duration;
        // All ones means "unknown".
        if duration == 0 || duration == u64::from(u32::MAX) || duration == u64::MAX {
            duration = (track.trak.mdia.minf.stbl.stts.entries.iter())
                .map(|e| u64::from(e.sample_count) * u64::from(e.sample_delta))
                .fold(0u64, u64::saturating_add);
        }
        Ok(Self {
            id: track.track_id(),
            sample_count: track.sample_count(),
            length_size: usize::from(avcc.length_size_minus_one & 3) + 1,
            param_sets,
            color: ColorSpace::from_sps(sps_info.as_ref(), avc1.width, avc1.height),
            duration_ms: ticks_to_ms(duration, timescale),
        })
    }
}

/// Size of sample `id` from the sample table, when the track is not fragmented.
fn sample_size(track: &Mp4Track, id: u32) -> Option<u32> {
    if !track.trafs.is_empty() {
        return None;
    }
    let stsz = &track.trak.mdia.minf.stbl.stsz;
    if stsz.sample_size > 0 {
        return Some(stsz.sample_size);
    }
    stsz.sample_sizes
        .get(usize::try_from(id).ok()?.checked_sub(1)?)
        .copied()
}

/// Appends the length-prefixed NAL units of an MP4 sample to `out` in Annex B form
/// (each behind a `00 00 00 01` start code). Returns false if a length runs past the end.
fn to_annex_b(sample: &[u8], length_size: usize, out: &mut Vec<u8>) -> bool {
    let mut rest = sample;
    while !rest.is_empty() {
        let Some((prefix, tail)) = rest.split_at_checked(length_size) else {
            return false;
        };
        let len = prefix.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        let Some((nal, tail)) = tail.split_at_checked(len) else {
            return false;
        };
        if !nal.is_empty() {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(nal);
        }
        rest = tail;
    }
    true
}

// ----------------------------------------------------------------------------------
// Choosing frames
// ----------------------------------------------------------------------------------

/// Index of the frame shown in the thumbnail: the middle one.
pub(crate) fn thumbnail_frame(total_frames: u32) -> u32 {
    total_frames / 2
}

/// Index of the frame shown in each sprite sheet tile, row-major: the middles of
/// `columns × rows` equal stretches of the video.
pub(crate) fn sprite_frames(total_frames: u32) -> Vec<u32> {
    let tiles = SPRITESHEET_COLUMNS * SPRITESHEET_ROWS;
    (0..tiles)
        .map(|i| {
            let f = (u64::from(2 * i + 1) * u64::from(total_frames)) / u64::from(2 * tiles);
            (f as u32).min(total_frames.saturating_sub(1))
        })
        .collect()
}

/// Watches the decoded frames go by (in presentation order) and keeps the ones the
/// previews need, converted to RGB.
///
/// The decoder gives no timestamps back, so a frame's position is estimated as the
/// number of frames decoded before it plus the number of samples that failed so far:
/// exact for an undamaged stream, and close to the truth after a damaged stretch. A
/// wanted position that falls into a damaged stretch gets the nearer of the decoded
/// frames around it.
struct FramePicker {
    color: ColorSpace,
    thumb_frame: u32,
    tile_frames: Vec<u32>,
    /// Positions still waiting for a frame, ascending.
    wanted: Vec<u32>,
    /// Size of the first decoded frame: the size of the video.
    size: Option<(u32, u32)>,
    thumbnail: Option<(u32, u32, Vec<u8>)>,
    sprite: Option<SpriteSheet>,
    current: YuvFrame,
    /// The previously decoded frame and its estimated position.
    previous: YuvFrame,
    previous_pos: Option<u32>,
    decoded: u32,
}

/// The previews' frames, once every wanted position was served.
struct Picked {
    width: u32,
    height: u32,
    thumbnail: (u32, u32, Vec<u8>),
    sprite: SpriteSheet,
}

impl FramePicker {
    fn new(total_frames: u32, color: ColorSpace) -> Self {
        let thumb_frame = thumbnail_frame(total_frames);
        let tile_frames = sprite_frames(total_frames);
        let mut wanted = tile_frames.clone();
        wanted.push(thumb_frame);
        wanted.sort_unstable();
        wanted.dedup();
        Self {
            color,
            thumb_frame,
            tile_frames,
            wanted,
            size: None,
            thumbnail: None,
            sprite: None,
            current: YuvFrame::default(),
            previous: YuvFrame::default(),
            previous_pos: None,
            decoded: 0,
        }
    }

    /// Whether every wanted frame has been served.
    fn is_done(&self) -> bool {
        self.wanted.is_empty()
    }

    /// Takes the next decoded frame; `failed` is the number of samples lost so far.
    fn push(&mut self, yuv: &DecodedYUV<'_>, failed: u32) -> Result<(), PreviewError> {
        let pos = self.decoded.saturating_add(failed);
        self.decoded += 1;
        if self.wanted.is_empty() {
            return Ok(());
        }
        self.current.copy_from(yuv);
        if self.size.is_none() {
            let (w, h) = (self.current.width as u32, self.current.height as u32);
            self.size = Some((w, h));
            self.sprite = Some(SpriteSheet::new(w, h, self.tile_frames.clone()));
        }
        let due = self.wanted.partition_point(|t| *t <= pos);
        let due: Vec<u32> = self.wanted.drain(..due).collect();
        for target in due {
            let use_previous = self.previous_pos.is_some_and(|p| target - p < pos - target);
            let frame = if use_previous { &self.previous } else { &self.current };
            let rgb = frame.to_rgb(&self.color)?;
            let (w, h) = (frame.width as u32, frame.height as u32);
            self.deliver(target, w, h, rgb)?;
        }
        std::mem::swap(&mut self.current, &mut self.previous);
        self.previous_pos = Some(pos);
        Ok(())
    }

    fn deliver(&mut self, target: u32, w: u32, h: u32, rgb: Vec<u8>) -> Result<(), PreviewError> {
        if let Some(sprite) = self.sprite.as_mut() {
            sprite.capture(target, w, h, &rgb)?;
        }
        if target == self.thumb_frame {
            self.thumbnail = Some((w, h, rgb));
        }
        Ok(())
    }

    /// Serves the positions past the last decoded frame with that frame; `None` if no
    /// frame was decoded at all.
    fn finish(mut self) -> Result<Option<Picked>, PreviewError> {
        if self.previous_pos.is_none() {
            return Ok(None);
        }
        for target in std::mem::take(&mut self.wanted) {
            let rgb = self.previous.to_rgb(&self.color)?;
            let (w, h) = (self.previous.width as u32, self.previous.height as u32);
            self.deliver(target, w, h, rgb)?;
        }
        Ok(match (self.size, self.thumbnail, self.sprite) {
            (Some((width, height)), Some(thumbnail), Some(sprite)) => Some(Picked {
                width,
                height,
                thumbnail,
                sprite,
            }),
            _ => None,
        })
    }
}

// ----------------------------------------------------------------------------------
// YUV -> RGB
// ----------------------------------------------------------------------------------

/// An owned copy of a decoded 8-bit 4:2:0 picture.
#[derive(Default)]
struct YuvFrame {
    width: usize,
    height: usize,
    y_stride: usize,
    u_stride: usize,
    v_stride: usize,
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
}

impl YuvFrame {
    fn copy_from(&mut self, yuv: &DecodedYUV<'_>) {
        (self.width, self.height) = yuv.dimensions();
        (self.y_stride, self.u_stride, self.v_stride) = yuv.strides();
        for (dst, src) in [(&mut self.y, yuv.y()), (&mut self.u, yuv.u()), (&mut self.v, yuv.v())] {
            dst.clear();
            dst.extend_from_slice(src);
        }
    }

    fn to_rgb(&self, color: &ColorSpace) -> Result<Vec<u8>, PreviewError> {
        let (w, h) = (self.width, self.height);
        let bad = || PreviewError::Decode("decoded picture planes are too small".to_string());
        if w == 0 || h == 0 {
            return Err(PreviewError::Decode("decoded an empty picture".to_string()));
        }
        let mut rgb = vec![0u8; w * h * 3];
        let chroma_w = w.div_ceil(2);
        for (row, out) in rgb.chunks_exact_mut(w * 3).enumerate() {
            let ys = plane_row(&self.y, self.y_stride, row, w).ok_or_else(bad)?;
            let us = plane_row(&self.u, self.u_stride, row / 2, chroma_w).ok_or_else(bad)?;
            let vs = plane_row(&self.v, self.v_stride, row / 2, chroma_w).ok_or_else(bad)?;
            for (x, (px, y)) in out.chunks_exact_mut(3).zip(ys).enumerate() {
                let (u, v) = (us[x / 2], vs[x / 2]);
                px.copy_from_slice(&color.pixel(*y, u, v));
            }
        }
        Ok(rgb)
    }
}

/// Row `row` of a plane: `len` bytes at `row * stride`.
fn plane_row(plane: &[u8], stride: usize, row: usize, len: usize) -> Option<&[u8]> {
    plane.get(row.checked_mul(stride)?..)?.get(..len)
}

/// YUV -> RGB conversion for one colour matrix and range, in 16.16 fixed point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ColorSpace {
    y_offset: i32,
    y_mul: i32,
    r_v: i32,
    g_u: i32,
    g_v: i32,
    b_u: i32,
}

impl ColorSpace {
    /// `kr`, `kb`: the matrix's luma weights of red and blue.
    fn new(kr: f64, kb: f64, full_range: bool) -> Self {
        let kg = 1.0 - kr - kb;
        let (y_offset, y_scale, c_scale) = if full_range {
            (0, 1.0, 1.0)
        } else {
            (16, 255.0 / 219.0, 255.0 / 224.0)
        };
        let fixed = |v: f64| (v * 65536.0).round() as i32;
        Self {
            y_offset,
            y_mul: fixed(y_scale),
            r_v: fixed(2.0 * (1.0 - kr) * c_scale),
            g_u: fixed(2.0 * kb * (1.0 - kb) / kg * c_scale),
            g_v: fixed(2.0 * kr * (1.0 - kr) / kg * c_scale),
            b_u: fixed(2.0 * (1.0 - kb) * c_scale),
        }
    }

    /// From the SPS's VUI colour description; when it names no matrix, BT.709 for HD
    /// sizes and BT.601 below (what players do).
    fn from_sps(sps: Option<&SpsInfo>, width: u16, height: u16) -> Self {
        let full_range = sps.is_some_and(|s| s.full_range);
        match sps.map_or(2, |s| s.matrix_coefficients) {
            1 => Self::new(0.2126, 0.0722, full_range),
            5 | 6 => Self::new(0.299, 0.114, full_range),
            9 | 10 => Self::new(0.2627, 0.0593, full_range),
            _ if width >= 1280 || height >= 720 => Self::new(0.2126, 0.0722, full_range),
            _ => Self::new(0.299, 0.114, full_range),
        }
    }

    #[inline]
    fn pixel(self, y: u8, u: u8, v: u8) -> [u8; 3] {
        let y = (i32::from(y) - self.y_offset) * self.y_mul + (1 << 15);
        let (u, v) = (i32::from(u) - 128, i32::from(v) - 128);
        let clamp = |x: i32| (x >> 16).clamp(0, 255) as u8;
        [
            clamp(y + self.r_v * v),
            clamp(y - self.g_u * u - self.g_v * v),
            clamp(y + self.b_u * u),
        ]
    }
}

/// The parts of a sequence parameter set that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SpsInfo {
    chroma_format_idc: u32,
    bit_depth_luma: u32,
    bit_depth_chroma: u32,
    /// VUI `matrix_coefficients` (2 = unspecified).
    matrix_coefficients: u32,
    full_range: bool,
}

/// Parses an SPS NAL unit (header byte included) as far as the VUI colour description.
/// `None` if even the format fields cannot be read; a damaged VUI leaves the defaults.
fn parse_sps(nal: &[u8]) -> Option<SpsInfo> {
    let rbsp = unescape_rbsp(nal.get(1..)?);
    let mut r = BitReader::new(&rbsp);
    let profile_idc = r.bits(8)?;
    r.bits(16)?; // constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    let mut info = SpsInfo {
        chroma_format_idc: 1,
        bit_depth_luma: 8,
        bit_depth_chroma: 8,
        matrix_coefficients: 2,
        full_range: false,
    };
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        info.chroma_format_idc = r.ue()?;
        if info.chroma_format_idc == 3 {
            r.bit()?; // separate_colour_plane_flag
        }
        info.bit_depth_luma = r.ue()?.checked_add(8)?;
        info.bit_depth_chroma = r.ue()?.checked_add(8)?;
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            let lists = if info.chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    // The colour description is optional: keep the format fields even if it is damaged.
    let _ = parse_sps_tail(&mut r, &mut info);
    Some(info)
}

/// The rest of the SPS after the format fields, up to the VUI colour description.
fn parse_sps_tail(r: &mut BitReader<'_>, info: &mut SpsInfo) -> Option<()> {
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bit()?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let cycle = r.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    r.ue()?; // pic_width_in_mbs_minus1
    r.ue()?; // pic_height_in_map_units_minus1
    if r.bit()? == 0 {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    if r.bit()? == 1 {
        for _ in 0..4 {
            r.ue()?; // frame crop offsets
        }
    }
    if r.bit()? == 0 {
        return Some(()); // no VUI
    }
    if r.bit()? == 1 && r.bits(8)? == 255 {
        r.bits(32)?; // sar_width, sar_height
    }
    if r.bit()? == 1 {
        r.bit()?; // overscan_appropriate_flag
    }
    if r.bit()? == 1 {
        r.bits(3)?; // video_format
        info.full_range = r.bit()? == 1;
        if r.bit()? == 1 {
            r.bits(16)?; // colour_primaries, transfer_characteristics
            info.matrix_coefficients = r.bits(8)?;
        }
    }
    Some(())
}

fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i32, 8i32);
    for _ in 0..size {
        if next != 0 {
            next = (last + r.se()? + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// Removes the emulation prevention bytes (`00 00 03` -> `00 00`).
fn unescape_rbsp(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut zeros = 0;
    for &b in data {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Reads an RBSP bit by bit, MSB first.
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(bit))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some((acc << 1) | self.bit()?))
    }

    /// Unsigned Exp-Golomb.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        ((1u64 << zeros) - 1 + u64::from(rest)).try_into().ok()
    }

    /// Signed Exp-Golomb.
    fn se(&mut self) -> Option<i32> {
        let k = i64::from(self.ue()?);
        let v = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        i32::try_from(v).ok()
    }
}

// ----------------------------------------------------------------------------------
// Writing the previews (shared with the local renderer)
// ----------------------------------------------------------------------------------

/// Writes the thumbnail for an RGB24 frame of `width`×`height` into `path`: scaled
/// down (keeping aspect) so its long side is at most [`THUMBNAIL_MAX_SIDE`], lossless
/// WebP, synced to disk.
pub(crate) fn write_thumbnail(path: &Path, width: u32, height: u32, rgb: Vec<u8>) -> Result<(), PreviewError> {
    let img = RgbImage::from_raw(width, height, rgb).ok_or_else(dimension_mismatch)?;
    let (tw, th) = fit_within(width, height, THUMBNAIL_MAX_SIDE);
    let img = if (tw, th) == (width, height) {
        img
    } else {
        imageops::resize(&img, tw, th, FilterType::Triangle)
    };
    write_image_file(path, |out| {
        WebPEncoder::new_lossless(out).write_image(img.as_raw(), img.width(), img.height(), ExtendedColorType::Rgb8)
    })
}

/// An RGB buffer whose length does not match the frame size it came with.
fn dimension_mismatch() -> PreviewError {
    PreviewError::Image(image::ImageError::Parameter(image::error::ParameterError::from_kind(
        image::error::ParameterErrorKind::DimensionMismatch,
    )))
}

/// Creates `path`, lets `encode` write an image into it, and syncs it to disk.
fn write_image_file(
    path: &Path,
    encode: impl FnOnce(&mut BufWriter<File>) -> image::ImageResult<()>,
) -> Result<(), PreviewError> {
    let mut out = BufWriter::new(File::create(path)?);
    encode(&mut out)?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

/// Size scaled down (keeping aspect ratio) so the long side is at most `max_side`.
pub(crate) fn fit_within(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let long = width.max(height);
    if long <= max_side {
        return (width, height);
    }
    let scale = |v: u32| ((u64::from(v) * u64::from(max_side) + u64::from(long) / 2) / u64::from(long)).max(1) as u32;
    (scale(width), scale(height))
}

/// Collects evenly spaced frames into a grid of tiles.
pub(crate) struct SpriteSheet {
    sheet: RgbImage,
    tile_width: u32,
    tile_height: u32,
    /// Frame index shown in each tile, row-major.
    tile_frames: Vec<u32>,
}

impl SpriteSheet {
    /// A sheet for a `width`×`height` video showing `tile_frames` (see [`sprite_frames`]).
    pub(crate) fn new(width: u32, height: u32, tile_frames: Vec<u32>) -> Self {
        let tile_width = SPRITESHEET_TILE_WIDTH;
        let tile_height = ((u64::from(height) * u64::from(tile_width) + u64::from(width) / 2) / u64::from(width.max(1)))
            .max(1) as u32;
        Self {
            sheet: RgbImage::new(tile_width * SPRITESHEET_COLUMNS, tile_height * SPRITESHEET_ROWS),
            tile_width,
            tile_height,
            tile_frames,
        }
    }

    /// Whether frame `frame` appears on the sheet.
    pub(crate) fn wants(&self, frame: u32) -> bool {
        self.tile_frames.contains(&frame)
    }

    /// Places the RGB24 frame `frame` (`width`×`height`) into every tile that shows it.
    pub(crate) fn capture(&mut self, frame: u32, width: u32, height: u32, rgb: &[u8]) -> Result<(), PreviewError> {
        if !self.wants(frame) {
            return Ok(());
        }
        let view: ImageBuffer<Rgb<u8>, &[u8]> =
            ImageBuffer::from_raw(width, height, rgb).ok_or_else(dimension_mismatch)?;
        let tile = imageops::resize(&view, self.tile_width, self.tile_height, FilterType::Triangle);
        for (i, _) in self.tile_frames.iter().enumerate().filter(|(_, f)| **f == frame) {
            let i = i as u32;
            let x = (i % SPRITESHEET_COLUMNS) * self.tile_width;
            let y = (i / SPRITESHEET_COLUMNS) * self.tile_height;
            imageops::replace(&mut self.sheet, &tile, i64::from(x), i64::from(y));
        }
        Ok(())
    }

    /// Writes the sheet into `path` as a JPEG, synced to disk.
    pub(crate) fn write(&self, path: &Path) -> Result<(), PreviewError> {
        write_image_file(path, |out| {
            JpegEncoder::new_with_quality(out, SPRITESHEET_JPEG_QUALITY).write_image(
                self.sheet.as_raw(),
                self.sheet.width(),
                self.sheet.height(),
                ExtendedColorType::Rgb8,
            )
        })
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A file written under a temporary name and renamed into place by [`TempFile::commit`];
/// removed on drop if never committed.
pub(crate) struct TempFile {
    /// Where to write the content.
    pub(crate) tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl TempFile {
    /// A temporary name in `dir` for the final file `dir/name`.
    pub(crate) fn new(dir: &Path, name: &str) -> Self {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.partial", std::process::id()));
        Self {
            tmp,
            dest: dir.join(name),
            committed: false,
        }
    }

    /// Renames the file into place and returns its size.
    pub(crate) fn commit(mut self) -> io::Result<u64> {
        let len = fs::metadata(&self.tmp)?.len();
        fs::rename(&self.tmp, &self.dest)?;
        self.committed = true;
        Ok(len)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::local::render::{RenderSpec, Segment, VIDEO_FILE_NAME, render};
    use std::process::Command;

    const FFMPEG: &str = "/usr/bin/ffmpeg";

    /// Renders a 640x360, 12 fps clip with the local renderer into `dir`.
    fn render_clip(dir: &Path, seconds: u32) -> PathBuf {
        let spec = RenderSpec {
            width: 640,
            height: 360,
            fps: 12,
            segments: vec![Segment {
                prompt: "a red fox in the snow".to_string(),
                seconds,
            }],
            reference_image: None,
            label: "video_previews".to_string(),
        };
        render(&spec, dir, &mut |_| {}, &|| false).unwrap();
        dir.join(VIDEO_FILE_NAME)
    }

    fn open_rgb(path: &Path) -> RgbImage {
        image::open(path).unwrap().to_rgb8()
    }

    /// Mean absolute difference per channel of two images of the same size.
    fn mean_diff(a: &RgbImage, b: &RgbImage) -> f64 {
        assert_eq!(a.dimensions(), b.dimensions());
        let sum: u64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| u64::from(x.abs_diff(*y)))
            .sum();
        sum as f64 / a.as_raw().len() as f64
    }

    fn file_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn ffmpeg(args: &[&str]) -> bool {
        Command::new(FFMPEG)
            .args(["-v", "error", "-y"])
            .args(args)
            .status()
            .unwrap()
            .success()
    }

    #[test]
    fn derives_previews_from_a_rendered_clip() {
        let src = tempfile::tempdir().unwrap();
        let video = render_clip(src.path(), 2);
        let out = tempfile::tempdir().unwrap();
        let previews = derive_previews(&video, out.path()).unwrap();
        assert_eq!(
            previews,
            Previews {
                width: 640,
                height: 360,
                duration_ms: 2000,
                frames: 24
            }
        );
        assert_eq!(file_names(out.path()), [SPRITESHEET_FILE_NAME, THUMBNAIL_FILE_NAME]);

        let thumb = open_rgb(&out.path().join(THUMBNAIL_FILE_NAME));
        assert_eq!(thumb.dimensions(), (640, 360));
        let sheet = open_rgb(&out.path().join(SPRITESHEET_FILE_NAME));
        assert_eq!(sheet.dimensions(), (5 * 256, 2 * 144));

        // The decoded frames match the ones the renderer drew (the BT.709 matrix of its
        // VUI is honoured; what remains is H.264 and JPEG loss).
        let rendered_thumb = open_rgb(&src.path().join(THUMBNAIL_FILE_NAME));
        let d = mean_diff(&thumb, &rendered_thumb);
        assert!(d < 3.0, "thumbnail differs from the rendered one by {d}");
        let rendered_sheet = open_rgb(&src.path().join(SPRITESHEET_FILE_NAME));
        let d = mean_diff(&sheet, &rendered_sheet);
        assert!(d < 4.0, "sprite sheet differs from the rendered one by {d}");
    }

    #[test]
    fn derives_previews_from_x264_clips_with_b_frames() {
        if !Path::new(FFMPEG).exists() {
            eprintln!("SKIPPED derives_previews_from_x264_clips_with_b_frames: {FFMPEG} not found");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // ultrafast gives Main profile (CAVLC); superfast gives High (CABAC, 8x8 transform).
        for preset in ["ultrafast", "superfast"] {
            let video = dir.path().join(format!("{preset}.mp4"));
            let video_arg = video.to_str().unwrap();
            assert!(ffmpeg(&[
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=640x360:rate=24",
                "-t",
                "2",
                "-pix_fmt",
                "yuv420p",
                "-c:v",
                "libx264",
                "-preset",
                preset,
                "-bf",
                "2",
                "-profile:v",
                "high",
                "-movflags",
                "+faststart",
                video_arg,
            ]));
            let out = dir.path().join(format!("{preset}-previews"));
            fs::create_dir(&out).unwrap();
            let previews = derive_previews(&video, &out).unwrap();
            assert_eq!(
                previews,
                Previews {
                    width: 640,
                    height: 360,
                    duration_ms: 2000,
                    frames: 48
                },
                "{preset}"
            );
            let thumb = open_rgb(&out.join(THUMBNAIL_FILE_NAME));
            assert_eq!(thumb.dimensions(), (640, 360));
            let mut colours: Vec<[u8; 3]> = thumb.pixels().map(|p| p.0).collect();
            colours.sort_unstable();
            colours.dedup();
            assert!(colours.len() > 1000, "{preset}: only {} colours", colours.len());
            let sheet = open_rgb(&out.join(SPRITESHEET_FILE_NAME));
            assert_eq!(sheet.dimensions(), (5 * 256, 2 * 144));

            // The thumbnail is frame 24 in presentation order, as ffmpeg decodes it —
            // not its neighbours (the B-frames were put back in order).
            let frames = out.join("f%d.png");
            assert!(ffmpeg(&[
                "-i",
                video_arg,
                "-vf",
                "select=between(n\\,23\\,25)",
                "-vsync",
                "0",
                frames.to_str().unwrap(),
            ]));
            let diffs: Vec<f64> = (1..=3)
                .map(|i| mean_diff(&thumb, &open_rgb(&out.join(format!("f{i}.png")))))
                .collect();
            assert!(diffs[1] < 1.5, "{preset}: {diffs:?}");
            assert!(
                diffs[0] > 2.0 * diffs[1] && diffs[2] > 2.0 * diffs[1],
                "{preset}: {diffs:?}"
            );
        }

        // Fragmented MP4s are refused (the mp4 crate cannot locate their samples).
        let fragmented = dir.path().join("fragmented.mp4");
        assert!(ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x180:rate=24",
            "-t",
            "1",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-movflags",
            "frag_keyframe+empty_moov",
            fragmented.to_str().unwrap(),
        ]));
        let err = derive_previews(&fragmented, dir.path()).unwrap_err();
        assert!(matches!(err, PreviewError::Unsupported(_)), "{err}");

        // 10-bit H.264 is refused up front, if this libx264 can make it.
        let deep = dir.path().join("10bit.mp4");
        if ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x180:rate=24",
            "-t",
            "1",
            "-pix_fmt",
            "yuv420p10le",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            deep.to_str().unwrap(),
        ]) {
            let err = derive_previews(&deep, dir.path()).unwrap_err();
            assert!(matches!(err, PreviewError::Unsupported(_)), "{err}");
        } else {
            eprintln!("note: this libx264 cannot encode 10-bit; that check was skipped");
        }
    }

    #[test]
    fn rejects_files_that_are_not_h264_mp4s() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.mp4");
        let bytes: Vec<u8> = (0..50_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        fs::write(&garbage, &bytes).unwrap();
        let err = derive_previews(&garbage, dir.path()).unwrap_err();
        assert!(matches!(err, PreviewError::NotMp4(_)), "{err}");

        let empty = dir.path().join("empty.mp4");
        fs::write(&empty, b"").unwrap();
        let err = derive_previews(&empty, dir.path()).unwrap_err();
        assert!(matches!(err, PreviewError::NotMp4(_)), "{err}");

        let err = derive_previews(&dir.path().join("missing.mp4"), dir.path()).unwrap_err();
        assert!(matches!(err, PreviewError::Io(_)), "{err}");

        // Nothing was left behind.
        assert_eq!(file_names(dir.path()), ["empty.mp4", "garbage.mp4"]);
    }

    #[test]
    fn undecodable_frames_are_replaced_by_the_nearest_decoded_ones() {
        // 4 s at 12 fps: IDR frames at 0 and 24 (the renderer's intra period is 2 s).
        let src = tempfile::tempdir().unwrap();
        let video = render_clip(src.path(), 4);
        let intact = tempfile::tempdir().unwrap();
        derive_previews(&video, intact.path()).unwrap();

        // Damage the first IDR's slice data: OpenH264 still returns a (garbled) picture
        // for it, but every P-frame of the first GOP then fails to decode.
        let file = File::open(&video).unwrap();
        let size = file.metadata().unwrap().len();
        let mut reader = Mp4Reader::read_header(BufReader::new(file), size).unwrap();
        let first = reader.read_sample(1, 1).unwrap().unwrap().bytes;
        let mut bytes = fs::read(&video).unwrap();
        let at = bytes.windows(first.len()).position(|w| w == &first[..]).unwrap();
        for b in &mut bytes[at + 8..at + first.len()] {
            *b = 0xff;
        }
        let damaged = src.path().join("damaged.mp4");
        fs::write(&damaged, &bytes).unwrap();

        let out = tempfile::tempdir().unwrap();
        let previews = derive_previews(&damaged, out.path()).unwrap();
        assert_eq!(previews.frames, 48);
        assert_eq!((previews.width, previews.height), (640, 360));
        // The thumbnail shows frame 24, the second IDR, which decodes exactly as before.
        let thumb = open_rgb(&out.path().join(THUMBNAIL_FILE_NAME));
        let intact_thumb = open_rgb(&intact.path().join(THUMBNAIL_FILE_NAME));
        assert_eq!(thumb.as_raw(), intact_thumb.as_raw());
        // The second half of the sheet is unaffected.
        let sheet = open_rgb(&out.path().join(SPRITESHEET_FILE_NAME));
        let intact_sheet = open_rgb(&intact.path().join(SPRITESHEET_FILE_NAME));
        let bottom = |img: &RgbImage| imageops::crop_imm(img, 0, 144, 1280, 144).to_image();
        assert!(mean_diff(&bottom(&sheet), &bottom(&intact_sheet)) < 0.5);

        // A video none of whose frames decode is an error: blank out every sample.
        let mut broken = fs::read(&video).unwrap();
        let mut from = 0;
        for id in 1..=48 {
            let sample = reader.read_sample(1, id).unwrap().unwrap().bytes;
            let at = from
                + broken[from..]
                    .windows(sample.len())
                    .position(|w| w == &sample[..])
                    .unwrap();
            broken[at..at + sample.len()].fill(0);
            from = at + sample.len();
        }
        let broken_path = src.path().join("broken.mp4");
        fs::write(&broken_path, &broken).unwrap();
        let err = derive_previews(&broken_path, out.path()).unwrap_err();
        assert!(matches!(err, PreviewError::Decode(_)), "{err}");
    }

    #[test]
    fn parses_the_colour_description_of_an_sps() {
        let dir = tempfile::tempdir().unwrap();
        let video = render_clip(dir.path(), 1);
        let file = File::open(&video).unwrap();
        let size = file.metadata().unwrap().len();
        let reader = Mp4Reader::read_header(BufReader::new(file), size).unwrap();
        let sps = reader.tracks()[&1].sequence_parameter_set().unwrap();
        let info = parse_sps(sps).unwrap();
        assert_eq!(
            info,
            SpsInfo {
                chroma_format_idc: 1,
                bit_depth_luma: 8,
                bit_depth_chroma: 8,
                matrix_coefficients: 1,
                full_range: false
            }
        );
        assert_eq!(parse_sps(&[0x67]), None);
        assert_eq!(unescape_rbsp(&[0, 0, 3, 1, 0, 0, 3]), [0, 0, 1, 0, 0]);
    }

    #[test]
    fn converts_yuv_to_rgb() {
        let bt601 = ColorSpace::new(0.299, 0.114, false);
        assert_eq!(bt601.pixel(16, 128, 128), [0, 0, 0]);
        assert_eq!(bt601.pixel(235, 128, 128), [255, 255, 255]);
        let full = ColorSpace::new(0.299, 0.114, true);
        assert_eq!(full.pixel(255, 128, 128), [255, 255, 255]);
        assert_eq!(full.pixel(0, 128, 128), [0, 0, 0]);
        // BT.709 limited-range red.
        let [r, g, b] = ColorSpace::new(0.2126, 0.0722, false).pixel(63, 102, 240);
        assert!(r >= 253 && g <= 2 && b <= 2, "{r} {g} {b}");
        // Unspecified matrix: BT.709 for HD, BT.601 below.
        assert_eq!(
            ColorSpace::from_sps(None, 1280, 720),
            ColorSpace::new(0.2126, 0.0722, false)
        );
        assert_eq!(ColorSpace::from_sps(None, 640, 360), bt601);
    }

    #[test]
    fn converts_length_prefixed_nal_units_to_annex_b() {
        let mut out = Vec::new();
        assert!(to_annex_b(&[0, 0, 0, 2, 0x65, 1, 0, 0, 0, 1, 0x06], 4, &mut out));
        assert_eq!(out, [0, 0, 0, 1, 0x65, 1, 0, 0, 0, 1, 0x06]);
        out.clear();
        assert!(to_annex_b(&[0, 1, 0x41], 2, &mut out));
        assert_eq!(out, [0, 0, 0, 1, 0x41]);
        assert!(!to_annex_b(&[0, 0, 0, 9, 0x65], 4, &mut out));
        assert!(!to_annex_b(&[0, 0], 4, &mut out));
    }

    #[test]
    fn picks_the_same_frames_as_the_renderer() {
        assert_eq!(thumbnail_frame(24), 12);
        assert_eq!(sprite_frames(24), [1, 3, 6, 8, 10, 13, 15, 18, 20, 22]);
        assert_eq!(sprite_frames(1), [0; 10]);
        assert_eq!(fit_within(1920, 1080, 1280), (1280, 720));
        assert_eq!(fit_within(720, 1280, 1280), (720, 1280));
        assert_eq!(ticks_to_ms(24_576, 12_288), 2000);
        assert_eq!(ticks_to_ms(1, 0), 0);
    }
}
