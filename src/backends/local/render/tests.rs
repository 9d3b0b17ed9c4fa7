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
