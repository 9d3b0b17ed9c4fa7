//! Writing the previews (shared with the local renderer): the thumbnail, the sprite sheet, and files that
//! appear only once written.

use super::*;

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
pub(super) fn dimension_mismatch() -> PreviewError {
    PreviewError::Image(image::ImageError::Parameter(image::error::ParameterError::from_kind(
        image::error::ParameterErrorKind::DimensionMismatch,
    )))
}

/// Creates `path`, lets `encode` write an image into it, and syncs it to disk.
pub(super) fn write_image_file(
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
    pub(super) sheet: RgbImage,
    pub(super) tile_width: u32,
    pub(super) tile_height: u32,
    /// Frame index shown in each tile, row-major.
    pub(super) tile_frames: Vec<u32>,
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

pub(super) static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A file written under a temporary name and renamed into place by [`TempFile::commit`];
/// removed on drop if never committed.
pub(crate) struct TempFile {
    /// Where to write the content.
    pub(crate) tmp: PathBuf,
    pub(super) dest: PathBuf,
    pub(super) committed: bool,
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
