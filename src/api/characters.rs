//! Characters: `POST /videos/characters` (multipart: `name` + a short MP4 clip) and
//! `GET /videos/characters/{id}`. A character belongs to the tenant that made it.

use hyper::Request;
use serde_json::Value;

use super::body;
use super::error::ApiError;
use super::response::{Response, ok_json};
use super::schema::RequestSchema;
use super::unread::RequestBody;
use crate::app::App;
use crate::auth::Tenant;
use crate::media::probe_mp4;
use crate::video::{Character, new_id, now_unix};

pub async fn create(app: &App, tenant: &Tenant, req: Request<RequestBody>) -> Result<Response, ApiError> {
    let (parts, incoming) = req.into_parts();
    let doc = body::read_doc(&app.config.server, &parts.headers, incoming, false).await?;
    super::schema::check(RequestSchema::CreateCharacter, &Value::Object(doc.fields.clone()))?;
    let upload = doc.files.get("video").ok_or_else(|| {
        ApiError::invalid(
            "Missing required parameter: 'video'.",
            Some("video"),
            Some("missing_required_parameter"),
        )
    })?;
    if probe_mp4(&upload.bytes).is_none() {
        return Err(ApiError::invalid(
            "Invalid file for 'video': expected an MP4 video.",
            Some("video"),
            Some("invalid_value"),
        ));
    }
    let id = new_id("char");
    let key = format!("characters/{id}/video.mp4");
    app.assets.put_bytes(&key, &upload.bytes).await?;
    let character = Character {
        id,
        tenant: tenant.id.clone(),
        name: doc.str("name").unwrap_or_default().to_owned(),
        created_at: now_unix(),
        video_key: key,
    };
    if let Err(e) = app.store.insert_character(&character).await {
        let _ = app.assets.delete_prefix(&format!("characters/{}", character.id)).await;
        return Err(e.into());
    }
    Ok(ok_json(&character.to_resource()))
}

pub async fn retrieve(app: &App, tenant: &Tenant, id: &str) -> Result<Response, ApiError> {
    match app.store.get_character(id).await? {
        Some(c) if c.tenant == tenant.id => Ok(ok_json(&c.to_resource())),
        _ => Err(ApiError::NotFound {
            message: format!("Character with id '{id}' not found."),
            param: None,
        }),
    }
}
