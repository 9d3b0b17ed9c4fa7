//! Entry points for the fuzz targets (`tests/fuzz/`, run with `cargo fuzz`) and for their regression tests
//! (`tests/fuzz_regressions.rs`, which replays every input a fuzzer ever crashed on, on stable). Each takes
//! arbitrary bytes and must return without panicking: everything it calls answers bad input with a typed error.

use std::sync::OnceLock;

use bytes::Bytes;
use hyper::HeaderMap;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};

use crate::api::body;
use crate::api::schema::RequestSchema;
use crate::mapping::compile::{self, Mapping};
use crate::mapping::jq::Expr;

/// The boundary a multipart input uses (the fuzzer finds it in the seeds).
pub const BOUNDARY: &str = "fuzzboundary";

/// The content types a body arrives with, picked by the input's first byte.
const CONTENT_TYPES: [&str; 5] = [
    "application/json",
    "multipart/form-data; boundary=fuzzboundary",
    "multipart/form-data",
    "application/json; charset=utf-8",
    "text/plain",
];

/// A request body (the first byte picks its content type) through parsing, every request schema of its
/// encoding, and the probes that read uploaded images and videos.
pub fn request_body(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()]),
    );
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    let Ok(doc) = rt.block_on(body::parse(&headers, Bytes::copy_from_slice(bytes), true)) else {
        return;
    };
    if let Ok(schemas) = crate::api::schema::loaded() {
        let fields = Value::Object(doc.fields.clone());
        let which: &[RequestSchema] = match doc.encoding {
            body::Encoding::Json => &[RequestSchema::CreateJson, RequestSchema::Remix, RequestSchema::EditJson],
            body::Encoding::Multipart => &[
                RequestSchema::CreateMultipart,
                RequestSchema::EditMultipart,
                RequestSchema::ExtendMultipart,
                RequestSchema::CreateCharacter,
            ],
        };
        for schema in which {
            let _ = schemas.check(*schema, &fields);
        }
    }
    for upload in doc.files.values() {
        let _ = crate::media::probe_image(&upload.bytes);
        let _ = crate::media::probe_mp4(&upload.bytes);
    }
}

/// The built-in mappings, compiled once.
fn mappings() -> &'static [Mapping] {
    static MAPPINGS: OnceLock<Vec<Mapping>> = OnceLock::new();
    MAPPINGS.get_or_init(|| {
        [
            "openai",
            "runway",
            "replicate",
            "fal",
            "veo-gemini",
            "veo-vertex",
            "seedance",
            "comfyui",
        ]
        .iter()
        .filter_map(|name| compile::load(name, std::path::Path::new(".")).ok())
        .collect()
    })
}

/// The input's first byte picks what it is:
/// - 0–199: a provider's answer (JSON, or text when it does not parse), read through every built-in mapping's
///   state, progress, error, job id and output expressions, as a poll, a create and a callback;
/// - 200–227: a mapping file's text, compiled;
/// - 228–255: a jq expression, compiled and run on a fixed context.
pub fn mapping_eval(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match selector {
        0..=199 => {
            let answer = serde_json::from_slice::<Value>(rest).unwrap_or_else(|_| Value::String(text.into_owned()));
            for mapping in mappings() {
                read_answer(mapping, &answer);
            }
        }
        200..=227 => {
            let _ = compile::compile("fuzz.toml", &text);
        }
        _ => {
            if let Ok(expr) = Expr::compile(&text) {
                let _ = expr.eval(&context(json!({"id": "x", "status": "done"})));
                let _ = expr.eval_string(&Value::Null);
            }
        }
    }
}

fn context(response: Value) -> Value {
    json!({
        "status": 200,
        "headers": {"content-type": "application/json"},
        "response": response,
        "step": "poll",
        "request": {"prompt": "a fox", "model": "sora-2", "size": "1280x720", "seconds": "4"},
        "target": {"model": "provider-model", "options": {}, "files": {}},
        "job": {"id": "video_1", "backend_job_id": "job-1", "data": null},
        "secrets": {},
        "base_url": "http://127.0.0.1:9",
    })
}

fn read_answer(mapping: &Mapping, answer: &Value) {
    let ctx = context(answer.clone());
    let _ = mapping.state.eval_string(&ctx);
    for expr in [&mapping.progress, &mapping.error, &mapping.job_data]
        .into_iter()
        .flatten()
    {
        if let Ok(v) = expr.eval(&ctx) {
            let _ = serde_json::from_value::<crate::video::JobError>(v);
        }
    }
    let _ = mapping.job_id.eval_string(&ctx);
    for (_, expr) in &mapping.outputs {
        let _ = expr.eval(&ctx);
    }
    if let Some(callback) = &mapping.callback {
        let payload = json!({"body": answer, "headers": {}});
        for expr in [
            Some(&callback.response),
            callback.result.as_ref(),
            callback.job_id.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            let _ = expr.eval(&payload);
        }
    }
}
