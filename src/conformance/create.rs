//! The scenarios of the source video: its create (JSON, and multipart as the SDKs send it), polling it to the
//! end, and downloading its content (each variant, `Range`, content before it is ready).

use serde_json::{Value, json};

use super::Profile;
use super::checks::{Checked, Param, Stop, ensure, expect_error, expect_fields, expect_ok, expect_status, str_field};
use super::client::{Body, Form};
use super::context::{Ctx, SOURCE_MODEL, SOURCE_SECONDS, SOURCE_SIZE, check_asset_headers};
use super::media::{is_jpeg, is_webp};
use super::schema::Kind;

/// The source video's create, checked as the JSON create.
pub async fn create_json(ctx: &Ctx) -> Checked<String> {
    let c = ctx.created().await.map_err(Stop::Fail)?;
    let v = expect_ok(&c.reply, Kind::Video)?;
    let prompt = c.body["prompt"].as_str().unwrap_or("");
    expect_fields(
        &v,
        &[
            ("object", "video"),
            ("model", SOURCE_MODEL),
            ("size", SOURCE_SIZE),
            ("seconds", SOURCE_SECONDS),
            ("prompt", prompt),
        ],
        "create",
    )?;
    ensure(v["remixed_from_video_id"].is_null(), || {
        format!("create: remixed_from_video_id is {}", v["remixed_from_video_id"])
    })?;
    Ok(format!(
        "{} {} at {}%",
        c.id,
        v["status"].as_str().unwrap_or("?"),
        v["progress"]
    ))
}

fn source_form(body: &Value) -> Form {
    ["prompt", "model", "size", "seconds"]
        .iter()
        .fold(Form::new(), |f, k| f.text(k, body[*k].as_str().unwrap_or("")))
}

pub async fn create_multipart(ctx: &Ctx) -> Checked<String> {
    if ctx.opts.profile == Profile::Quick
        && let Ok(c) = ctx.created().await
    {
        let headers = [("idempotency-key", c.idempotency_key.as_str())];
        let r = ctx
            .api
            .call(
                hyper::Method::POST,
                "/videos",
                ctx.key(),
                &headers,
                Body::Form(source_form(&c.body)),
            )
            .await?;
        if r.status != 409 {
            let v = expect_ok(&r, Kind::Video)?;
            expect_fields(
                &v,
                &[
                    ("model", SOURCE_MODEL),
                    ("size", SOURCE_SIZE),
                    ("seconds", SOURCE_SECONDS),
                ],
                "multipart create",
            )?;
            let id = str_field(&v, "id")?;
            return Ok(if id == c.id {
                format!("answered with the source video {id} (its Idempotency-Key): nothing generated")
            } else {
                format!("a new video {id}: the multipart replay of the JSON create was not matched to it")
            });
        }
        // The endpoint compares bodies byte for byte: send it as a create of its own.
    }
    let body = json!({"prompt": ctx.prompt("A red kite over green hills"), "model": SOURCE_MODEL, "size": SOURCE_SIZE, "seconds": SOURCE_SECONDS});
    let r = ctx.api.post_form("/videos", ctx.key(), source_form(&body)).await?;
    let v = expect_ok(&r, Kind::Video)?;
    expect_fields(
        &v,
        &[
            ("model", SOURCE_MODEL),
            ("size", SOURCE_SIZE),
            ("seconds", SOURCE_SECONDS),
            ("prompt", body["prompt"].as_str().unwrap_or("")),
        ],
        "multipart create",
    )?;
    if ctx.opts.profile == Profile::Full {
        let (done, _) = ctx.complete(&v).await?;
        return Ok(format!("{} completed", done["id"].as_str().unwrap_or("?")));
    }
    Ok(format!(
        "{} {}",
        str_field(&v, "id")?,
        v["status"].as_str().unwrap_or("?")
    ))
}

pub async fn poll_until_terminal(ctx: &Ctx) -> Checked<String> {
    let c = ctx
        .created()
        .await
        .map_err(|e| Stop::Skip(format!("no source video ({e})")))?;
    let f = ctx.finished().await.map_err(Stop::Fail)?;
    let w = &f.waited;
    ensure(w.missing_poll_after == 0, || {
        format!(
            "{} of {} answers for an unfinished video had no openai-poll-after-ms",
            w.missing_poll_after, w.unfinished
        )
    })?;
    let created_progress = c.reply.json().and_then(|v| v["progress"].as_i64()).unwrap_or(0);
    let first_progress = w.history.first().and_then(|v| v["progress"].as_i64()).unwrap_or(0);
    ensure(created_progress <= first_progress, || {
        format!("progress went back from {created_progress} (create) to {first_progress}")
    })?;
    let (created_at, completed_at) = (f.video["created_at"].as_i64(), f.video["completed_at"].as_i64());
    ensure(completed_at >= created_at, || {
        format!("completed_at {completed_at:?} before created_at {created_at:?}")
    })?;
    // Terminal is final.
    let r = ctx.api.get(&format!("/videos/{}", c.id), ctx.key()).await?;
    let again = expect_ok(&r, Kind::Video)?;
    ensure(again["status"] == "completed" && again["progress"] == 100, || {
        format!(
            "after completing, the video reads {} at {}%",
            again["status"], again["progress"]
        )
    })?;
    let created_status = c.reply.json().and_then(|v| v["status"].as_str().map(str::to_owned));
    let seen: Vec<String> = created_status
        .into_iter()
        .chain(w.history.iter().filter_map(|v| v["status"].as_str().map(str::to_owned)))
        .collect();
    let mut states: Vec<&str> = Vec::new();
    for s in &seen {
        if states.last() != Some(&s.as_str()) {
            states.push(s);
        }
    }
    let interval = w
        .slept_ms
        .first()
        .map(|ms| format!(", {ms} ms apart"))
        .unwrap_or_default();
    Ok(format!(
        "{} in {:.1} s over {} GETs{interval}",
        states.join(" → "),
        w.elapsed.as_secs_f64(),
        w.history.len()
    ))
}

