//! Pixels: an RGB canvas with blending, shapes and 8x8 text, and its conversion to 4:2:0 YUV for the encoder.

use super::*;

pub(super) type Color = [u8; 3];

/// An RGB24 frame.
pub(super) struct Canvas {
    pub(super) width: usize,
    pub(super) height: usize,
    pub(super) rgb: Vec<u8>,
}

#[inline]
pub(super) fn mix(dst: u8, src: u8, alpha: u32) -> u8 {
    ((u32::from(src) * alpha + u32::from(dst) * (256 - alpha) + 128) >> 8) as u8
}

#[inline]
pub(super) fn blend_px(px: &mut [u8], color: Color, alpha: u32) {
    if alpha >= 256 {
        px.copy_from_slice(&color);
    } else if alpha > 0 {
        for (d, s) in px.iter_mut().zip(color) {
            *d = mix(*d, s, alpha);
        }
    }
}

impl Canvas {
    pub(super) fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            rgb: vec![0; width * height * 3],
        }
    }

    pub(super) fn row_mut(&mut self, y: usize) -> &mut [u8] {
        let stride = self.width * 3;
        &mut self.rgb[y * stride..(y + 1) * stride]
    }

    /// Blends `color` over the rectangle `[x0, x1) x [y0, y1)` (clipped).
    pub(super) fn fill_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, color: Color, alpha: u32) {
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
    pub(super) fn fill_circle(&mut self, cx: f32, cy: f32, r: f32, color: Color, alpha: u32) {
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
    pub(super) fn draw_text(&mut self, x: i64, y: i64, text: &str, scale: u32, color: Color, alpha: u32) {
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
    pub(super) fn draw_text_shadowed(&mut self, x: i64, y: i64, text: &str, scale: u32) {
        let off = i64::from((scale / 2).max(1));
        self.draw_text(x + off, y + off, text, scale, [0, 0, 0], 200);
        self.draw_text(x, y, text, scale, [255, 255, 255], 256);
    }
}

pub(super) fn glyph(c: char) -> [u8; 8] {
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
pub(super) fn truncate_chars(text: &str, max: usize) -> String {
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
pub(super) fn wrap_text(text: &str, width: usize, max_lines: usize) -> Vec<String> {
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
pub(super) struct Yuv420 {
    pub(super) width: usize,
    pub(super) height: usize,
    pub(super) y: Vec<u8>,
    pub(super) u: Vec<u8>,
    pub(super) v: Vec<u8>,
}

impl Yuv420 {
    pub(super) fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            y: vec![0; width * height],
            u: vec![128; width * height / 4],
            v: vec![128; width * height / 4],
        }
    }

    /// BT.709 limited-range conversion with 2x2 chroma averaging.
    pub(super) fn convert_from(&mut self, canvas: &Canvas) {
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
pub(super) fn sum_2x2(a: &[u8], b: &[u8]) -> (i32, i32, i32) {
    let s = |i: usize| i32::from(a[i]) + i32::from(a[i + 3]) + i32::from(b[i]) + i32::from(b[i + 3]);
    (s(0), s(1), s(2))
}

#[inline]
pub(super) fn luma(r: u32, g: u32, b: u32) -> u8 {
    // At most 16 + 219 = 235, so the cast never truncates.
    (16 + ((11966 * r + 40254 * g + 4064 * b + 32768) >> 16)) as u8
}

/// `sum` is a chroma dot product over four pixels, with 16-bit fixed-point weights.
#[inline]
pub(super) fn chroma(sum: i32) -> u8 {
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
