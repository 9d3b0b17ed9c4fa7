//! Request validation against the JSON Schemas in `schemas/sora/` (embedded in the binary, compiled once at
//! start-up). A violation becomes a 400 `invalid_request_error` whose `param` names the field, with the
//! wording the OpenAI API used for the same kind of mistake.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use super::error::ApiError;
use crate::schemas;

/// Every request body the API accepts, by operation and encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestSchema {
    CreateJson,
    CreateMultipart,
    Remix,
    EditJson,
    EditMultipart,
    ExtendJson,
    ExtendMultipart,
    CreateCharacter,
}

const SOURCES: [(RequestSchema, &str, &str); 8] = [
    (
        RequestSchema::CreateJson,
        "create_video.json",
        schemas::CREATE_VIDEO_JSON,
    ),
    (
        RequestSchema::CreateMultipart,
        "create_video.multipart",
        schemas::CREATE_VIDEO_MULTIPART,
    ),
    (RequestSchema::Remix, "remix_video", schemas::REMIX_VIDEO),
    (RequestSchema::EditJson, "edit_video.json", schemas::EDIT_VIDEO_JSON),
    (
        RequestSchema::EditMultipart,
        "edit_video.multipart",
        schemas::EDIT_VIDEO_MULTIPART,
    ),
    (
        RequestSchema::ExtendJson,
        "extend_video.json",
        schemas::EXTEND_VIDEO_JSON,
    ),
    (
        RequestSchema::ExtendMultipart,
        "extend_video.multipart",
        schemas::EXTEND_VIDEO_MULTIPART,
    ),
    (
        RequestSchema::CreateCharacter,
        "create_character.multipart",
        schemas::CREATE_CHARACTER,
    ),
];

#[derive(Debug, thiserror::Error)]
#[error("schema {name}: {message}")]
pub struct SchemaError {
    name: &'static str,
    message: String,
}

pub struct Schemas {
    validators: Vec<(RequestSchema, Validator)>,
}

/// Compiled once, at first use; [`loaded`] at start-up makes a broken embedded schema stop the start instead.
static SCHEMAS: std::sync::LazyLock<Result<Schemas, SchemaError>> = std::sync::LazyLock::new(Schemas::load);

/// The request schemas, compiled (the server calls this once before it listens).
pub fn loaded() -> Result<&'static Schemas, &'static SchemaError> {
    SCHEMAS.as_ref()
}

/// Validates a request body against `which` (see [`Schemas::check`]).
pub fn check(which: RequestSchema, doc: &Value) -> Result<(), ApiError> {
    loaded().map_err(|e| ApiError::internal("schema", e))?.check(which, doc)
}

impl Schemas {
    pub fn load() -> Result<Schemas, SchemaError> {
        let mut validators = Vec::with_capacity(SOURCES.len());
        for (which, name, text) in SOURCES {
            let value: Value = serde_json::from_str(text).map_err(|e| SchemaError {
                name,
                message: e.to_string(),
            })?;
            let validator = jsonschema::draft202012::new(&value).map_err(|e| SchemaError {
                name,
                message: e.to_string(),
            })?;
            validators.push((which, validator));
        }
        Ok(Schemas { validators })
    }

    /// Validates `doc`; the first violation, most useful first, becomes the error.
    pub fn check(&self, which: RequestSchema, doc: &Value) -> Result<(), ApiError> {
        let Some((_, validator)) = self.validators.iter().find(|(w, _)| *w == which) else {
            return Err(ApiError::internal("schema", format!("no schema loaded for {which:?}")));
        };
        let mut errors: Vec<ValidationError<'_>> = validator.iter_errors(doc).collect();
        errors.sort_by_key(|e| rank(e.kind()));
        match errors.into_iter().next() {
            None => Ok(()),
            Some(e) => Err(to_api_error(&e)),
        }
    }
}

/// Which violation to report when there are several: unknown and missing fields first, as the API did.
fn rank(kind: &ValidationErrorKind) -> u8 {
    match kind {
        ValidationErrorKind::AdditionalProperties { .. } => 0,
        ValidationErrorKind::Required { .. } => 1,
        ValidationErrorKind::Type { .. } => 2,
        _ => 3,
    }
}

