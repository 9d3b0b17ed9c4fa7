//! The sequence parameter set, read as far as the colour description (matrix, range, chroma format, depth).

/// The parts of a sequence parameter set that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SpsInfo {
    pub(super) chroma_format_idc: u32,
    pub(super) bit_depth_luma: u32,
    pub(super) bit_depth_chroma: u32,
    /// VUI `matrix_coefficients` (2 = unspecified).
    pub(super) matrix_coefficients: u32,
    pub(super) full_range: bool,
}

/// Parses an SPS NAL unit (header byte included) as far as the VUI colour description.
/// `None` if even the format fields cannot be read; a damaged VUI leaves the defaults.
pub(super) fn parse_sps(nal: &[u8]) -> Option<SpsInfo> {
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
pub(super) fn parse_sps_tail(r: &mut BitReader<'_>, info: &mut SpsInfo) -> Option<()> {
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

pub(super) fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Option<()> {
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
pub(super) fn unescape_rbsp(data: &[u8]) -> Vec<u8> {
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
pub(super) struct BitReader<'a> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> BitReader<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub(super) fn bit(&mut self) -> Option<u32> {
        let byte = self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(bit))
    }

    pub(super) fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some((acc << 1) | self.bit()?))
    }

    /// Unsigned Exp-Golomb.
    pub(super) fn ue(&mut self) -> Option<u32> {
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
    pub(super) fn se(&mut self) -> Option<i32> {
        let k = i64::from(self.ue()?);
        let v = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        i32::try_from(v).ok()
    }
}
