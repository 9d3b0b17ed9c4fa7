//! Decoded 8-bit 4:2:0 pictures to RGB, for the colour matrix and range the stream declares.

use super::*;

/// An owned copy of a decoded 8-bit 4:2:0 picture.
#[derive(Default)]
pub(super) struct YuvFrame {
    pub(super) width: usize,
    pub(super) height: usize,
    pub(super) y_stride: usize,
    pub(super) u_stride: usize,
    pub(super) v_stride: usize,
    pub(super) y: Vec<u8>,
    pub(super) u: Vec<u8>,
    pub(super) v: Vec<u8>,
}

impl YuvFrame {
    pub(super) fn copy_from(&mut self, yuv: &DecodedYUV<'_>) {
        (self.width, self.height) = yuv.dimensions();
        (self.y_stride, self.u_stride, self.v_stride) = yuv.strides();
        for (dst, src) in [(&mut self.y, yuv.y()), (&mut self.u, yuv.u()), (&mut self.v, yuv.v())] {
            dst.clear();
            dst.extend_from_slice(src);
        }
    }

    pub(super) fn to_rgb(&self, color: &ColorSpace) -> Result<Vec<u8>, PreviewError> {
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
pub(super) fn plane_row(plane: &[u8], stride: usize, row: usize, len: usize) -> Option<&[u8]> {
    plane.get(row.checked_mul(stride)?..)?.get(..len)
}

/// YUV -> RGB conversion for one colour matrix and range, in 16.16 fixed point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ColorSpace {
    pub(super) y_offset: i32,
    pub(super) y_mul: i32,
    pub(super) r_v: i32,
    pub(super) g_u: i32,
    pub(super) g_v: i32,
    pub(super) b_u: i32,
}

impl ColorSpace {
    /// `kr`, `kb`: the matrix's luma weights of red and blue.
    pub(super) fn new(kr: f64, kb: f64, full_range: bool) -> Self {
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
    pub(super) fn from_sps(sps: Option<&SpsInfo>, width: u16, height: u16) -> Self {
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
    pub(super) fn pixel(self, y: u8, u: u8, v: u8) -> [u8; 3] {
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
