//! H.264 encoding (OpenH264) and MP4 writing: the encoder's settings, NAL units into samples, the file
//! muxed as it is encoded, and progress reported as frames go.

use super::*;

/// Encodes frames with OpenH264 and streams them as samples into an MP4 file.
pub(super) struct VideoWriter {
    pub(super) encoder: Encoder,
    pub(super) muxer: Mp4Writer<BufWriter<File>>,
    pub(super) yuv: Yuv420,
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) timescale: u32,
    pub(super) sample_duration: u32,
    /// SPS and PPS of the sample entry, known after the first frame.
    pub(super) param_sets: Option<(Vec<u8>, Vec<u8>)>,
    /// The last sample, held back so a skipped frame can lengthen it.
    pub(super) pending: Option<Mp4Sample>,
    pub(super) sample_buf: Vec<u8>,
    pub(super) samples_written: u32,
}

impl VideoWriter {
    pub(super) fn create(path: &Path, spec: &RenderSpec) -> Result<Self, RenderError> {
        let file = File::create(path)?;
        let (timescale, sample_duration) = timescale_for(spec.fps);
        let config = Mp4Config {
            major_brand: FourCC::from(*b"isom"),
            minor_version: 512,
            compatible_brands: vec![
                FourCC::from(*b"isom"),
                FourCC::from(*b"iso2"),
                FourCC::from(*b"avc1"),
                FourCC::from(*b"mp41"),
            ],
            timescale,
        };
        let muxer = Mp4Writer::write_start(BufWriter::with_capacity(1 << 20, file), &config).map_err(mux_err)?;
        let encoder =
            Encoder::with_api_config(OpenH264API::from_source(), encoder_config(spec)).map_err(encoder_err)?;
        Ok(Self {
            encoder,
            muxer,
            yuv: Yuv420::new(spec.width as usize, spec.height as usize),
            width: spec.width,
            height: spec.height,
            timescale,
            sample_duration,
            param_sets: None,
            pending: None,
            sample_buf: Vec::with_capacity(256 * 1024),
            samples_written: 0,
        })
    }

    pub(super) fn push_frame(&mut self, frame: u32, canvas: &Canvas) -> Result<(), RenderError> {
        self.yuv.convert_from(canvas);
        let bitstream = self.encoder.encode(&self.yuv).map_err(encoder_err)?;

        // Annex-B NAL units -> one length-prefixed sample; SPS/PPS go to the avcC box.
        self.sample_buf.clear();
        let mut is_sync = false;
        let mut sps: Option<Vec<u8>> = None;
        let mut pps: Option<Vec<u8>> = None;
        for l in 0..bitstream.num_layers() {
            let Some(layer) = bitstream.layer(l) else {
                continue;
            };
            for n in 0..layer.nal_count() {
                let Some(nal) = layer.nal_unit(n).map(strip_start_code) else {
                    continue;
                };
                let Some(&header) = nal.first() else {
                    continue;
                };
                match (header & 0x1f, &self.param_sets) {
                    (NAL_SPS, None) => sps = Some(nal.to_vec()),
                    (NAL_PPS, None) => pps = Some(nal.to_vec()),
                    (NAL_SPS | NAL_PPS, Some((s, p))) => {
                        // Repeated at every IDR: drop copies of the sample entry's sets,
                        // keep a changed one in-band.
                        if nal != s.as_slice() && nal != p.as_slice() {
                            tracing::warn!("h264 encoder changed its parameter sets mid-stream");
                            push_length_prefixed(&mut self.sample_buf, nal)?;
                        }
                    }
                    (NAL_AUD, _) => {}
                    (nal_type, _) => {
                        is_sync |= nal_type == NAL_IDR_SLICE;
                        push_length_prefixed(&mut self.sample_buf, nal)?;
                    }
                }
            }
        }

        if self.param_sets.is_none() {
            let (Some(sps), Some(pps)) = (sps, pps) else {
                return Err(RenderError::Encoder(
                    "first encoded frame carried no SPS/PPS".to_string(),
                ));
            };
            self.add_track(sps, pps)?;
        }

        if self.sample_buf.is_empty() {
            // A skipped frame: the previous picture stays on screen a frame longer.
            return match self.pending.as_mut() {
                Some(prev) => {
                    prev.duration += self.sample_duration;
                    Ok(())
                }
                None => Err(RenderError::Encoder(
                    "encoder produced no picture for the first frame".to_string(),
                )),
            };
        }
        let sample = Mp4Sample {
            start_time: u64::from(frame) * u64::from(self.sample_duration),
            duration: self.sample_duration,
            rendering_offset: 0,
            is_sync,
            bytes: Bytes::copy_from_slice(&self.sample_buf),
        };
        if let Some(prev) = self.pending.replace(sample) {
            self.write_sample(&prev)?;
        }
        Ok(())
    }

    pub(super) fn add_track(&mut self, sps: Vec<u8>, pps: Vec<u8>) -> Result<(), RenderError> {
        if sps.len() < 4 {
            return Err(RenderError::Encoder("SPS too short".to_string()));
        }
        let track = TrackConfig {
            track_type: TrackType::Video,
            timescale: self.timescale,
            language: "und".to_string(),
            media_conf: MediaConfig::AvcConfig(AvcConfig {
                width: u16::try_from(self.width).map_err(|_| invalid("width too large"))?,
                height: u16::try_from(self.height).map_err(|_| invalid("height too large"))?,
                seq_param_set: sps.clone(),
                pic_param_set: pps.clone(),
            }),
        };
        self.muxer.add_track(&track).map_err(mux_err)?;
        self.param_sets = Some((sps, pps));
        Ok(())
    }

