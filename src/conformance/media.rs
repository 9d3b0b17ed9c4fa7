//! Is a download playable media of the promised shape? MP4: the top-level box structure (`ftyp` first, `moov`
//! and `mdat` present, every box inside the file), the video track (codec, width × height, duration, samples),
//! and the first sample read back (a key frame; for H.264 its NAL units fill it exactly and include an IDR
//! slice). Thumbnails and spritesheets: WebP and JPEG by their magic bytes.

use std::io::Cursor;

/// How far the duration may be from the job's `seconds`.
pub const DURATION_TOLERANCE_MS: u64 = 300;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mp4Facts {
    pub boxes: Vec<String>,
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub duration_ms: u64,
    pub samples: u32,
}

/// The top-level boxes: four-character type and size; an error if one overruns the file.
fn top_level_boxes(bytes: &[u8]) -> Result<Vec<(String, u64)>, String> {
    let mut out = Vec::new();
    let mut at: u64 = 0;
    let len = bytes.len() as u64;
    while at < len {
        let header = |from: u64, n: u64| -> Result<&[u8], String> {
            let (from, to) = (usize::try_from(from), usize::try_from(from + n));
            match (from, to) {
                (Ok(a), Ok(b)) if b <= bytes.len() => Ok(&bytes[a..b]),
                _ => Err(format!("truncated box header at byte {at}")),
            }
        };
        let head = header(at, 8)?;
        let size32 = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
        let name: String = head[4..8]
            .iter()
            .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
            .collect();
        let size = match size32 {
            0 => len - at,
            1 => {
                let big = header(at + 8, 8)?;
                u64::from_be_bytes([big[0], big[1], big[2], big[3], big[4], big[5], big[6], big[7]])
            }
            n => n,
        };
        if size < 8 || at.checked_add(size).is_none_or(|end| end > len) {
            return Err(format!(
                "box '{name}' at byte {at} claims {size} bytes, the file has {len}"
            ));
        }
        out.push((name, size));
        at += size;
    }
    Ok(out)
}

/// Parses an MP4 far enough to say it plays: see the module documentation.
pub fn inspect_mp4(bytes: &[u8]) -> Result<Mp4Facts, String> {
    let boxes = top_level_boxes(bytes)?;
    let names: Vec<String> = boxes.iter().map(|(n, _)| n.clone()).collect();
    if names.first().map(String::as_str) != Some("ftyp") {
        return Err(format!("not an MP4: the first box is {:?}, not 'ftyp'", names.first()));
    }
    for needed in ["moov", "mdat"] {
        if !names.iter().any(|n| n == needed) {
            return Err(format!("no '{needed}' box (top-level boxes: {})", names.join(", ")));
        }
    }
    let size = bytes.len() as u64;
    let mut reader = mp4::Mp4Reader::read_header(crate::media::Bounded::new(Cursor::new(bytes), size), size)
        .map_err(|e| format!("MP4 boxes do not parse: {e}"))?;
    let track = reader
        .tracks()
        .values()
        .find(|t| matches!(t.track_type(), Ok(mp4::TrackType::Video)))
        .ok_or("no video track")?;
    let codec = track.media_type().map_err(|e| format!("video track: {e}"))?.to_string();
    let (track_id, samples) = (track.track_id(), track.sample_count());
    let (width, height) = (u32::from(track.width()), u32::from(track.height()));
    let length_size = track.trak.mdia.minf.stbl.stsd.avc1.as_ref().map(|a| {
        let avcc = &a.avcc;
        (
            usize::from(avcc.length_size_minus_one) + 1,
            avcc.sequence_parameter_sets.len(),
            avcc.picture_parameter_sets.len(),
        )
    });
    let track_ms = u64::try_from(track.duration().as_millis()).unwrap_or(u64::MAX);
    let movie_ms = u64::try_from(reader.duration().as_millis()).unwrap_or(u64::MAX);
    let duration_ms = if track_ms > 0 { track_ms } else { movie_ms };
    if width == 0 || height == 0 {
        return Err(format!("video track is {width}x{height}"));
    }
    if samples == 0 || duration_ms == 0 {
        return Err(format!("video track has {samples} samples over {duration_ms} ms"));
    }
    let first = reader
        .read_sample(track_id, 1)
        .map_err(|e| format!("first sample unreadable: {e}"))?
        .ok_or("first sample missing")?;
    if first.bytes.is_empty() || !first.is_sync {
        return Err("the first sample is not a key frame".into());
    }
    let last = reader
        .read_sample(track_id, samples)
        .map_err(|e| format!("last sample unreadable: {e}"))?;
    if last.is_none_or(|s| s.bytes.is_empty()) {
        return Err(format!("sample {samples} (the last) is empty or outside the file"));
    }
    if let Some((length_size, sps, pps)) = length_size {
        if sps == 0 || pps == 0 {
            return Err(format!("avcC has {sps} SPS and {pps} PPS"));
        }
        check_h264_sample(&first.bytes, length_size)?;
    }
    Ok(Mp4Facts {
        boxes: names,
        codec,
        width,
        height,
        duration_ms,
        samples,
    })
}

