//! Domain types shared by every stage: a [`Job`] and its internal [`State`], the Sora-visible status derived
//! from it, sizes, durations, asset variants and ids. No I/O here.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `WxH`, as Sora wrote sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed = s
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)));
        match parsed {
            // H.264 at 4:2:0 needs even dimensions; 4096 keeps a frame's memory bounded.
            Some((w, h)) if w >= 16 && h >= 16 && w <= 4096 && h <= 4096 && w % 2 == 0 && h % 2 == 0 => {
                Ok(Size { width: w, height: h })
            }
            _ => Err(format!("{s:?} is not a size like \"1280x720\" (even, 16..4096)")),
        }
    }
}

impl TryFrom<String> for Size {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Size> for String {
    fn from(s: Size) -> String {
        s.to_string()
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// A clip duration in whole seconds; Sora sent it as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Seconds(pub u32);

impl FromStr for Seconds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<u32>() {
            Ok(n) if (1..=600).contains(&n) && !s.starts_with('0') => Ok(Seconds(n)),
            _ => Err(format!("{s:?} is not a duration in whole seconds (1..600)")),
        }
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Internal job states (DESIGN.md "Job states"). Finer than Sora's four; see [`State::sora_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Persisted, not yet sent.
    Accepted,
    /// Being sent; persisted before the call so a crash here is detectable.
    Submitting,
    /// The backend accepted it and its job id is stored.
    Submitted,
    /// The backend is generating.
    Running,
    /// The backend is done; assets are being copied into our storage.
    Finalizing,
    Completed,
    Failed,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Accepted,
        State::Submitting,
        State::Submitted,
        State::Running,
        State::Finalizing,
        State::Completed,
        State::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Accepted => "accepted",
            State::Submitting => "submitting",
            State::Submitted => "submitted",
            State::Running => "running",
            State::Finalizing => "finalizing",
            State::Completed => "completed",
            State::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, State::Completed | State::Failed)
    }

    /// The only four values a client may ever see.
    pub fn sora_status(self) -> &'static str {
        match self {
            State::Accepted | State::Submitting | State::Submitted => "queued",
            State::Running | State::Finalizing => "in_progress",
            State::Completed => "completed",
            State::Failed => "failed",
        }
    }
}

/// What a job asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Create,
    Remix,
    Edit,
    Extend,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Create => "create",
            JobKind::Remix => "remix",
            JobKind::Edit => "edit",
            JobKind::Extend => "extend",
        }
    }

    pub fn parse(s: &str) -> Option<JobKind> {
        [JobKind::Create, JobKind::Remix, JobKind::Edit, JobKind::Extend]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// The downloadable assets of a finished video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    Video,
    Thumbnail,
    Spritesheet,
}

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::Video, Variant::Thumbnail, Variant::Spritesheet];

    pub fn parse(s: &str) -> Option<Variant> {
        match s {
            "video" => Some(Variant::Video),
            "thumbnail" => Some(Variant::Thumbnail),
            "spritesheet" => Some(Variant::Spritesheet),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Video => "video",
            Variant::Thumbnail => "thumbnail",
            Variant::Spritesheet => "spritesheet",
        }
    }

    /// The content types the Sora API served (MP4, WebP thumbnail, JPEG spritesheet).
    pub fn content_type(self) -> &'static str {
        match self {
            Variant::Video => "video/mp4",
            Variant::Thumbnail => "image/webp",
            Variant::Spritesheet => "image/jpeg",
        }
    }

    pub fn file_name(self) -> &'static str {
        match self {
            Variant::Video => "video.mp4",
            Variant::Thumbnail => "thumbnail.webp",
            Variant::Spritesheet => "spritesheet.jpg",
        }
    }
}

/// One stored asset of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    pub variant: Variant,
    /// Key in asset storage.
    pub key: String,
    pub bytes: u64,
    pub sha256: String,
}

/// A failure as the client sees it on the video object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    pub code: String,
    pub message: String,
}

/// A stored input the request uploaded or referenced (reference image, source video).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum InputRef {
    /// Bytes the client uploaded (or sent as a data URL), kept in asset storage under `key`.
    Stored {
        key: String,
        content_type: String,
        bytes: u64,
    },
    /// A URL the backend is given as is.
    Url { url: String },
    /// An OpenAI Files id; kept for backends that understand it.
    FileId { file_id: String },
    /// One of our own videos.
    Video { id: String },
}

