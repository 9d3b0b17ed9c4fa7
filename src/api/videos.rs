//! Handlers for the video resource: create, list, retrieve, delete, remix, edit and extend. Each one reads and
//! checks its input, builds the normalized request and leaves persistence to [`crate::admission::Admission`].

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::http::request::Parts;
use hyper::{HeaderMap, Request};
use serde_json::Value;

mod read;

pub(crate) use self::read::owned_job;
pub use self::read::{delete, list, retrieve};

use super::body::{self, Doc, Encoding};
use super::error::ApiError;
use super::response::{Response, ok_json};
use super::schema::RequestSchema;
use super::unread::RequestBody;
use crate::admission::{NewJob, PendingUpload, request_hash};
use crate::app::App;
use crate::auth::Tenant;
use crate::config::ModelConfig;
use crate::live::Live;
use crate::media::{probe_image, probe_mp4};
use crate::video::{InputRef, Job, JobKind, NormalizedRequest, Seconds, Segment, Size, State, TargetOverride};

/// Extensions per video, as Sora allowed.
const MAX_EXTENSIONS: usize = 6;

async fn read_doc(app: &App, parts: &Parts, body: RequestBody, allow_json: bool) -> Result<Doc, ApiError> {
    body::read_doc(&app.config.server, &parts.headers, body, allow_json).await
}

fn check(doc: &Doc, json: RequestSchema, multipart: RequestSchema) -> Result<(), ApiError> {
    let which = match doc.encoding {
        Encoding::Json => json,
        Encoding::Multipart => multipart,
    };
    super::schema::check(which, &Value::Object(doc.fields.clone()))
}

/// The backend a new job of `mc`'s model goes to, with the target's own provider model and options if it has
/// any: the route's sticky pick (see `routing`).
fn route_to(
    mc: &ModelConfig,
    model: &str,
    tenant: &Tenant,
    idempotency_key: Option<&str>,
) -> (String, Option<TargetOverride>) {
    let nonce = crate::video::new_id("route");
    let target = mc.route.pick(model, &tenant.id, idempotency_key, &nonce);
    (target.backend.clone(), target.override_for_job())
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key").map(HeaderValue::to_str) {
        None => Ok(None),
        Some(Ok(k)) if !k.trim().is_empty() && k.len() <= 255 => Ok(Some(k.trim().to_owned())),
        Some(_) => Err(ApiError::invalid(
            "The Idempotency-Key header must be 1 to 255 visible ASCII characters.",
            Some("Idempotency-Key"),
            Some("invalid_value"),
        )),
    }
}

fn hash_of(kind: JobKind, target: Option<&str>, doc: &Doc) -> String {
    let files: Vec<&[u8]> = doc.files.values().map(|f| f.bytes.as_ref()).collect();
    request_hash(kind, target, &Value::Object(doc.fields.clone()), &files)
}

fn model_config<'a>(live: &'a Live, model: &str) -> Result<&'a ModelConfig, ApiError> {
    live.models.get(model).ok_or_else(|| {
        let known: Vec<String> = live.models.keys().cloned().collect();
        ApiError::invalid_value("model", model, &known)
    })
}

fn pick_size(doc: &Doc, default: Size, model: &ModelConfig) -> Result<Size, ApiError> {
    let Some(text) = doc.str("size") else {
        return Ok(default);
    };
    let allowed: Vec<String> = model.sizes.iter().map(Size::to_string).collect();
    match model.sizes.iter().find(|s| s.to_string() == text) {
        Some(size) => Ok(*size),
        None => Err(ApiError::invalid_value("size", text, &allowed)),
    }
}

fn pick_seconds(doc: &Doc, default: Seconds, model: &ModelConfig) -> Result<Seconds, ApiError> {
    let Some(text) = doc.str("seconds") else {
        return Ok(default);
    };
    let allowed: Vec<String> = model.seconds.iter().map(Seconds::to_string).collect();
    match model.seconds.iter().find(|s| s.to_string() == text) {
        Some(seconds) => Ok(*seconds),
        None => Err(ApiError::invalid_value("seconds", text, &allowed)),
    }
}

