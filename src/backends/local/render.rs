// TEMPORARY STUB (replaced by the real renderer)
pub struct Segment {
    pub prompt: String,
    pub seconds: u32,
}
pub struct RenderSpec {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub segments: Vec<Segment>,
    pub reference_image: Option<Vec<u8>>,
    pub label: String,
}
pub struct RenderOutput {
    pub video_bytes: u64,
    pub thumbnail_bytes: u64,
    pub spritesheet_bytes: u64,
    pub frames: u32,
    pub duration_ms: u64,
}
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("x")]
    Cancelled,
}
pub fn render(
    _spec: &RenderSpec,
    _dir: &std::path::Path,
    _progress: &mut dyn FnMut(u8),
    _cancel: &dyn Fn() -> bool,
) -> Result<RenderOutput, RenderError> {
    Err(RenderError::Cancelled)
}