/// Walks the length-prefixed NAL units of an H.264 key frame: they must fill it exactly, one an IDR slice.
fn check_h264_sample(sample: &[u8], length_size: usize) -> Result<(), String> {
    let mut at = 0;
    let mut idr = false;
    while at < sample.len() {
        let Some(prefix) = sample.get(at..at + length_size) else {
            return Err("first sample: truncated NAL length".into());
        };
        let n = prefix.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        at += length_size;
        let Some(nal) = sample.get(at..at + n).filter(|nal| !nal.is_empty()) else {
            return Err(format!("first sample: NAL unit of {n} bytes overruns the sample"));
        };
        idr |= nal[0] & 0x1f == 5;
        at += n;
    }
    if idr {
        Ok(())
    } else {
        Err("first sample: no IDR slice".into())
    }
}

/// [`inspect_mp4`], then the size and duration against the job's `size` (`WxH`) and `seconds`.
pub fn check_mp4(bytes: &[u8], size: &str, seconds: &str) -> Result<Mp4Facts, String> {
    let facts = inspect_mp4(bytes)?;
    let want = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .ok_or_else(|| format!("the job's size {size:?} is not WxH"))?;
    if (facts.width, facts.height) != want {
        return Err(format!("MP4 is {}x{}, the job says {size}", facts.width, facts.height));
    }
    let want_ms = seconds
        .parse::<u64>()
        .map_err(|_| format!("the job's seconds {seconds:?} is not a number"))?
        * 1000;
    if facts.duration_ms.abs_diff(want_ms) > DURATION_TOLERANCE_MS {
        return Err(format!("MP4 lasts {} ms, the job says {seconds} s", facts.duration_ms));
    }
    Ok(facts)
}

/// Like [`check_mp4`] for an endpoint that declares what its backend really produced (`x-sora-shim-produced:
/// WxH; seconds=S.mmm`, when a provider rounds a size or a length): the file must be what is declared, in the
/// orientation the job asked for.
pub fn check_mp4_declared(bytes: &[u8], size: &str, declared: &str) -> Result<Mp4Facts, String> {
    let parsed = declared.split_once("; seconds=").and_then(|(dims, secs)| {
        let (w, h) = dims.split_once('x')?;
        let (whole, frac) = secs.split_once('.')?;
        let ms = whole.parse::<u64>().ok()? * 1000 + frac.parse::<u64>().ok()?;
        Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?, ms))
    });
    let (w, h, ms) = parsed.ok_or_else(|| format!("x-sora-shim-produced {declared:?} is not 'WxH; seconds=S.mmm'"))?;
    let facts = inspect_mp4(bytes)?;
    if (facts.width, facts.height) != (w, h) || facts.duration_ms.abs_diff(ms) > DURATION_TOLERANCE_MS {
        return Err(format!(
            "MP4 is {}x{}, {} ms; the endpoint declares {declared}",
            facts.width, facts.height, facts.duration_ms
        ));
    }
    let (want_w, want_h) = size
        .split_once('x')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .ok_or_else(|| format!("the job's size {size:?} is not WxH"))?;
    if (w > h) != (want_w > want_h) {
        return Err(format!(
            "the job asked for {size}, the MP4 is {w}x{h}: orientation changed"
        ));
    }
    Ok(facts)
}

pub fn is_webp(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP"
}

pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xff, 0xd8, 0xff])
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use mp4::{AvcConfig, FourCC, MediaConfig, Mp4Config, Mp4Sample, Mp4Writer, TrackConfig, TrackType};

    /// An MP4 of `frames` frames at 8 fps: one IDR frame, then P frames (fake slices: the checker reads
    /// structure, not pictures).
    fn movie(width: u16, height: u16, frames: u32) -> Vec<u8> {
        let config = Mp4Config {
            major_brand: FourCC::from(*b"isom"),
            minor_version: 512,
            compatible_brands: vec![FourCC::from(*b"isom"), FourCC::from(*b"avc1")],
            timescale: 1000,
        };
        let mut w = Mp4Writer::write_start(Cursor::new(Vec::new()), &config).unwrap();
        w.add_track(&TrackConfig {
            track_type: TrackType::Video,
            timescale: 8000,
            language: "und".into(),
            media_conf: MediaConfig::AvcConfig(AvcConfig {
                width,
                height,
                seq_param_set: vec![0x67, 0x42, 0xc0, 0x1e, 0x95],
                pic_param_set: vec![0x68, 0xce, 0x38, 0x80],
            }),
        })
        .unwrap();
        for i in 0..frames {
            let nal: &[u8] = if i == 0 {
                &[0, 0, 0, 3, 0x65, 0x88, 0x84]
            } else {
                &[0, 0, 0, 2, 0x41, 0x9a]
            };
            let sample = Mp4Sample {
                start_time: u64::from(i) * 1000,
                duration: 1000,
                rendering_offset: 0,
                is_sync: i == 0,
                bytes: Bytes::copy_from_slice(nal),
            };
            w.write_sample(1, &sample).unwrap();
        }
        w.write_end().unwrap();
        w.into_writer().into_inner()
    }

    #[test]
    fn a_good_movie() {
        let mp4 = movie(720, 1280, 32);
        let facts = check_mp4(&mp4, "720x1280", "4").unwrap();
        assert_eq!(
            (facts.width, facts.height, facts.duration_ms, facts.samples),
            (720, 1280, 4000, 32)
        );
        assert_eq!(facts.codec, "h264");
        assert_eq!(facts.boxes, ["ftyp", "mdat", "moov"]);
    }

    #[test]
    fn wrong_shape_is_reported() {
        let mp4 = movie(1280, 720, 32);
        assert_eq!(
            check_mp4(&mp4, "720x1280", "4").unwrap_err(),
            "MP4 is 1280x720, the job says 720x1280"
        );
        let short = movie(720, 1280, 16);
        assert_eq!(
            check_mp4(&short, "720x1280", "4").unwrap_err(),
            "MP4 lasts 2000 ms, the job says 4 s"
        );
        assert!(
            check_mp4(&movie(720, 1280, 34), "720x1280", "4").is_ok(),
            "within the tolerance"
        );
    }

    #[test]
    fn broken_files_are_refused() {
        assert!(inspect_mp4(b"definitely not a movie").unwrap_err().contains("claims"));
        assert!(inspect_mp4(b"").unwrap_err().contains("not an MP4"));
        let mp4 = movie(720, 1280, 8);
        let truncated = &mp4[..mp4.len() - 10];
        assert!(
            inspect_mp4(truncated).unwrap_err().contains("claims"),
            "{:?}",
            inspect_mp4(truncated)
        );
        // Drop the mdat box: structure says no media data.
        let boxes = top_level_boxes(&mp4).unwrap();
        let ftyp = usize::try_from(boxes[0].1).unwrap();
        let mdat = usize::try_from(boxes[1].1).unwrap();
        let without_mdat = [&mp4[..ftyp], &mp4[ftyp + mdat..]].concat();
        assert!(inspect_mp4(&without_mdat).unwrap_err().starts_with("no 'mdat' box"));
        // Corrupt the first NAL length: the key frame no longer parses.
        let mut bad = mp4.clone();
        // (the writer puts an 8-byte `wide` box header after the `mdat` header)
        bad[ftyp + 16 + 3] = 200;
        assert!(
            inspect_mp4(&bad).unwrap_err().contains("overruns"),
            "{:?}",
            inspect_mp4(&bad)
        );
    }

    #[test]
    fn image_magic() {
        assert!(is_webp(b"RIFF\x10\x00\x00\x00WEBPVP8 "));
        assert!(!is_webp(b"RIFF\x10\x00\x00\x00WAVEfmt "));
        assert!(is_jpeg(&[0xff, 0xd8, 0xff, 0xe0]));
        assert!(!is_jpeg(b"\x89PNG\r\n\x1a\n"));
    }
}