/// `input_reference.image_url`, `characters[0].id`.
fn param_of(e: &ValidationError<'_>) -> String {
    let mut out = String::new();
    for seg in e.instance_path().iter() {
        match seg {
            LocationSegment::Property(p) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&p);
            }
            LocationSegment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a decimal",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn to_api_error(e: &ValidationError<'_>) -> ApiError {
    let param = param_of(e);
    let shown = if param.is_empty() {
        "body".to_owned()
    } else {
        param.clone()
    };
    match e.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let name = join(&param, unexpected.first().map(String::as_str).unwrap_or(""));
            ApiError::invalid(
                format!("Unknown parameter: '{name}'."),
                Some(&name),
                Some("unknown_parameter"),
            )
        }
        ValidationErrorKind::Required { property } => {
            let name = join(&param, property.as_str().unwrap_or(""));
            ApiError::invalid(
                format!("Missing required parameter: '{name}'."),
                Some(&name),
                Some("missing_required_parameter"),
            )
        }
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => format!("{t}"),
                TypeKind::Multiple(ts) => format!("{ts:?}"),
            };
            ApiError::invalid(
                format!(
                    "Invalid type for '{shown}': expected {}, but got {} instead.",
                    article(&expected),
                    json_type_name(e.instance())
                ),
                Some(&shown),
                Some("invalid_type"),
            )
        }
        ValidationErrorKind::MinLength { limit } => ApiError::invalid(
            format!(
                "Invalid '{shown}': string too short. Expected a string with minimum length {limit}, but got a string \
                 with length {} instead.",
                e.instance().as_str().map(|s| s.chars().count()).unwrap_or(0)
            ),
            Some(&shown),
            Some("string_below_min_length"),
        ),
        ValidationErrorKind::MaxLength { limit } => ApiError::invalid(
            format!(
                "Invalid '{shown}': string too long. Expected a string with maximum length {limit}, but got a string \
                 with length {} instead.",
                e.instance().as_str().map(|s| s.chars().count()).unwrap_or(0)
            ),
            Some(&shown),
            Some("string_above_max_length"),
        ),
        ValidationErrorKind::MaxItems { limit } => ApiError::invalid(
            format!("Invalid '{shown}': expected an array with maximum length {limit}."),
            Some(&shown),
            Some("array_above_max_length"),
        ),
        ValidationErrorKind::MinProperties { .. } | ValidationErrorKind::MaxProperties { .. } => ApiError::invalid(
            format!("Invalid '{shown}': provide exactly one of its fields."),
            Some(&shown),
            Some("invalid_value"),
        ),
        _ => ApiError::invalid(
            format!("Invalid value for '{shown}': {e}."),
            Some(&shown),
            Some("invalid_value"),
        ),
    }
}

fn article(t: &str) -> String {
    match t.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {t}"),
        _ => format!("a {t}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(which: RequestSchema, doc: Value) -> (String, Option<String>, Option<&'static str>) {
        match Schemas::load().unwrap().check(which, &doc) {
            Err(ApiError::InvalidRequest { message, param, code }) => (message, param, code),
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn valid_bodies_pass() {
        let s = Schemas::load().unwrap();
        s.check(
            RequestSchema::CreateJson,
            &json!({"prompt": "a cat", "seconds": "8", "size": "1280x720"}),
        )
        .unwrap();
        s.check(
            RequestSchema::CreateMultipart,
            &json!({"prompt": "a cat", "input_reference": "<binary>", "characters": [{"id": "char_1"}]}),
        )
        .unwrap();
        s.check(
            RequestSchema::EditMultipart,
            &json!({"prompt": "p", "video": {"id": "video_1"}}),
        )
        .unwrap();
    }

    #[test]
    fn violations_name_the_param() {
        let (m, p, c) = err(RequestSchema::CreateJson, json!({"seconds": "4"}));
        assert_eq!(
            (m.as_str(), p.as_deref(), c),
            (
                "Missing required parameter: 'prompt'.",
                Some("prompt"),
                Some("missing_required_parameter")
            )
        );
        let (m, p, c) = err(RequestSchema::CreateJson, json!({"prompt": "x", "duration": 5}));
        assert_eq!(
            (m.as_str(), p.as_deref(), c),
            (
                "Unknown parameter: 'duration'.",
                Some("duration"),
                Some("unknown_parameter")
            )
        );
        let (m, p, c) = err(RequestSchema::CreateJson, json!({"prompt": "x", "seconds": 8}));
        assert_eq!(p.as_deref(), Some("seconds"));
        assert_eq!(c, Some("invalid_type"));
        assert!(m.contains("but got an integer instead"), "{m}");
        let (_, p, c) = err(RequestSchema::CreateJson, json!({"prompt": ""}));
        assert_eq!((p.as_deref(), c), (Some("prompt"), Some("string_below_min_length")));
        let (_, p, _) = err(
            RequestSchema::CreateJson,
            json!({"prompt": "x", "input_reference": {"image_url": "u", "bogus": 1}}),
        );
        assert_eq!(p.as_deref(), Some("input_reference.bogus"));
        let (_, p, _) = err(RequestSchema::EditJson, json!({"prompt": "x", "video": {}}));
        assert_eq!(p.as_deref(), Some("video.id"));
    }
}
