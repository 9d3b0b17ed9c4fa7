//! The H.264 track of an MP4: its samples read one by one, turned into Annex B for the decoder.

use super::*;

/// What is needed from the video track to decode it.
pub(super) struct H264Track {
    pub(super) id: u32,
    pub(super) sample_count: u32,
    /// Size of the NAL unit length prefixes in the samples (1, 2, 3 or 4 bytes).
    pub(super) length_size: usize,
    /// SPS and PPS NAL units from the `avcC` box, fed to the decoder before the first sample.
    pub(super) param_sets: Vec<Vec<u8>>,
    pub(super) color: ColorSpace,
    /// The media duration: from the track header (`mdhd`), or else the sum of the
    /// sample durations (`stts`).
    pub(super) duration_ms: u64,
}

impl H264Track {
    pub(super) fn find<R: io::Read + io::Seek>(reader: &Mp4Reader<R>) -> Result<Self, PreviewError> {
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
pub(super) fn sample_size(track: &Mp4Track, id: u32) -> Option<u32> {
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
pub(super) fn to_annex_b(sample: &[u8], length_size: usize, out: &mut Vec<u8>) -> bool {
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
