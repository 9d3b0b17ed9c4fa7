//! Every documented error (status, envelope, `param`), tenancy, idempotency, and the checks over the whole
//! run: `x-request-id` on every answer, rate-limit headers on every 429, every body against its schema.

use bytes::Bytes;
use hyper::Method;
use serde_json::{Value, json};

use super::Profile;
use super::checks::{Checked, Param, Stop, ensure, expect_error, expect_ok, fail, str_field};
use super::client::{Body, Form};
use super::context::{Ctx, SOURCE_MODEL, SOURCE_SECONDS};
use super::schema::Kind;

/// Requests in the `full` profile's burst, looking for a 429.
const BURST: usize = 40;

pub async fn idempotency(ctx: &Ctx) -> Checked<String> {
    let c = ctx
        .created()
        .await
        .map_err(|e| Stop::Skip(format!("no source video ({e})")))?;
    let key = [("idempotency-key", c.idempotency_key.as_str())];
    let r = ctx
        .api
        .call(Method::POST, "/videos", ctx.key(), &key, Body::Json(c.body.clone()))
        .await?;
    let v = expect_ok(&r, Kind::Video)?;
    let id = str_field(&v, "id")?;
    ensure(id == c.id, || {
        format!(
            "the same Idempotency-Key and body created another video, {id} (first {})",
            c.id
        )
    })?;
    let mut other = c.body.clone();
    other["prompt"] = Value::from(ctx.prompt("A different prompt under the same key"));
    let r = ctx
        .api
        .call(Method::POST, "/videos", ctx.key(), &key, Body::Json(other))
        .await?;
    if r.status == 200 {
        let got = r.json().map(|v| v["id"].clone()).unwrap_or(Value::Null);
        return fail(format!(
            "the same Idempotency-Key with another body answered 200 (video {got}), expected 409"
        ));
    }
    expect_error(&r, 409, Param::Any)?;
    Ok(format!("replay answered {id}; another body under the key answered 409"))
}

/// A create that must be refused: it is never meant to generate anything.
async fn refused(ctx: &Ctx, body: Value, param: &str) -> Checked<String> {
    let r = ctx.api.post_json("/videos", ctx.key(), &body).await?;
    let err = expect_error(&r, 400, Param::Is(param))?;
    Ok(format!(
        "400 {}: {}",
        err["error"]["code"].as_str().unwrap_or("-"),
        err["error"]["message"].as_str().unwrap_or("")
    ))
}

pub async fn bad_size(ctx: &Ctx) -> Checked<String> {
    refused(
        ctx,
        json!({"prompt": ctx.prompt("Bad size"), "model": SOURCE_MODEL, "size": "123x456", "seconds": SOURCE_SECONDS}),
        "size",
    )
    .await
}

pub async fn bad_seconds(ctx: &Ctx) -> Checked<String> {
    refused(
        ctx,
        json!({"prompt": ctx.prompt("Bad seconds"), "model": SOURCE_MODEL, "seconds": "15"}),
        "seconds",
    )
    .await
}

pub async fn missing_prompt(ctx: &Ctx) -> Checked<String> {
    refused(ctx, json!({"model": SOURCE_MODEL, "seconds": SOURCE_SECONDS}), "prompt").await?;
    let form = Form::new().text("model", SOURCE_MODEL).text("seconds", SOURCE_SECONDS);
    expect_error(
        &ctx.api.post_form("/videos", ctx.key(), form).await?,
        400,
        Param::Is("prompt"),
    )?;
    Ok("400 for JSON and multipart".into())
}

pub async fn malformed_json(ctx: &Ctx) -> Checked<String> {
    let body = Body::Raw {
        content_type: "application/json".into(),
        bytes: Bytes::from_static(b"{\"prompt\": "),
    };
    let r = ctx.api.call(Method::POST, "/videos", ctx.key(), &[], body).await?;
    let err = expect_error(&r, 400, Param::Null)?;
    Ok(format!("400: {}", err["error"]["message"].as_str().unwrap_or("")))
}

pub async fn oversize_body(ctx: &Ctx) -> Checked<String> {
    let limit = usize::try_from(ctx.opts.max_body_bytes).unwrap_or(usize::MAX / 2);
    let body = json!({"prompt": "x".repeat(limit + 1024)});
    let r = ctx.api.post_json("/videos", ctx.key(), &body).await?;
    expect_error(&r, 413, Param::Any)?;
    Ok(format!("413 for {} bytes", limit + 1024 + 14))
}