/// The normalized request: everything the backend needs, persisted before dispatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NormalizedRequest {
    pub prompt: String,
    pub model: String,
    pub size: Size,
    pub seconds: Seconds,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_reference: Option<InputRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_video: Option<InputRef>,
    /// Character ids (`char_…`) the prompt may use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub characters: Vec<String>,
    /// For an extension: the seconds of the new segment (`seconds` is the stitched total).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_seconds: Option<Seconds>,
    /// The prompts and lengths the finished video is made of, oldest first (an extension adds one).
    pub segments: Vec<Segment>,
    /// For a remix, edit or extension of one of our videos: that video's job id at its backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_backend_job_id: Option<String>,
    /// The route target's own provider model and options, over the backend's (see `routing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetOverride>,
}

/// A route target's provider model and options for one job, over its backend's own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub options: serde_json::Value,
}

/// What a backend actually produced (a provider may round a duration or a size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Produced {
    pub width: u32,
    pub height: u32,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub prompt: String,
    pub seconds: u32,
}

/// The job record: the shim's system of record for one video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    /// The tenant that created it: its configured name, or in open mode the hash of its key (never the key).
    pub tenant: String,
    pub kind: JobKind,
    pub request: NormalizedRequest,
    pub remixed_from: Option<String>,
    pub backend: String,
    pub backend_version: String,
    pub backend_job_id: Option<String>,
    /// Whatever else the backend needs to find the job again (status URLs, …), as the mapping kept it.
    pub backend_data: Option<Value>,
    pub state: State,
    pub progress: u8,
    pub created_at: i64,
    pub updated_at: i64,
    pub completed_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub error: Option<JobError>,
    pub assets: Vec<Asset>,
    pub produced: Option<Produced>,
    /// When the job was created and when a backend accepted it (Unix ms).
    pub created_at_ms: i64,
    pub submitted_at_ms: Option<i64>,
    /// For a shadow job (never visible through the API): the primary job it mirrors.
    pub shadow_of: Option<String>,
    /// The moderation verdict: a prompt policy's before dispatch, or the provider's `moderation_blocked`.
    pub moderation: Option<Verdict>,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
    /// Dispatch attempts so far (retryable failures and resubmissions).
    pub attempts: u32,
    /// Not before this unix time (ms) does the worker touch the job again.
    pub next_attempt_at_ms: i64,
    /// Optimistic concurrency: bumped by every write.
    pub version: i64,
}

impl Job {
    /// A job just persisted and not yet sent anywhere (`accepted`, version 1): what admission stores for a new
    /// request, and what a shadow copy starts as. The caller sets what is particular to it.
    pub fn accepted(id: String, tenant: String, kind: JobKind, request: NormalizedRequest, backend: String) -> Job {
        let now_ms = now_unix_ms();
        Job {
            id,
            tenant,
            kind,
            request,
            remixed_from: None,
            backend,
            backend_version: String::new(),
            backend_job_id: None,
            backend_data: None,
            state: State::Accepted,
            progress: 0,
            created_at: now_ms / 1000,
            updated_at: now_ms / 1000,
            completed_at: None,
            expires_at: None,
            error: None,
            assets: Vec::new(),
            produced: None,
            created_at_ms: now_ms,
            submitted_at_ms: None,
            shadow_of: None,
            moderation: None,
            idempotency_key: None,
            request_hash: String::new(),
            attempts: 0,
            next_attempt_at_ms: 0,
            version: 1,
        }
    }

    /// Past its `expires_at`: its assets are gone (or about to be swept); the record stays.
    pub fn is_expired(&self, now: i64) -> bool {
        self.state == State::Completed && self.expires_at.is_some_and(|t| t <= now)
    }

    /// The status a client sees. Never goes backwards: a job that was generating and is resubmitted after a
    /// crash (back to `accepted`) still shows `in_progress`, since its stored progress is above zero.
    pub fn sora_status(&self) -> &'static str {
        match self.state {
            State::Accepted | State::Submitting | State::Submitted if self.progress > 0 => "in_progress",
            state => state.sora_status(),
        }
    }

    /// The Sora `VideoResource`, every required field present, `null` where there is no value.
    pub fn to_resource(&self) -> Value {
        serde_json::to_value(self.resource()).unwrap_or(Value::Null)
    }

    /// The same resource, borrowing from the job: serialised straight to bytes on the read path (a poll), with
    /// no intermediate `Value` (a map and a string per field).
    pub fn resource(&self) -> VideoResource<'_> {
        let progress = match self.state {
            State::Completed => 100,
            _ => self.progress.min(99),
        };
        VideoResource {
            id: &self.id,
            object: "video",
            model: &self.request.model,
            status: self.sora_status(),
            progress,
            created_at: self.created_at,
            completed_at: self.completed_at,
            expires_at: self.expires_at,
            prompt: &self.request.prompt,
            size: Shown(&self.request.size),
            seconds: Shown(&self.request.seconds),
            remixed_from_video_id: self.remixed_from.as_deref(),
            error: self.error.as_ref().map(|e| ResourceError {
                code: &e.code,
                message: &e.message,
            }),
        }
    }

    pub fn asset(&self, variant: Variant) -> Option<&Asset> {
        self.assets.iter().find(|a| a.variant == variant)
    }
}

