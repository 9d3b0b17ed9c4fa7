//! Choosing frames: the thumbnail's and the sprite sheet's positions, and the picker that keeps them as the
//! decoded frames go by.

use super::*;

/// Index of the frame shown in the thumbnail: the middle one.
pub(crate) fn thumbnail_frame(total_frames: u32) -> u32 {
    total_frames / 2
}

/// Index of the frame shown in each sprite sheet tile, row-major: the middles of
/// `columns × rows` equal stretches of the video.
pub(crate) fn sprite_frames(total_frames: u32) -> Vec<u32> {
    let tiles = SPRITESHEET_COLUMNS * SPRITESHEET_ROWS;
    (0..tiles)
        .map(|i| {
            let f = (u64::from(2 * i + 1) * u64::from(total_frames)) / u64::from(2 * tiles);
            (f as u32).min(total_frames.saturating_sub(1))
        })
        .collect()
}

/// Watches the decoded frames go by (in presentation order) and keeps the ones the
/// previews need, converted to RGB.
///
/// The decoder gives no timestamps back, so a frame's position is estimated as the
/// number of frames decoded before it plus the number of samples that failed so far:
/// exact for an undamaged stream, and close to the truth after a damaged stretch. A
/// wanted position that falls into a damaged stretch gets the nearer of the decoded
/// frames around it.
pub(super) struct FramePicker {
    pub(super) color: ColorSpace,
    pub(super) thumb_frame: u32,
    pub(super) tile_frames: Vec<u32>,
    /// Positions still waiting for a frame, ascending.
    pub(super) wanted: Vec<u32>,
    /// Size of the first decoded frame: the size of the video.
    pub(super) size: Option<(u32, u32)>,
    pub(super) thumbnail: Option<(u32, u32, Vec<u8>)>,
    pub(super) sprite: Option<SpriteSheet>,
    pub(super) current: YuvFrame,
    /// The previously decoded frame and its estimated position.
    pub(super) previous: YuvFrame,
    pub(super) previous_pos: Option<u32>,
    pub(super) decoded: u32,
}

/// The previews' frames, once every wanted position was served.
pub(super) struct Picked {
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) thumbnail: (u32, u32, Vec<u8>),
    pub(super) sprite: SpriteSheet,
}

impl FramePicker {
    pub(super) fn new(total_frames: u32, color: ColorSpace) -> Self {
        let thumb_frame = thumbnail_frame(total_frames);
        let tile_frames = sprite_frames(total_frames);
        let mut wanted = tile_frames.clone();
        wanted.push(thumb_frame);
        wanted.sort_unstable();
        wanted.dedup();
        Self {
            color,
            thumb_frame,
            tile_frames,
            wanted,
            size: None,
            thumbnail: None,
            sprite: None,
            current: YuvFrame::default(),
            previous: YuvFrame::default(),
            previous_pos: None,
            decoded: 0,
        }
    }

    /// Whether every wanted frame has been served.
    pub(super) fn is_done(&self) -> bool {
        self.wanted.is_empty()
    }

    /// Takes the next decoded frame; `failed` is the number of samples lost so far.
    pub(super) fn push(&mut self, yuv: &DecodedYUV<'_>, failed: u32) -> Result<(), PreviewError> {
        let pos = self.decoded.saturating_add(failed);
        self.decoded += 1;
        if self.wanted.is_empty() {
            return Ok(());
        }
        self.current.copy_from(yuv);
        if self.size.is_none() {
            let (w, h) = (self.current.width as u32, self.current.height as u32);
            self.size = Some((w, h));
            self.sprite = Some(SpriteSheet::new(w, h, self.tile_frames.clone()));
        }
        let due = self.wanted.partition_point(|t| *t <= pos);
        let due: Vec<u32> = self.wanted.drain(..due).collect();
        for target in due {
            let use_previous = self.previous_pos.is_some_and(|p| target - p < pos - target);
            let frame = if use_previous { &self.previous } else { &self.current };
            let rgb = frame.to_rgb(&self.color)?;
            let (w, h) = (frame.width as u32, frame.height as u32);
            self.deliver(target, w, h, rgb)?;
        }
        std::mem::swap(&mut self.current, &mut self.previous);
        self.previous_pos = Some(pos);
        Ok(())
    }

    pub(super) fn deliver(&mut self, target: u32, w: u32, h: u32, rgb: Vec<u8>) -> Result<(), PreviewError> {
        if let Some(sprite) = self.sprite.as_mut() {
            sprite.capture(target, w, h, &rgb)?;
        }
        if target == self.thumb_frame {
            self.thumbnail = Some((w, h, rgb));
        }
        Ok(())
    }

    /// Serves the positions past the last decoded frame with that frame; `None` if no
    /// frame was decoded at all.
    pub(super) fn finish(mut self) -> Result<Option<Picked>, PreviewError> {
        if self.previous_pos.is_none() {
            return Ok(None);
        }
        for target in std::mem::take(&mut self.wanted) {
            let rgb = self.previous.to_rgb(&self.color)?;
            let (w, h) = (self.previous.width as u32, self.previous.height as u32);
            self.deliver(target, w, h, rgb)?;
        }
        Ok(match (self.size, self.thumbnail, self.sprite) {
            (Some((width, height)), Some(thumbnail), Some(sprite)) => Some(Picked {
                width,
                height,
                thumbnail,
                sprite,
            }),
            _ => None,
        })
    }
}