    pub(super) fn write_sample(&mut self, sample: &Mp4Sample) -> Result<(), RenderError> {
        self.muxer.write_sample(1, sample).map_err(mux_err)?;
        self.samples_written += 1;
        Ok(())
    }

    /// Writes the last sample and the `moov` box, syncs the file; returns the sample count.
    pub(super) fn finish(mut self) -> Result<u32, RenderError> {
        if let Some(prev) = self.pending.take() {
            self.write_sample(&prev)?;
        }
        self.muxer.write_end().map_err(mux_err)?;
        let file = self.muxer.into_writer().into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(self.samples_written)
    }
}

pub(super) fn invalid(msg: &str) -> RenderError {
    RenderError::InvalidSpec(msg.to_string())
}

/// Checks the spec and returns the total number of frames.
pub(super) fn validate(spec: &RenderSpec) -> Result<u32, RenderError> {
    let (w, h) = (spec.width, spec.height);
    if w % 2 != 0 || h % 2 != 0 {
        return Err(RenderError::InvalidSpec(format!(
            "width and height must be even, got {w}x{h}"
        )));
    }
    if w.min(h) < MIN_SIDE || w.max(h) > MAX_LONG_SIDE || w.min(h) > MAX_SHORT_SIDE {
        return Err(RenderError::InvalidSpec(format!(
            "size {w}x{h} is out of range (sides {MIN_SIDE}..={MAX_LONG_SIDE}, short side at most {MAX_SHORT_SIDE})"
        )));
    }
    if spec.fps == 0 || spec.fps > MAX_FPS {
        return Err(RenderError::InvalidSpec(format!(
            "fps must be in 1..={MAX_FPS}, got {}",
            spec.fps
        )));
    }
    let seconds = spec
        .segments
        .iter()
        .try_fold(0u32, |acc, s| acc.checked_add(s.seconds))
        .ok_or_else(|| invalid("total duration overflows"))?;
    if seconds == 0 {
        return Err(invalid("total duration must be at least one second"));
    }
    seconds.checked_mul(spec.fps).ok_or_else(|| invalid("too many frames"))
}

/// Media timescale and per-frame sample duration; chosen so that the movie and track
/// durations come out exact.
pub(super) fn timescale_for(fps: u32) -> (u32, u32) {
    if 90_000 % fps == 0 {
        (90_000, 90_000 / fps)
    } else {
        (fps * 1000, 1000)
    }
}

pub(super) fn encoder_config(spec: &RenderSpec) -> EncoderConfig {
    // About 0.06 bits per pixel: plenty for flat synthetic content.
    let bps = u64::from(spec.width) * u64::from(spec.height) * u64::from(spec.fps) / 16;
    let bps = bps.clamp(300_000, 16_000_000) as u32;
    EncoderConfig::new()
        .bitrate(BitRate::from_bps(bps))
        .max_frame_rate(FrameRate::from_hz(spec.fps as f32))
        .rate_control_mode(RateControlMode::Off)
        .skip_frames(false)
        .usage_type(UsageType::CameraVideoRealTime)
        .complexity(Complexity::Low)
        .intra_frame_period(IntraFramePeriod::from_num_frames(spec.fps * 2))
        .num_threads(1)
        .scene_change_detect(false)
        .background_detection(false)
        .adaptive_quantization(false)
        .vui(VuiConfig::bt709())
}

pub(super) const NAL_IDR_SLICE: u8 = 5;
pub(super) const NAL_SPS: u8 = 7;
pub(super) const NAL_PPS: u8 = 8;
pub(super) const NAL_AUD: u8 = 9;

/// Removes a leading Annex-B start code (`00 00 01` or `00 00 00 01`).
pub(super) fn strip_start_code(nal: &[u8]) -> &[u8] {
    if let Some(rest) = nal.strip_prefix(&[0, 0, 0, 1]) {
        rest
    } else if let Some(rest) = nal.strip_prefix(&[0, 0, 1]) {
        rest
    } else {
        nal
    }
}

pub(super) fn push_length_prefixed(out: &mut Vec<u8>, nal: &[u8]) -> Result<(), RenderError> {
    let len = u32::try_from(nal.len()).map_err(|_| RenderError::Encoder("NAL unit larger than 4 GiB".to_string()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(nal);
    Ok(())
}

pub(super) fn scale_progress(done: u32, total: u32, max: u8) -> u8 {
    if total == 0 {
        return max;
    }
    let p = u64::from(done.min(total)) * u64::from(max) / u64::from(total);
    p.min(u64::from(max)) as u8
}

/// Forwards non-decreasing progress values, each at most once.
pub(super) struct Progress<'a> {
    pub(super) sink: &'a mut dyn FnMut(u8),
    pub(super) last: Option<u8>,
}

impl<'a> Progress<'a> {
    pub(super) fn new(sink: &'a mut dyn FnMut(u8)) -> Self {
        Self { sink, last: None }
    }

    pub(super) fn report(&mut self, p: u8) {
        let p = p.min(99);
        if self.last.is_none_or(|last| p > last) {
            self.last = Some(p);
            (self.sink)(p);
        }
    }
}
