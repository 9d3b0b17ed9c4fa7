//! Looking inside uploads: the size of a reference image and the size and length of an uploaded MP4, so bad
//! inputs are refused at the door with a clear error instead of failing later at a backend.

use std::io::{self, Cursor, Read, Seek, SeekFrom};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub width: u32,
    pub height: u32,
    pub content_type: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoInfo {
    pub width: u32,
    pub height: u32,
    /// Whole seconds, rounded to nearest (at least 1).
    pub seconds: u32,
    pub duration_ms: u64,
}

/// The image's format (by its bytes, not its claimed type) and dimensions. JPEG, PNG and WebP only, as Sora.
pub fn probe_image(bytes: &[u8]) -> Option<ImageInfo> {
    guarded("image", || read_image(bytes))
}

fn read_image(bytes: &[u8]) -> Option<ImageInfo> {
    let format = image::guess_format(bytes).ok()?;
    let content_type = match format {
        image::ImageFormat::Png => "image/png",
        image::ImageFormat::Jpeg => "image/jpeg",
        image::ImageFormat::WebP => "image/webp",
        _ => return None,
    };
    let (width, height) = image::ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .ok()?;
    Some(ImageInfo {
        width,
        height,
        content_type,
    })
}

/// Dimensions of the first video track and the movie's duration.
pub fn probe_mp4(bytes: &[u8]) -> Option<VideoInfo> {
    guarded("MP4", || {
        let size = bytes.len() as u64;
        let reader = mp4::Mp4Reader::read_header(Bounded::new(Cursor::new(bytes), size), size).ok()?;
        video_info(&reader)
    })
}

/// The same for a file, reading only its boxes' headers (the media data is skipped, not read).
pub fn probe_mp4_file(path: &std::path::Path) -> Option<VideoInfo> {
    guarded("MP4", || {
        let file = std::fs::File::open(path).ok()?;
        let size = file.metadata().ok()?.len();
        let reader = mp4::Mp4Reader::read_header(Bounded::new(io::BufReader::new(file), size), size).ok()?;
        video_info(&reader)
    })
}

/// Runs a parser of untrusted bytes (an upload, a provider's output). The `mp4` and `image` crates have
/// panicking paths on malformed input; a panic reads as "not a valid file" (the client gets the same clear 400
/// as for any unreadable upload) instead of unwinding through the request and dropping the connection. The
/// parsers hold none of our state, so nothing is left half-changed.
fn guarded<T>(what: &str, parse: impl FnOnce() -> Option<T>) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse)).unwrap_or_else(|_| {
        tracing::warn!("the {what} parser panicked on an input: treated as unreadable");
        None
    })
}

/// What the `mp4` crate reads through: at most one read or seek per byte of the file (plus a margin), then an
/// error. The crate loops forever on a box of size 0 inside a container (it seeks back to the same header and
/// reads it again; found by fuzzing, `tests/fuzz/regressions/request_body/`), so an upload or a provider's
/// output could pin a core; a parse of a real file makes far fewer calls than it has bytes.
pub struct Bounded<R> {
    inner: R,
    calls_left: u64,
}

impl<R> Bounded<R> {
    pub fn new(inner: R, size: u64) -> Bounded<R> {
        Bounded {
            inner,
            calls_left: size.saturating_add(4096),
        }
    }

    fn spend(&mut self) -> io::Result<()> {
        if self.calls_left == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed MP4: reading its boxes does not end",
            ));
        }
        self.calls_left -= 1;
        Ok(())
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.spend()?;
        self.inner.read(buf)
    }
}

impl<R: Seek> Seek for Bounded<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.spend()?;
        self.inner.seek(pos)
    }
}

fn video_info<R: std::io::Read + std::io::Seek>(reader: &mp4::Mp4Reader<R>) -> Option<VideoInfo> {
    let track = reader
        .tracks()
        .values()
        .find(|t| matches!(t.track_type(), Ok(mp4::TrackType::Video)))?;
    let (width, height) = (u32::from(track.width()), u32::from(track.height()));
    let millis = reader.duration().as_millis();
    if width == 0 || height == 0 || millis == 0 {
        return None;
    }
    let seconds = u32::try_from((millis + 500) / 1000).ok()?.max(1);
    Some(VideoInfo {
        width,
        height,
        seconds,
        duration_ms: u64::try_from(millis).ok()?,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_parser_that_panics_reads_as_an_unreadable_file() {
        assert_eq!(super::guarded::<u32>("MP4", || panic!("index out of bounds")), None);
        assert_eq!(super::guarded("MP4", || Some(7)), Some(7));
    }

    #[test]
    fn a_box_of_size_zero_inside_moov_is_refused_not_looped_on() {
        let mut mp4 = Vec::new();
        mp4.extend_from_slice(&[0, 0, 0, 16]);
        mp4.extend_from_slice(b"ftypisom");
        mp4.extend_from_slice(&[0, 0, 0, 0]);
        mp4.extend_from_slice(&[0, 0, 0, 16]);
        mp4.extend_from_slice(b"moov");
        mp4.extend_from_slice(&[0, 0, 0, 0]);
        mp4.extend_from_slice(b"free");
        assert_eq!(super::probe_mp4(&mp4), None);
    }

    use super::*;

    #[test]
    fn png_dimensions() {
        let mut out = Vec::new();
        image::RgbImage::new(64, 36)
            .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(
            probe_image(&out),
            Some(ImageInfo {
                width: 64,
                height: 36,
                content_type: "image/png"
            })
        );
        assert_eq!(probe_image(b"GIF89a...."), None);
        assert_eq!(probe_image(b"not an image"), None);
    }

    #[test]
    fn garbage_is_not_an_mp4() {
        assert_eq!(probe_mp4(b"definitely not a movie"), None);
    }
}