/// Sora's `VideoResource` as served (see [`Job::resource`]).
#[derive(Debug, Serialize)]
pub struct VideoResource<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub model: &'a str,
    pub status: &'static str,
    pub progress: u8,
    pub created_at: i64,
    pub completed_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub prompt: &'a str,
    pub size: Shown<'a, Size>,
    pub seconds: Shown<'a, Seconds>,
    pub remixed_from_video_id: Option<&'a str>,
    pub error: Option<ResourceError<'a>>,
}

#[derive(Debug, Serialize)]
pub struct ResourceError<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

/// A value serialised as its `Display` string, written straight into the output.
#[derive(Debug)]
pub struct Shown<'a, T>(pub &'a T);

impl<T: fmt::Display> Serialize for Shown<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self.0)
    }
}

/// A character made from an uploaded clip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Character {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub created_at: i64,
    pub video_key: String,
}

impl Character {
    pub fn to_resource(&self) -> Value {
        json!({"id": self.id, "name": self.name, "created_at": self.created_at})
    }
}

/// `prefix_` + 48 hex digits, the shape of Sora's ids.
pub fn new_id(prefix: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    // One allocation, sized up front: every request makes one of these (its request id).
    let mut id = String::with_capacity(prefix.len() + 1 + 2 * bytes.len());
    id.push_str(prefix);
    id.push('_');
    for b in bytes {
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    id
}

pub fn now_unix() -> i64 {
    now_unix_ms() / 1000
}

pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A moderation decision, as recorded on the job: a configured policy's ([`crate::moderation`]) or a
/// provider's `moderation_blocked`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    /// `policy` (a rule or the endpoint of a configured policy) or `backend` (the provider refused it).
    pub source: String,
    /// The policy's name, or the backend's.
    pub by: String,
    /// `allowed` or `blocked`.
    pub verdict: String,
    /// Which rule matched (`words[2]`, `patterns[0]`, `endpoint`), when blocked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// What the endpoint or the provider said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Verdict {
    pub fn blocked(&self) -> bool {
        self.verdict == "blocked"
    }

    /// A provider's `moderation_blocked`, in the same field.
    pub fn from_backend(backend: &str, message: &str) -> Verdict {
        Verdict {
            source: "backend".into(),
            by: backend.into(),
            verdict: "blocked".into(),
            rule: None,
            reason: Some(message.into()),
        }
    }
}

/// `"never"`, or a number with a unit: `90s`, `30m`, `1h`, `7d`. `None` is never.
pub fn parse_retention(text: &str) -> Result<Option<std::time::Duration>, String> {
    let text = text.trim();
    if text == "never" {
        return Ok(None);
    }
    let bad = || format!("{text:?} is not a retention: use \"never\" or a number with s, m, h or d (\"1h\", \"30d\")");
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(bad()),
    };
    if secs == 0 {
        return Err(bad());
    }
    Ok(Some(std::time::Duration::from_secs(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        let s: Size = "1920x1080".parse().unwrap();
        assert_eq!((s.width, s.height), (1920, 1080));
        assert_eq!(s.to_string(), "1920x1080");
        for bad in ["", "1280", "1280x", "x720", "1281x720", "0x0", "99999x720", "12a0x720"] {
            assert!(bad.parse::<Size>().is_err(), "{bad}");
        }
    }

    #[test]
    fn seconds_parse() {
        assert_eq!("20".parse::<Seconds>().unwrap(), Seconds(20));
        for bad in ["0", "-4", "04", "4.0", "", "601"] {
            assert!(bad.parse::<Seconds>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_four_statuses_are_ever_shown() {
        let shown: std::collections::BTreeSet<_> = State::ALL.iter().map(|s| s.sora_status()).collect();
        assert_eq!(
            shown.into_iter().collect::<Vec<_>>(),
            ["completed", "failed", "in_progress", "queued"]
        );
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn ids_have_sora_shape() {
        let id = new_id("video");
        assert!(id.starts_with("video_") && id.len() == 6 + 48);
        assert_ne!(id, new_id("video"));
    }
}
