//! Mapping files, second stage: every jq expression compiled, every table checked, into a [`Mapping`] that
//! cannot hold a bad value. Problems are reported as `file: key: message`, all at once.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::format::{RawErrorRule, RawMapping, RawRequest};
use super::jq::Expr;
use crate::video::{JobKind, Seconds, Size};

/// Mappings shipped in the binary, usable by name (`mapping = "openai"`).
pub const BUILT_IN: &[(&str, &str)] = &[
    ("openai", include_str!("../../mappings/openai.toml")),
    ("runway", include_str!("../../mappings/runway.toml")),
    ("replicate", include_str!("../../mappings/replicate.toml")),
    ("fal", include_str!("../../mappings/fal.toml")),
    ("veo-gemini", include_str!("../../mappings/veo-gemini.toml")),
    ("veo-vertex", include_str!("../../mappings/veo-vertex.toml")),
    ("seedance", include_str!("../../mappings/seedance.toml")),
    ("comfyui", include_str!("../../mappings/comfyui.toml")),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Reject,
    Nearest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageMode {
    /// `.image` is a data URI (or the https URL the client gave).
    DataUri,
    /// `.image_base64` and `.image_mime_type` carry the bytes; a client's URL is refused (we do not fetch it).
    Base64,
    /// Sent first by the `[upload]` step; `.image` is what that step's `image` expression gives.
    Upload,
    None,
}

/// What a provider state means to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateClass {
    Queued,
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub method: hyper::Method,
    pub path: Expr,
    pub body: Option<Expr>,
}

/// The `[upload]` step: the reference image as a multipart file, before the create.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub step: Step,
    pub field: String,
    pub form: Option<Expr>,
    pub image: Expr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    Rejected,
    Retry,
    Ambiguous,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ErrorRule {
    pub when: Expr,
    pub kind: RuleKind,
    pub code: String,
    pub message: Option<Expr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub name: String,
    pub version: String,
    pub resubmit_after_lost: bool,
    pub secrets: Vec<String>,
    pub auth_headers: Vec<(String, Expr)>,
    pub auth_query: Vec<(String, Expr)>,
    pub token: Option<super::token::TokenSpec>,
    pub operations: Vec<JobKind>,
    pub size_policy: Policy,
    pub sizes: Vec<(Size, Value)>,
    pub seconds_policy: Policy,
    pub seconds: Vec<(Seconds, Value)>,
    pub images: ImageMode,
    pub create: Step,
    pub job_id: Expr,
    pub job_data: Option<Expr>,
    pub poll: Step,
    pub state: Expr,
    pub progress: Option<Expr>,
    pub error: Option<Expr>,
    pub result: Option<Step>,
    pub upload: Option<Upload>,
    pub callback: Option<Callback>,
    pub outputs: Vec<(crate::video::Variant, Expr)>,
    pub download_auth: bool,
    pub download_auth_hosts: Vec<String>,
    pub states: BTreeMap<String, StateClass>,
    pub errors: Vec<ErrorRule>,
}

/// How a provider signs its callbacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackVerify {
    /// Standard Webhooks (Replicate): HMAC-SHA256 with the key in the named backend secret.
    StandardWebhooks { secret: String },
    /// fal: Ed25519 over request id, user id, timestamp and the body's SHA-256, keys from a JWKS.
    FalEd25519 { jwks_url: String },
}

/// `[callback]`, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Callback {
    pub verify: CallbackVerify,
    pub job_id: Option<Expr>,
    pub response: Expr,
    pub result: Option<Expr>,
}

#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct MappingError(pub Vec<String>);

struct Problems<'a> {
    file: &'a str,
    lines: Vec<String>,
}

impl Problems<'_> {
    fn add(&mut self, key: &str, message: impl std::fmt::Display) {
        self.lines.push(format!("{}: {key}: {message}", self.file));
    }

    fn expr(&mut self, key: &str, code: &str) -> Option<Expr> {
        match Expr::compile(code) {
            Ok(e) => Some(e),
            Err(e) => {
                self.add(key, e);
                None
            }
        }
    }

    fn opt_expr(&mut self, key: &str, code: Option<&String>) -> Option<Option<Expr>> {
        match code {
            None => Some(None),
            Some(c) => self.expr(key, c).map(Some),
        }
    }
}

/// Loads a mapping by built-in name or from a file path.
pub fn load(reference: &str, base_dir: &Path) -> Result<Mapping, MappingError> {
    // Built-in names are tried first: a file named exactly like one ("openai", no extension) is never read.
    if let Some((_, text)) = BUILT_IN.iter().find(|(name, _)| *name == reference) {
        return compile(&format!("<built-in mapping {reference}>"), text);
    }
    let path = base_dir.join(reference);
    let file = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|e| {
        let known: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
        MappingError(vec![format!(
            "{file}: cannot read ({e}); built-in mappings are: {}",
            known.join(", ")
        )])
    })?;
    compile(&file, &text)
}