pub async fn content_not_ready(ctx: &Ctx) -> Checked<String> {
    let c = ctx
        .created()
        .await
        .map_err(|e| Stop::Skip(format!("no source video ({e})")))?;
    let Some((before, reply, after)) = &c.not_ready else {
        return Err(Stop::Skip("the video was already finished in the create answer".into()));
    };
    if reply.status == 200 && after == "completed" {
        return Err(Stop::Skip("the video completed during the probe".into()));
    }
    expect_error(reply, 404, Param::Any)?;
    Ok(format!("404 while {before}"))
}

pub async fn content_video(ctx: &Ctx) -> Checked<String> {
    let (id, video) = ctx.source().await?;
    let (bytes, facts) = ctx.check_content(id, ctx.key(), video).await?;
    let r = ctx
        .api
        .get(&format!("/videos/{id}/content?variant=video"), ctx.key())
        .await?;
    expect_status(&r, 200)?;
    check_asset_headers(&r, "video/mp4")?;
    ensure(r.body == bytes, || {
        "variant=video differs from the default download".into()
    })?;
    Ok(format!(
        "{}x{} {}, {} ms, {} samples, {} bytes",
        facts.width,
        facts.height,
        facts.codec,
        facts.duration_ms,
        facts.samples,
        bytes.len()
    ))
}

async fn variant(ctx: &Ctx, variant: &str, content_type: &str, magic: fn(&[u8]) -> bool) -> Checked<String> {
    let (id, _) = ctx.source().await?;
    let r = ctx
        .api
        .get(&format!("/videos/{id}/content?variant={variant}"), ctx.key())
        .await?;
    expect_status(&r, 200)?;
    check_asset_headers(&r, content_type)?;
    ensure(magic(&r.body), || {
        format!(
            "{variant}: not {content_type} bytes (starts {:02x?})",
            &r.body[..r.body.len().min(12)]
        )
    })?;
    Ok(format!("{} bytes of {content_type}", r.body.len()))
}

pub async fn content_thumbnail(ctx: &Ctx) -> Checked<String> {
    variant(ctx, "thumbnail", "image/webp", is_webp).await
}

pub async fn content_spritesheet(ctx: &Ctx) -> Checked<String> {
    variant(ctx, "spritesheet", "image/jpeg", is_jpeg).await
}

pub async fn content_range(ctx: &Ctx) -> Checked<String> {
    let (id, _) = ctx.source().await?;
    let mp4 = ctx.source_mp4().await?;
    let total = mp4.len();
    ensure(total > 100, || format!("the MP4 has only {total} bytes"))?;
    let path = format!("/videos/{id}/content");
    let cases = [("bytes=0-99", 0, 100), ("bytes=-10", total - 10, total)];
    for (range, from, to) in cases {
        let r = ctx
            .api
            .call(hyper::Method::GET, &path, ctx.key(), &[("range", range)], Body::Empty)
            .await?;
        expect_status(&r, 206)?;
        let want = format!("bytes {from}-{}/{total}", to - 1);
        ensure(r.header("content-range") == Some(want.as_str()), || {
            format!(
                "Range {range}: Content-Range {:?}, expected {want:?}",
                r.header("content-range")
            )
        })?;
        ensure(r.body == mp4[from..to], || {
            format!("Range {range}: {} bytes that are not bytes {from}..{to}", r.body.len())
        })?;
    }
    let past = format!("bytes={total}-");
    let r = ctx
        .api
        .call(hyper::Method::GET, &path, ctx.key(), &[("range", &past)], Body::Empty)
        .await?;
    expect_status(&r, 416)?;
    let want = format!("bytes */{total}");
    ensure(r.header("content-range") == Some(want.as_str()), || {
        format!(
            "Range {past}: Content-Range {:?}, expected {want:?}",
            r.header("content-range")
        )
    })?;
    Ok(format!("206 for 0-99 and -10, 416 past {total} bytes"))
}
