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