/// Retrieve, content, delete and remix of `id` with `key` all answer 404.
async fn all_404(ctx: &Ctx, id: &str, key: Option<&str>) -> Checked<()> {
    let path = format!("/videos/{id}");
    let remix = json!({"prompt": ctx.prompt("Not yours")});
    for r in [
        ctx.api.get(&path, key).await?,
        ctx.api.get(&format!("{path}/content"), key).await?,
        ctx.api.delete(&path, key).await?,
        ctx.api.post_json(&format!("{path}/remix"), key, &remix).await?,
    ] {
        expect_error(&r, 404, Param::Any)?;
    }
    Ok(())
}

pub async fn unknown_id(ctx: &Ctx) -> Checked<String> {
    let id = format!("video_conformance{}missing", ctx.run_id);
    all_404(ctx, &id, ctx.key()).await?;
    Ok(format!("404 for {id} on retrieve, content, delete and remix"))
}

pub async fn missing_key(ctx: &Ctx) -> Checked<String> {
    let prompt = json!({"prompt": ctx.prompt("No key")});
    for r in [
        ctx.api.get("/videos", None).await?,
        ctx.api.post_json("/videos", None, &prompt).await?,
        ctx.api.get("/videos/video_123", None).await?,
    ] {
        expect_error(&r, 401, Param::Any)?;
    }
    Ok("401 on list, create and retrieve".into())
}

pub async fn other_key(ctx: &Ctx) -> Checked<String> {
    let other = ctx.other_key()?;
    let (id, _) = ctx.source().await?;
    all_404(ctx, id, Some(other)).await?;
    let list = expect_ok(&ctx.api.get("/videos?limit=100", Some(other)).await?, Kind::VideoList)?;
    let listed = list["data"].as_array().is_some_and(|d| d.iter().any(|v| v["id"] == id));
    ensure(!listed, || format!("the second key lists video {id}"))?;
    let mine = expect_ok(&ctx.api.get(&format!("/videos/{id}"), ctx.key()).await?, Kind::Video)?;
    ensure(mine["status"] == "completed", || {
        format!("after the second key's delete, the video reads {}", mine["status"])
    })?;
    Ok("404 on retrieve, content, delete and remix; not listed; still there for its owner".into())
}

pub async fn bad_variant(ctx: &Ctx) -> Checked<String> {
    let (id, _) = ctx.source().await?;
    let r = ctx
        .api
        .get(&format!("/videos/{id}/content?variant=mp4"), ctx.key())
        .await?;
    let err = expect_error(&r, 400, Param::Is("variant"))?;
    Ok(format!("400: {}", err["error"]["message"].as_str().unwrap_or("")))
}

pub async fn request_ids(ctx: &Ctx) -> Checked<String> {
    // A few answers of its own, so the check means something when run alone.
    ctx.api.get("/videos?limit=1", ctx.key()).await?;
    ctx.api
        .get(&format!("/videos/video_conformance{}none", ctx.run_id), ctx.key())
        .await?;
    ctx.api.get("/videos", None).await?;
    let rec = ctx.api.recorder();
    if let Some(first) = rec.missing_request_id.first() {
        return fail(format!(
            "{} of {} answers without x-request-id (first: {first})",
            rec.missing_request_id.len(),
            rec.responses
        ));
    }
    if let Some(first) = rec.duplicate_request_ids.first() {
        return fail(format!("x-request-id repeated: {first}"));
    }
    Ok(format!("{} answers, each with its own x-request-id", rec.responses))
}

pub async fn rate_limit(ctx: &Ctx) -> Checked<String> {
    if ctx.opts.profile == Profile::Full {
        let burst = (0..BURST).map(|_| ctx.api.get("/videos?limit=1", ctx.key()));
        for r in futures_util::future::join_all(burst).await {
            r?;
        }
    }
    let rec = ctx.api.recorder();
    if rec.rate_limited.is_empty() {
        return Err(Stop::Skip(format!("no 429 among the run's {} answers", rec.responses)));
    }
    for (what, headers, enveloped) in &rec.rate_limited {
        ensure(!headers.is_empty(), || {
            format!("{what}: no retry-after or x-ratelimit-* header")
        })?;
        ensure(*enveloped, || format!("{what}: the body is not the error envelope"))?;
    }
    Ok(format!(
        "{} answers were 429, each with rate-limit headers",
        rec.rate_limited.len()
    ))
}

pub async fn every_response(ctx: &Ctx) -> Checked<String> {
    let rec = ctx.api.recorder();
    match rec.schema_violations.first() {
        // A check that saw nothing proves nothing.
        None if rec.responses == 0 => fail("no answers were received, so no schema was checked".to_owned()),
        None => Ok(format!("{} answers, every JSON body valid", rec.responses)),
        Some(first) => fail(format!(
            "{} schema violations in {} answers; first: {first}",
            rec.schema_violations.len(),
            rec.responses
        )),
    }
}
