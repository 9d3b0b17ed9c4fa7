//! The official response schemas (`schemas/sora/`, embedded) and the [`Recorder`] every answer passes through:
//! it validates each JSON body against the schema for its route, notes `x-request-id`, keeps every 429, and
//! counts the generations the run paid for.

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use jsonschema::Validator;
use serde_json::Value;

use super::reply::Reply;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Video,
    VideoList,
    VideoDeleted,
    Character,
    Error,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Video => "video",
            Kind::VideoList => "video_list",
            Kind::VideoDeleted => "video_deleted",
            Kind::Character => "character",
            Kind::Error => "error",
        }
    }

    fn source(self) -> &'static str {
        match self {
            Kind::Video => crate::schemas::VIDEO,
            Kind::VideoList => crate::schemas::VIDEO_LIST,
            Kind::VideoDeleted => crate::schemas::VIDEO_DELETED,
            Kind::Character => crate::schemas::CHARACTER,
            Kind::Error => crate::schemas::ERROR,
        }
    }
}

const KINDS: [Kind; 5] = [
    Kind::Video,
    Kind::VideoList,
    Kind::VideoDeleted,
    Kind::Character,
    Kind::Error,
];

type Compiled = Vec<(Kind, Result<Validator, String>)>;

fn compiled() -> &'static Compiled {
    static SCHEMAS: OnceLock<Compiled> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        KINDS
            .iter()
            .map(|&kind| {
                let validator = serde_json::from_str::<Value>(kind.source())
                    .map_err(|e| e.to_string())
                    .and_then(|v| jsonschema::draft202012::new(&v).map_err(|e| e.to_string()));
                (kind, validator)
            })
            .collect()
    })
}

/// Every violation of `kind`'s schema, as `/json/pointer: message` (empty when valid).
pub fn violations(kind: Kind, value: &Value) -> Vec<String> {
    match compiled().iter().find(|(k, _)| *k == kind) {
        Some((_, Ok(validator))) => validator
            .iter_errors(value)
            .map(|e| {
                let at = e.instance_path().to_string();
                format!("{}: {e}", if at.is_empty() { "/" } else { at.as_str() })
            })
            .collect(),
        Some((_, Err(e))) => vec![format!("schema {} does not compile: {e}", kind.name())],
        None => vec![format!("schema {} missing", kind.name())],
    }
}

/// Which schema a JSON answer of the Sora API must match (`path` is relative to the base URL).
pub fn for_response(method: &str, path: &str, status: u16) -> Option<Kind> {
    if status >= 400 {
        return Some(Kind::Error);
    }
    if status != 200 {
        return None;
    }
    let path = path.split('?').next().unwrap_or("");
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match (method, parts.as_slice()) {
        ("GET", ["videos"]) => Some(Kind::VideoList),
        ("POST", ["videos"] | ["videos", "edits" | "extensions"] | ["videos", _, "remix"]) => Some(Kind::Video),
        ("POST", ["videos", "characters"]) | ("GET", ["videos", "characters", _]) => Some(Kind::Character),
        ("GET", ["videos", _]) => Some(Kind::Video),
        ("DELETE", ["videos", _]) => Some(Kind::VideoDeleted),
        _ => None,
    }
}

/// True for a POST that starts a generation when it succeeds.
fn generates(method: &str, path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    method == "POST"
        && matches!(
            parts.as_slice(),
            ["videos"] | ["videos", "edits" | "extensions"] | ["videos", _, "remix"]
        )
}

/// What the run saw, across every scenario.
#[derive(Debug, Default)]
pub struct Recorder {
    pub responses: usize,
    pub schema_violations: Vec<String>,
    pub missing_request_id: Vec<String>,
    pub duplicate_request_ids: Vec<String>,
    request_ids: HashSet<String>,
    /// Every 429: where, and its headers (`retry-after`, `x-ratelimit-*`) as `name: value`.
    pub rate_limited: Vec<(String, Vec<String>, bool)>,
    /// New video id → seconds requested.
    generations: BTreeMap<String, u32>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Notes one answer. `requested_seconds` is the `seconds` field sent, if any (an extension costs what it
    /// adds, not the stitched total it reports).
    pub fn record(&mut self, reply: &Reply, requested_seconds: Option<&str>) {
        self.responses += 1;
        let method = reply.method.as_str();
        let what = reply.what();
        match reply.header("x-request-id") {
            None => self.missing_request_id.push(what.clone()),
            Some(id) => {
                if !self.request_ids.insert(id.to_owned()) {
                    self.duplicate_request_ids.push(format!("{what}: {id}"));
                }
            }
        }
        let json = reply.json();
        if let Some(kind) = for_response(method, &reply.path, reply.status) {
            // A 416's body is not part of the contract.
            if reply.status != 416 || json.is_some() {
                match &json {
                    None => self.schema_violations.push(format!(
                        "{what}: expected a JSON {} body, got: {}",
                        kind.name(),
                        reply.snippet()
                    )),
                    Some(v) => {
                        for e in violations(kind, v) {
                            self.schema_violations.push(format!("{what}: {}: {e}", kind.name()));
                        }
                    }
                }
            }
        }
        if reply.status == 429 {
            let headers = reply
                .headers
                .iter()
                .filter(|(n, _)| n.as_str() == "retry-after" || n.as_str().starts_with("x-ratelimit-"))
                .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("?")))
                .collect();
            let enveloped = json.as_ref().is_some_and(|v| violations(Kind::Error, v).is_empty());
            self.rate_limited.push((what, headers, enveloped));
        }
        if reply.status == 200
            && generates(method, &reply.path)
            && let Some(v) = &json
            && let Some(id) = v.get("id").and_then(Value::as_str)
        {
            let extension = reply.path.ends_with("/extensions");
            let seconds = if extension {
                requested_seconds
            } else {
                v.get("seconds").and_then(Value::as_str)
            };
            let seconds = seconds.and_then(|s| s.parse().ok()).unwrap_or(0);
            self.generations.entry(id.to_owned()).or_insert(seconds);
        }
    }

    /// Videos this run caused to be generated, and their seconds.
    pub fn cost(&self) -> (usize, u32) {
        (self.generations.len(), self.generations.values().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_schema_compiles() {
        for kind in KINDS {
            assert!(!violations(kind, &json!(null)).is_empty(), "{kind:?} accepts null");
            assert!(!violations(kind, &json!(null))[0].contains("does not compile"));
        }
        let err = json!({"error": {"message": "m", "type": "invalid_request_error", "param": null, "code": null}});
        assert!(violations(Kind::Error, &err).is_empty());
        let bad = json!({"error": {"message": "m"}});
        assert!(
            violations(Kind::Error, &bad)[0].starts_with("/error: "),
            "{:?}",
            violations(Kind::Error, &bad)
        );
    }

    #[test]
    fn routes_to_schemas() {
        assert_eq!(for_response("GET", "/videos?limit=2", 200), Some(Kind::VideoList));
        assert_eq!(for_response("POST", "/videos/video_1/remix", 200), Some(Kind::Video));
        assert_eq!(
            for_response("GET", "/videos/characters/char_1", 200),
            Some(Kind::Character)
        );
        assert_eq!(for_response("DELETE", "/videos/video_1", 200), Some(Kind::VideoDeleted));
        assert_eq!(for_response("GET", "/videos/video_1/content", 200), None);
        assert_eq!(for_response("GET", "/videos/video_1/content", 404), Some(Kind::Error));
        assert!(generates("POST", "/videos/extensions"));
        assert!(!generates("POST", "/videos/characters"));
    }
}
