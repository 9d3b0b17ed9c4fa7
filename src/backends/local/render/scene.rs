//! The scene a prompt becomes: a seeded look (colours, shapes, motion) per segment, the overlay (prompt, timecode,
//! label) and a reference image fading out over the first second.

use super::*;

/// Small deterministic generator (splitmix64) seeded from the prompt hash.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub(super) fn range(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }

    pub(super) fn sign(&mut self) -> f32 {
        if self.next_u64() & 1 == 0 { 1.0 } else { -1.0 }
    }
}

pub(super) fn hsv(h: f32, s: f32, v: f32) -> Color {
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
pub(super) enum ShapeKind {
    Circle,
    Rect,
}

pub(super) struct Shape {
    pub(super) kind: ShapeKind,
    pub(super) color: Color,
    pub(super) alpha: u32,
    /// Base size as a fraction of the short side.
    pub(super) size: f32,
    /// Aspect factors of a rectangle.
    pub(super) aspect: (f32, f32),
    /// Path amplitude as a fraction of width/height.
    pub(super) amp: (f32, f32),
    /// Angular speed in rad/s.
    pub(super) speed: (f32, f32),
    pub(super) phase: (f32, f32),
    pub(super) pulse_phase: f32,
}

/// The look of one prompt.
pub(super) struct Look {
    /// Background colours along the gradient direction, one period plus one row's worth.
    pub(super) gradient: Vec<u8>,
    pub(super) period: usize,
    /// Scroll speed in gradient periods per second.
    pub(super) scroll: f32,
    pub(super) anti_diagonal: bool,
    pub(super) shapes: Vec<Shape>,
    pub(super) accent: Color,
    pub(super) prompt_lines: Vec<String>,
}

impl Look {
    pub(super) fn new(prompt: &str, width: usize, height: usize, wrap_width: usize, max_lines: usize) -> Self {
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

pub(super) struct SegmentRange {
    pub(super) end_frame: u32,
    pub(super) look: Look,
}

/// Everything needed to draw any frame.
pub(super) struct Scene {
    pub(super) width: usize,
    pub(super) height: usize,
    pub(super) fps: u32,
    pub(super) total_frames: u32,
    pub(super) segments: Vec<SegmentRange>,
    pub(super) reference: Option<Vec<u8>>,
    pub(super) label: String,
    pub(super) unit: u32,
    pub(super) margin: i64,
}

impl Scene {
    pub(super) fn new(spec: &RenderSpec, total_frames: u32) -> Result<Self, RenderError> {
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

    pub(super) fn draw(&self, frame: u32, canvas: &mut Canvas) {
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

    pub(super) fn draw_overlay(&self, frame: u32, seg_index: usize, look: &Look, canvas: &mut Canvas) {
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
pub(super) fn timecode(frame: u32, fps: u32, total_frames: u32) -> String {
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
pub(super) fn prepare_reference(bytes: &[u8], width: u32, height: u32) -> Result<Vec<u8>, RenderError> {
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