/// Checks an image input (upload or data URL) and returns what to store.
fn image_upload(bytes: Bytes, size: Size) -> Result<PendingUpload, ApiError> {
    let info = probe_image(&bytes).ok_or_else(|| {
        ApiError::invalid(
            "Invalid file format for 'input_reference'. Supported formats are: 'image/jpeg', 'image/png', and \
             'image/webp'.",
            Some("input_reference"),
            Some("invalid_image_format"),
        )
    })?;
    // As Sora did: a reference image of another size is refused, never resized.
    if (info.width, info.height) != (size.width, size.height) {
        return Err(ApiError::invalid(
            format!(
                "Inpaint image must match the requested width and height (the image is {}x{}, the video is {size}).",
                info.width, info.height
            ),
            Some("input_reference"),
            Some("invalid_value"),
        ));
    }
    Ok(PendingUpload {
        role: "input_reference",
        extension: info.content_type.trim_start_matches("image/"),
        content_type: info.content_type.to_owned(),
        bytes,
    })
}

/// `input_reference` as an uploaded file, `{image_url}` (https URL or data URL) or `{file_id}`.
fn reference_input(doc: &Doc, size: Size) -> Result<(Option<InputRef>, Vec<PendingUpload>), ApiError> {
    if let Some(upload) = doc.files.get("input_reference") {
        return Ok((None, vec![image_upload(upload.bytes.clone(), size)?]));
    }
    let Some(obj) = doc.fields.get("input_reference").and_then(Value::as_object) else {
        return Ok((None, vec![]));
    };
    // Kept as given: whether a backend can read an OpenAI file id is its own check at admission.
    if let Some(file_id) = obj.get("file_id").and_then(Value::as_str) {
        return Ok((
            Some(InputRef::FileId {
                file_id: file_id.to_owned(),
            }),
            vec![],
        ));
    }
    let url = obj.get("image_url").and_then(Value::as_str).unwrap_or("");
    let bad_url = || {
        ApiError::invalid(
            "Invalid 'input_reference.image_url': expected an https URL or a base64 data URL (data:image/png;base64,…).",
            Some("input_reference.image_url"),
            Some("invalid_value"),
        )
    };
    if let Some(rest) = url.strip_prefix("data:") {
        let (_, data) = rest.split_once(";base64,").ok_or_else(bad_url)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|_| bad_url())?;
        return Ok((None, vec![image_upload(Bytes::from(bytes), size)?]));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok((Some(InputRef::Url { url: url.to_owned() }), vec![]));
    }
    Err(bad_url())
}

async fn check_characters(app: &App, tenant: &Tenant, doc: &Doc) -> Result<Vec<String>, ApiError> {
    let Some(items) = doc.fields.get("characters").and_then(Value::as_array) else {
        return Ok(vec![]);
    };
    let mut ids = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let id = item.get("id").and_then(Value::as_str).unwrap_or("");
        match app.store.get_character(id).await? {
            // Another tenant's character is reported as not found, as its videos are.
            Some(c) if c.tenant == tenant.id => ids.push(c.id),
            _ => {
                return Err(ApiError::invalid(
                    format!("Character '{id}' not found."),
                    Some(&format!("characters[{i}].id")),
                    Some("invalid_value"),
                ));
            }
        }
    }
    Ok(ids)
}

pub async fn create(app: &App, tenant: &Tenant, req: Request<RequestBody>) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let live = app.live.load_full();
    let doc = read_doc(app, &parts, body, true).await?;
    check(&doc, RequestSchema::CreateJson, RequestSchema::CreateMultipart)?;
    let api = &live.api;
    let model = doc.str("model").unwrap_or(&api.default_model).to_owned();
    let mc = model_config(&live, &model)?;
    let size = pick_size(&doc, api.default_size, mc)?;
    let seconds = pick_seconds(&doc, api.default_seconds, mc)?;
    let (input_reference, uploads) = reference_input(&doc, size)?;
    let characters = check_characters(app, tenant, &doc).await?;
    let prompt = doc.str("prompt").unwrap_or_default().to_owned();
    let key = idempotency_key(&parts.headers)?;
    let (backend, target) = route_to(mc, &model, tenant, key.as_deref());
    let new = NewJob {
        kind: JobKind::Create,
        request: NormalizedRequest {
            segments: vec![Segment {
                prompt: prompt.clone(),
                seconds: seconds.0,
            }],
            prompt,
            model,
            size,
            seconds,
            input_reference,
            source_video: None,
            characters,
            extension_seconds: None,
            source_backend_job_id: None,
            target,
        },
        remixed_from: None,
        backend,
        idempotency_key: key,
        request_hash: hash_of(JobKind::Create, None, &doc),
        uploads,
    };
    let job = app.admission.admit(tenant, new).await?;
    Ok(ok_json(&job.to_resource()))
}