pub fn compile(file: &str, text: &str) -> Result<Mapping, MappingError> {
    let raw: RawMapping =
        toml::from_str(text).map_err(|e| MappingError(vec![format!("{file}: {}", e.to_string().trim_end())]))?;
    let mut p = Problems {
        file,
        lines: Vec::new(),
    };
    let mapping = build(raw, &mut p);
    // build() can return a Mapping after recording problems (placeholders stand in), so the list decides.
    match mapping {
        Some(m) if p.lines.is_empty() => Ok(m),
        _ => Err(MappingError(p.lines)),
    }
}

fn policy(p: &mut Problems, key: &str, value: &str) -> Policy {
    match value {
        "reject" => Policy::Reject,
        "nearest" => Policy::Nearest,
        other => {
            p.add(key, format!("unknown policy {other:?}; use \"reject\" or \"nearest\""));
            Policy::Reject
        }
    }
}

fn step(p: &mut Problems, key: &str, raw: &RawRequest) -> Option<Step> {
    let method = match raw.method.to_ascii_uppercase().as_str() {
        "GET" => hyper::Method::GET,
        "POST" => hyper::Method::POST,
        "PUT" => hyper::Method::PUT,
        "DELETE" => hyper::Method::DELETE,
        other => {
            p.add(&format!("{key}.method"), format!("unsupported method {other:?}"));
            return None;
        }
    };
    let path = p.expr(&format!("{key}.path"), &raw.path)?;
    let body = p.opt_expr(&format!("{key}.body"), raw.body.as_ref())?;
    Some(Step { method, path, body })
}