/// A source video to derive from: one of the tenant's completed videos.
async fn completed_source(app: &App, tenant: &Tenant, id: &str, param: &str) -> Result<Arc<Job>, ApiError> {
    let job = owned_job(app, tenant, id).await.map_err(|_| ApiError::NotFound {
        message: format!("Video with id '{id}' not found."),
        param: Some(param.to_owned()),
    })?;
    if job.state != State::Completed {
        return Err(ApiError::invalid(
            format!(
                "Video '{id}' is {}; only completed videos can be used as a source.",
                job.sora_status()
            ),
            Some(param),
            Some("invalid_state"),
        ));
    }
    if job.is_expired(crate::video::now_unix()) {
        return Err(ApiError::invalid(
            format!("Video '{id}' has expired: its content was deleted, so it cannot be used as a source."),
            Some(param),
            Some("invalid_state"),
        ));
    }
    Ok(job)
}

/// A derived job (remix or edit of one of our videos) keeps the source's model, size, length and backend.
fn derived(source: &Job, kind: JobKind, prompt: String) -> NormalizedRequest {
    NormalizedRequest {
        segments: vec![Segment {
            prompt: prompt.clone(),
            seconds: source.request.seconds.0,
        }],
        prompt,
        model: source.request.model.clone(),
        size: source.request.size,
        seconds: source.request.seconds,
        input_reference: None,
        // A remix is made from the source's backend job (`source_backend_job_id`), so its file is not attached.
        source_video: (kind != JobKind::Remix).then(|| InputRef::Video { id: source.id.clone() }),
        characters: vec![],
        extension_seconds: None,
        source_backend_job_id: source.backend_job_id.clone(),
        // Same backend, same provider model and options as the source.
        target: source.request.target.clone(),
    }
}

pub async fn remix(app: &App, tenant: &Tenant, id: &str, req: Request<RequestBody>) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let source = completed_source(app, tenant, id, "video_id").await?;
    let doc = read_doc(app, &parts, body, true).await?;
    check(&doc, RequestSchema::Remix, RequestSchema::Remix)?;
    let prompt = doc.str("prompt").unwrap_or_default().to_owned();
    let new = NewJob {
        kind: JobKind::Remix,
        request: derived(&source, JobKind::Remix, prompt),
        remixed_from: Some(source.id.clone()),
        backend: source.backend.clone(),
        idempotency_key: idempotency_key(&parts.headers)?,
        // The source id is in the path, not the body: hashed too, so one key reused on another video conflicts.
        request_hash: hash_of(JobKind::Remix, Some(id), &doc),
        uploads: vec![],
    };
    let job = app.admission.admit(tenant, new).await?;
    Ok(ok_json(&job.to_resource()))
}

/// The `video` of an edit or extension: one of our completed videos by id, or an uploaded MP4.
enum Source {
    Ours(Arc<Job>),
    Upload {
        info: crate::media::VideoInfo,
        upload: PendingUpload,
    },
}