fn to_json(v: &toml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn error_rule(p: &mut Problems, i: usize, r: &RawErrorRule) -> Option<ErrorRule> {
    let key = format!("errors[{i}]");
    let kind = match r.kind.as_str() {
        "rejected" => RuleKind::Rejected,
        "retry" => RuleKind::Retry,
        "ambiguous" => RuleKind::Ambiguous,
        other => {
            p.add(
                &format!("{key}.kind"),
                format!("unknown kind {other:?}; use rejected, retry or ambiguous"),
            );
            return None;
        }
    };
    if kind == RuleKind::Rejected && r.code.is_none() {
        p.add(
            &format!("{key}.code"),
            "a rejected rule needs the Sora error code to report",
        );
    }
    Some(ErrorRule {
        when: p.expr(&format!("{key}.when"), &r.when)?,
        kind,
        // Only a rejected rule's code reaches the client; retry and ambiguous rules keep this placeholder.
        code: r.code.clone().unwrap_or_else(|| "backend_error".into()),
        message: p.opt_expr(&format!("{key}.message"), r.message.as_ref())?,
    })
}

fn token_spec(p: &mut Problems, t: &super::format::RawToken, secrets: &[String]) -> Option<super::token::TokenSpec> {
    let mut secret = |field: &str, value: &Option<String>| -> Option<String> {
        match value {
            Some(name) if secrets.contains(name) => Some(name.clone()),
            Some(name) => {
                p.add(
                    &format!("auth.token.{field}"),
                    format!("{name:?} is not listed in auth.secrets"),
                );
                None
            }
            None => {
                p.add(&format!("auth.token.{field}"), "missing");
                None
            }
        }
    };
    match t.kind.as_str() {
        "google_service_account" => Some(super::token::TokenSpec::GoogleServiceAccount {
            secret: secret("secret", &t.secret)?,
            scope: t
                .scope
                .clone()
                .unwrap_or_else(|| "https://www.googleapis.com/auth/cloud-platform".into()),
        }),
        "hs256_jwt" => {
            // Both looked up before `?`, so a token missing both fields is reported for both.
            let access_key = secret("access_key", &t.access_key);
            let secret_key = secret("secret_key", &t.secret_key);
            Some(super::token::TokenSpec::Hs256Jwt {
                access_key: access_key?,
                secret_key: secret_key?,
                ttl: t.ttl_secs.unwrap_or(1800),
            })
        }
        other => {
            p.add(
                "auth.token.kind",
                format!("unknown token kind {other:?}; use google_service_account or hs256_jwt"),
            );
            None
        }
    }
}

fn build(raw: RawMapping, p: &mut Problems) -> Option<Mapping> {
    let caps = &raw.capabilities;
    let mut operations = Vec::new();
    for op in &caps.operations {
        match JobKind::parse(op) {
            Some(k) => operations.push(k),
            None => p.add("capabilities.operations", format!("unknown operation {op:?}")),
        }
    }
    if !operations.contains(&JobKind::Create) {
        p.add("capabilities.operations", "must include \"create\"");
    }
    let mut sizes = Vec::new();
    for (k, v) in &caps.sizes {
        match k.parse::<Size>() {
            Ok(s) => sizes.push((s, to_json(v))),
            Err(e) => p.add("capabilities.sizes", e),
        }
    }
    let mut seconds = Vec::new();
    for (k, v) in &caps.seconds {
        match k.parse::<Seconds>() {
            Ok(s) => seconds.push((s, to_json(v))),
            Err(e) => p.add("capabilities.seconds", e),
        }
    }
    if sizes.is_empty() || seconds.is_empty() {
        p.add("capabilities", "needs at least one size and one duration");
    }
    let images = match caps.images.as_str() {
        "data_uri" => ImageMode::DataUri,
        "base64" => ImageMode::Base64,
        "upload" => ImageMode::Upload,
        "none" => ImageMode::None,
        other => {
            p.add(
                "capabilities.images",
                format!("unknown mode {other:?}; use \"data_uri\", \"base64\", \"upload\" or \"none\""),
            );
            ImageMode::None
        }
    };
    let mut states = BTreeMap::new();
    for (provider_state, ours) in &raw.states {
        let class = match ours.as_str() {
            "queued" => StateClass::Queued,
            "running" => StateClass::Running,
            "done" => StateClass::Done,
            "failed" => StateClass::Failed,
            other => {
                p.add(
                    &format!("states.{provider_state}"),
                    format!("{other:?} is not one of queued, running, done, failed"),
                );
                continue;
            }
        };
        states.insert(provider_state.clone(), class);
    }
    if !states.values().any(|c| *c == StateClass::Done) {
        p.add("states", "no provider state maps to \"done\"");
    }
    let mut auth_headers = Vec::new();
    for (name, code) in &raw.auth.headers {
        if let Some(e) = p.expr(&format!("auth.headers.{name}"), code) {
            auth_headers.push((name.clone(), e));
        }
    }
    let mut auth_query = Vec::new();
    for (name, code) in &raw.auth.query {
        if let Some(e) = p.expr(&format!("auth.query.{name}"), code) {
            auth_query.push((name.clone(), e));
        }
    }
    let token = raw
        .auth
        .token
        .as_ref()
        .and_then(|t| token_spec(p, t, &raw.auth.secrets));
    let mut outputs = vec![];
    for (variant, code) in [
        (crate::video::Variant::Video, Some(&raw.outputs.video)),
        (crate::video::Variant::Thumbnail, raw.outputs.thumbnail.as_ref()),
        (crate::video::Variant::Spritesheet, raw.outputs.spritesheet.as_ref()),
    ] {
        if let Some(Some(e)) = p.opt_expr(&format!("outputs.{}", variant.as_str()), code) {
            outputs.push((variant, e));
        }
    }
    let errors: Vec<ErrorRule> = raw
        .errors
        .iter()
        .enumerate()
        .filter_map(|(i, r)| error_rule(p, i, r))
        .collect();
    let size_policy = policy(p, "capabilities.size_policy", &caps.size_policy);
    let seconds_policy = policy(p, "capabilities.seconds_policy", &caps.seconds_policy);
    let create = step(p, "create", &raw.create);
    let poll = step(p, "poll", &raw.poll);
    let result = match &raw.result {
        Some(r) => Some(step(p, "result", r)?),
        None => None,
    };
    let upload = match (&raw.upload, images) {
        (Some(u), ImageMode::Upload) => {
            // An upload's body is the multipart form built at run time, so its step has no jq body.
            let as_request = super::format::RawRequest {
                method: u.method.clone(),
                path: u.path.clone(),
                body: None,
                job_id: None,
                job_data: None,
                state: None,
                progress: None,
                error: None,
            };
            let step = step(p, "upload", &as_request);
            let form = p.opt_expr("upload.form", u.form.as_ref())?;
            let image = p.expr("upload.image", &u.image);
            if u.field.is_empty() {
                p.add("upload.field", "must name the form part that carries the file");
            }
            Some(Upload {
                step: step?,
                field: u.field.clone(),
                form,
                image: image?,
            })
        }
        (None, ImageMode::Upload) => {
            p.add(
                "upload",
                "missing: capabilities.images = \"upload\" needs an [upload] step",
            );
            None
        }
        (Some(_), _) => {
            p.add("upload", "only used with capabilities.images = \"upload\"");
            None
        }
        (None, _) => None,
    };
    let callback = match &raw.callback {
        None => None,
        Some(c) => {
            let verify = match c.verify.as_str() {
                "standard-webhooks" => match &c.secret {
                    Some(secret) => Some(CallbackVerify::StandardWebhooks { secret: secret.clone() }),
                    None => {
                        p.add(
                            "callback.secret",
                            "missing: the backend secret that holds the signing key",
                        );
                        None
                    }
                },
                "fal-ed25519" => match &c.jwks_url {
                    Some(url) => Some(CallbackVerify::FalEd25519 { jwks_url: url.clone() }),
                    None => {
                        p.add(
                            "callback.jwks_url",
                            "missing: where the provider publishes its public keys",
                        );
                        None
                    }
                },
                other => {
                    p.add(
                        "callback.verify",
                        format!("unknown scheme {other:?}; use \"standard-webhooks\" or \"fal-ed25519\""),
                    );
                    None
                }
            };
            let job_id = p.opt_expr("callback.job_id", c.job_id.as_ref())?;
            let response = p.expr("callback.response", &c.response);
            let result = p.opt_expr("callback.result", c.result.as_ref())?;
            match (verify, response) {
                (Some(verify), Some(response)) => Some(Callback {
                    verify,
                    job_id,
                    response,
                    result,
                }),
                _ => None,
            }
        }
    };
    let job_id = match &raw.create.job_id {
        Some(c) => p.expr("create.job_id", c),
        None => {
            p.add(
                "create.job_id",
                "missing: how to read the provider's job id from the create response",
            );
            None
        }
    };
    let job_data = p.opt_expr("create.job_data", raw.create.job_data.as_ref())?;
    let state = match &raw.poll.state {
        Some(c) => p.expr("poll.state", c),
        None => {
            p.add(
                "poll.state",
                "missing: how to read the provider's state from the poll response",
            );
            None
        }
    };
    let progress = p.opt_expr("poll.progress", raw.poll.progress.as_ref())?;
    let error = p.opt_expr("poll.error", raw.poll.error.as_ref())?;
    Some(Mapping {
        name: raw.mapping.name,
        version: raw.mapping.version,
        resubmit_after_lost: raw.mapping.resubmit_after_lost,
        secrets: raw.auth.secrets,
        auth_headers,
        auth_query,
        token,
        operations,
        size_policy,
        sizes,
        seconds_policy,
        seconds,
        images,
        create: create?,
        upload,
        callback,
        job_id: job_id?,
        job_data,
        poll: poll?,
        state: state?,
        progress,
        error,
        result,
        outputs,
        download_auth: raw.download.auth,
        download_auth_hosts: raw.download.auth_hosts,
        states,
        errors,
    })
}

impl Mapping {
    /// The provider value for a Sora size, by the size policy; `Err` lists the sizes offered.
    pub fn map_size(&self, size: Size) -> Result<(Size, Value), Vec<String>> {
        pick(
            &self.sizes,
            self.size_policy,
            |s| s == &size,
            |s| {
                // Nearest: same orientation first, then closest pixel count.
                // A square counts as landscape; 1 << 40 outweighs any realistic pixel-count gap, so orientation wins.
                let orient = |w: u32, h: u32| w >= h;
                let penalty = if orient(s.width, s.height) == orient(size.width, size.height) {
                    0
                } else {
                    1 << 40
                };
                penalty
                    + (i64::from(s.width) * i64::from(s.height) - i64::from(size.width) * i64::from(size.height))
                        .unsigned_abs()
            },
        )
    }

    /// The size and length this mapping's provider makes for a request of `size` and `seconds`: the same, or the
    /// nearest it offers where the policy is `nearest`; `None` where it refuses either.
    pub fn delivers(&self, size: Size, seconds: Seconds) -> Option<(Size, Seconds)> {
        Some((self.map_size(size).ok()?.0, self.map_seconds(seconds).ok()?.0))
    }

    pub fn map_seconds(&self, seconds: Seconds) -> Result<(Seconds, Value), Vec<String>> {
        pick(
            &self.seconds,
            self.seconds_policy,
            |s| s == &seconds,
            |s| u64::from(s.0.abs_diff(seconds.0)),
        )
    }
}

fn pick<K: Copy + std::fmt::Display>(
    table: &[(K, Value)],
    policy: Policy,
    exact: impl Fn(&K) -> bool,
    distance: impl Fn(&K) -> u64,
) -> Result<(K, Value), Vec<String>> {
    if let Some((k, v)) = table.iter().find(|(k, _)| exact(k)) {
        return Ok((*k, v.clone()));
    }
    match policy {
        Policy::Reject => Err(table.iter().map(|(k, _)| k.to_string()).collect()),
        Policy::Nearest => table
            .iter()
            .min_by_key(|(k, _)| distance(k))
            .map(|(k, v)| (*k, v.clone()))
            .ok_or_else(Vec::new),
    }
}

#[cfg(test)]
mod tests;