async fn source_of(app: &App, tenant: &Tenant, doc: &Doc) -> Result<Source, ApiError> {
    if let Some(upload) = doc.files.get("video") {
        let info = probe_mp4(&upload.bytes).ok_or_else(|| {
            ApiError::invalid(
                "Invalid file for 'video': expected an MP4 video.",
                Some("video"),
                Some("invalid_value"),
            )
        })?;
        return Ok(Source::Upload {
            info,
            upload: PendingUpload {
                role: "source_video",
                extension: "mp4",
                content_type: "video/mp4".into(),
                bytes: upload.bytes.clone(),
            },
        });
    }
    let id = doc
        .fields
        .get("video")
        .and_then(|v| v.get("id"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok(Source::Ours(completed_source(app, tenant, id, "video.id").await?))
}

fn upload_size(info: &crate::media::VideoInfo) -> Result<Size, ApiError> {
    format!("{}x{}", info.width, info.height).parse().map_err(|_| {
        ApiError::invalid(
            format!(
                "The uploaded video's size {}x{} is not supported.",
                info.width, info.height
            ),
            Some("video"),
            Some("invalid_value"),
        )
    })
}

pub async fn edit(app: &App, tenant: &Tenant, req: Request<RequestBody>) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let live = app.live.load_full();
    let doc = read_doc(app, &parts, body, true).await?;
    check(&doc, RequestSchema::EditJson, RequestSchema::EditMultipart)?;
    let prompt = doc.str("prompt").unwrap_or_default().to_owned();
    let (request, backend, uploads) = match source_of(app, tenant, &doc).await? {
        Source::Ours(source) => (derived(&source, JobKind::Edit, prompt), source.backend.clone(), vec![]),
        Source::Upload { info, upload } => {
            // The guide: "If you upload a new video … set `model` explicitly"; we default it like a create.
            let model = doc.str("model").unwrap_or(&live.api.default_model).to_owned();
            let mc = model_config(&live, &model)?;
            let request = NormalizedRequest {
                segments: vec![Segment {
                    prompt: prompt.clone(),
                    seconds: info.seconds,
                }],
                prompt,
                model,
                size: upload_size(&info)?,
                seconds: Seconds(info.seconds),
                input_reference: None,
                source_video: None,
                characters: vec![],
                extension_seconds: None,
                source_backend_job_id: None,
                target: None,
            };
            let (backend, target) = route_to(mc, &request.model, tenant, idempotency_key(&parts.headers)?.as_deref());
            (NormalizedRequest { target, ..request }, backend, vec![upload])
        }
    };
    let new = NewJob {
        kind: JobKind::Edit,
        request,
        remixed_from: None,
        backend,
        idempotency_key: idempotency_key(&parts.headers)?,
        request_hash: hash_of(JobKind::Edit, None, &doc),
        uploads,
    };
    let job = app.admission.admit(tenant, new).await?;
    Ok(ok_json(&job.to_resource()))
}

pub async fn extend(app: &App, tenant: &Tenant, req: Request<RequestBody>) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let live = app.live.load_full();
    let doc = read_doc(app, &parts, body, true).await?;
    check(&doc, RequestSchema::ExtendJson, RequestSchema::ExtendMultipart)?;
    let prompt = doc.str("prompt").unwrap_or_default().to_owned();
    let mut source_backend_job_id = None;
    let target;
    let (model, size, mut segments, source_video, backend, uploads) = match source_of(app, tenant, &doc).await? {
        Source::Ours(source) => {
            source_backend_job_id = source.backend_job_id.clone();
            target = source.request.target.clone();
            (
                source.request.model.clone(),
                source.request.size,
                source.request.segments.clone(),
                Some(InputRef::Video { id: source.id.clone() }),
                source.backend.clone(),
                vec![],
            )
        }
        Source::Upload { info, upload } => {
            // Sora's extend request has no `model`: an uploaded video is extended with the default one.
            let model = live.api.default_model.clone();
            let (backend, picked) = route_to(
                model_config(&live, &model)?,
                &model,
                tenant,
                idempotency_key(&parts.headers)?.as_deref(),
            );
            target = picked;
            let segments = vec![Segment {
                prompt: "uploaded video".into(),
                seconds: info.seconds,
            }];
            (model, upload_size(&info)?, segments, None, backend, vec![upload])
        }
    };
    let mc = model_config(&live, &model)?;
    let extension = pick_seconds(&doc, live.api.default_seconds, mc)?;
    let so_far: u32 = segments.iter().map(|s| s.seconds).sum();
    let total = so_far + extension.0;
    // `segments` is the original plus each extension so far: more than MAX_EXTENSIONS means all are used.
    if segments.len() > MAX_EXTENSIONS {
        return Err(ApiError::invalid(
            format!("A video can be extended at most {MAX_EXTENSIONS} times."),
            Some("video"),
            Some("invalid_value"),
        ));
    }
    if total > live.api.max_total_seconds {
        return Err(ApiError::invalid(
            format!(
                "Invalid 'seconds': the extended video would be {total} seconds long; the maximum is {}.",
                live.api.max_total_seconds
            ),
            Some("seconds"),
            Some("invalid_value"),
        ));
    }
    segments.push(Segment {
        prompt: prompt.clone(),
        seconds: extension.0,
    });
    let new = NewJob {
        kind: JobKind::Extend,
        request: NormalizedRequest {
            prompt,
            model,
            size,
            seconds: Seconds(total),
            input_reference: None,
            source_video,
            characters: vec![],
            extension_seconds: Some(extension),
            segments,
            source_backend_job_id,
            target,
        },
        remixed_from: None,
        backend,
        idempotency_key: idempotency_key(&parts.headers)?,
        request_hash: hash_of(JobKind::Extend, None, &doc),
        uploads,
    };
    let job = app.admission.admit(tenant, new).await?;
    Ok(ok_json(&job.to_resource()))
}
