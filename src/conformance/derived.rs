//! Scenarios that pay for a generation: remix, edit, extend, characters, the `full` profile's create variants,
//! and every size and duration of the Sora contract (`full`). Each generated video is polled to `completed`
//! and its MP4 checked against the job.

use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use super::Profile;
use super::checks::{Checked, Param, Stop, declined, ensure, expect_error, expect_fields, expect_ok, str_field};
use super::client::Form;
use super::context::{Ctx, SOURCE_MODEL, SOURCE_SECONDS, SOURCE_SIZE};
use super::schema::Kind;

fn full(ctx: &Ctx) -> bool {
    ctx.opts.profile == Profile::Full
}

fn shape(v: &Value) -> String {
    format!(
        "{} {} {} s",
        v["model"].as_str().unwrap_or("?"),
        v["size"].as_str().unwrap_or("?"),
        v["seconds"].as_str().unwrap_or("?")
    )
}

pub async fn remix(ctx: &Ctx) -> Checked<String> {
    let (src_id, src) = ctx.source().await?;
    let path = format!("/videos/{src_id}/remix");
    let same = [
        ("remixed_from_video_id", src_id),
        ("model", str_field(src, "model")?),
        ("size", str_field(src, "size")?),
        ("seconds", str_field(src, "seconds")?),
    ];
    let r = ctx
        .api
        .post_json(
            &path,
            ctx.key(),
            &json!({"prompt": ctx.prompt("The same boat, at night")}),
        )
        .await?;
    declined(&r)?;
    let v = expect_ok(&r, Kind::Video)?;
    expect_fields(&v, &same, "remix")?;
    ensure(v["id"] != src["id"], || "the remix has the source's id".into())?;
    let (done, _) = ctx.complete(&v).await?;
    expect_fields(&done, &same[..1], "finished remix")?;
    let mut note = format!("{} completed ({})", str_field(&done, "id")?, shape(&done));
    if full(ctx) {
        let form = Form::new().text("prompt", &ctx.prompt("The same boat, in fog"));
        let v = expect_ok(&ctx.api.post_form(&path, ctx.key(), form).await?, Kind::Video)?;
        expect_fields(&v, &same, "multipart remix")?;
        ctx.complete(&v).await?;
        note.push_str("; multipart remix completed");
    }
    Ok(note)
}

pub async fn edit(ctx: &Ctx) -> Checked<String> {
    let (src_id, src) = ctx.source().await?;
    let same = [("model", str_field(src, "model")?), ("size", str_field(src, "size")?)];
    let form = Form::new()
        .text("prompt", &ctx.prompt("Make the water purple"))
        .text("video[id]", src_id);
    let r = ctx.api.post_form("/videos/edits", ctx.key(), form).await?;
    declined(&r)?;
    let v = expect_ok(&r, Kind::Video)?;
    expect_fields(&v, &same, "edit")?;
    let (done, _) = ctx.complete(&v).await?;
    let mut note = format!("{} completed ({})", str_field(&done, "id")?, shape(&done));
    if full(ctx) {
        let body = json!({"prompt": ctx.prompt("Turn the boat red"), "video": {"id": src_id}});
        let v = expect_ok(
            &ctx.api.post_json("/videos/edits", ctx.key(), &body).await?,
            Kind::Video,
        )?;
        expect_fields(&v, &same, "JSON edit")?;
        ctx.complete(&v).await?;
        let form = Form::new().text("prompt", &ctx.prompt("Add falling snow")).file(
            "video",
            "source.mp4",
            "video/mp4",
            ctx.source_mp4().await?,
        );
        let v = expect_ok(&ctx.api.post_form("/videos/edits", ctx.key(), form).await?, Kind::Video)?;
        expect_fields(&v, &same[1..], "edit of an uploaded MP4")?;
        ctx.complete(&v).await?;
        note.push_str("; JSON and upload edits completed");
    }
    Ok(note)
}

pub async fn extend(ctx: &Ctx) -> Checked<String> {
    let (src_id, src) = ctx.source().await?;
    let added = 4;
    let total = str_field(src, "seconds")?
        .parse::<u32>()
        .map_err(|_| Stop::Fail("source seconds not a number".into()))?
        + added;
    let total = total.to_string();
    let same = [
        ("seconds", total.as_str()),
        ("size", str_field(src, "size")?),
        ("model", str_field(src, "model")?),
    ];
    let body = json!({"prompt": ctx.prompt("The boat reaches the shore"), "seconds": added.to_string(), "video": {"id": src_id}});
    let r = ctx.api.post_json("/videos/extensions", ctx.key(), &body).await?;
    declined(&r)?;
    let v = expect_ok(&r, Kind::Video)?;
    expect_fields(&v, &same, "extension")?;
    let (done, facts) = ctx.complete(&v).await?;
    expect_fields(&done, &same[..1], "finished extension")?;
    let mut note = format!(
        "{} completed, {} s stitched ({} ms of MP4)",
        str_field(&done, "id")?,
        total,
        facts.duration_ms
    );
    if full(ctx) {
        let form = Form::new()
            .text("prompt", &ctx.prompt("The boat drifts on"))
            .text("seconds", &added.to_string())
            .text("video[id]", src_id);
        let v = expect_ok(
            &ctx.api.post_form("/videos/extensions", ctx.key(), form).await?,
            Kind::Video,
        )?;
        expect_fields(&v, &same, "multipart extension")?;
        ctx.complete(&v).await?;
        note.push_str("; multipart extension completed");
    }
    Ok(note)
}

pub async fn characters(ctx: &Ctx) -> Checked<String> {
    let mp4 = ctx.source_mp4().await?;
    let name = "Mossy";
    let form = Form::new()
        .text("name", name)
        .file("video", "mossy.mp4", "video/mp4", mp4);
    let created = expect_ok(
        &ctx.api.post_form("/videos/characters", ctx.key(), form).await?,
        Kind::Character,
    )?;
    let id = created["id"]
        .as_str()
        .ok_or_else(|| Stop::Fail(format!("character without an id: {created}")))?;
    ensure(created["name"] == name, || {
        format!("character name {}, expected {name:?}", created["name"])
    })?;
    let path = format!("/videos/characters/{id}");
    let got = expect_ok(&ctx.api.get(&path, ctx.key()).await?, Kind::Character)?;
    ensure(got == created, || {
        format!("GET {path} answered {got}, the create answered {created}")
    })?;
    *ctx.character.lock().unwrap_or_else(|e| e.into_inner()) = Some(id.to_owned());
    let mut note = format!("{id} created and read back");
    if let Ok(other) = ctx.other_key() {
        expect_error(&ctx.api.get(&path, Some(other)).await?, 404, Param::Any)?;
        note.push_str("; 404 for the second key");
    }
    if full(ctx) {
        let form = Form::new()
            .text("prompt", &ctx.prompt("Mossy waves hello"))
            .text("characters[][id]", id);
        let r = ctx.api.post_form("/videos", ctx.key(), form).await?;
        if let Err(Stop::Skip(why)) = declined(&r) {
            note.push_str(&format!("; a video with characters[][id]: {why}"));
            return Ok(note);
        }
        let v = expect_ok(&r, Kind::Video)?;
        ctx.complete(&v).await?;
        note.push_str("; a video with characters[][id] completed");
    }
    Ok(note)
}

/// A PNG of one colour, the size of the source video.
fn reference_png() -> Checked<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(720, 1280, image::Rgb([40, 120, 200]))
        .write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| Stop::Fail(format!("cannot make the reference PNG: {e}")))?;
    Ok(out.into_inner())
}

fn source_shape_form(ctx: &Ctx, prompt: &str) -> Form {
    Form::new()
        .text("prompt", &ctx.prompt(prompt))
        .text("model", SOURCE_MODEL)
        .text("size", SOURCE_SIZE)
        .text("seconds", SOURCE_SECONDS)
}

pub async fn create_upload(ctx: &Ctx) -> Checked<String> {
    let form = source_shape_form(ctx, "A lighthouse from this colour").file(
        "input_reference",
        "reference.png",
        "image/png",
        Bytes::from(reference_png()?),
    );
    let r = ctx.api.post_form("/videos", ctx.key(), form).await?;
    declined(&r)?;
    let v = expect_ok(&r, Kind::Video)?;
    let (done, _) = ctx.complete(&v).await?;
    Ok(format!("{} completed", str_field(&done, "id")?))
}

pub async fn create_bracketed(ctx: &Ctx) -> Checked<String> {
    let url = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(reference_png()?)
    );
    let form = source_shape_form(ctx, "A harbour from this colour").text("input_reference[image_url]", &url);
    let r = ctx.api.post_form("/videos", ctx.key(), form).await?;
    declined(&r)?;
    let v = expect_ok(&r, Kind::Video)?;
    let (done, _) = ctx.complete(&v).await?;
    Ok(format!("{} completed", str_field(&done, "id")?))
}

/// One size and duration: created, completed, MP4 checked. A 400 naming the size, seconds or model means the
/// endpoint does not offer it (a configuration choice): skipped, with its message (see [`declined`]).
async fn generation(ctx: &Ctx, model: &str, size: &str, seconds: &str) -> Checked<String> {
    if (model, size, seconds) == (SOURCE_MODEL, SOURCE_SIZE, SOURCE_SECONDS) {
        let (id, video) = ctx.source().await?;
        let (_, facts) = ctx.check_content(id, ctx.key(), video).await?;
        return Ok(format!(
            "the source video {id}: {}x{}, {} ms",
            facts.width, facts.height, facts.duration_ms
        ));
    }
    let body = json!({"prompt": ctx.prompt(&format!("A lighthouse at dusk, {size}, {seconds} s")), "model": model, "size": size, "seconds": seconds});
    let r = ctx.api.post_json("/videos", ctx.key(), &body).await?;
    if r.status == 400 {
        expect_error(&r, 400, Param::Any)?;
        declined(&r)?;
    }
    let v = expect_ok(&r, Kind::Video)?;
    expect_fields(&v, &[("model", model), ("size", size), ("seconds", seconds)], "create")?;
    let (done, facts) = ctx.complete(&v).await?;
    Ok(format!(
        "{} completed: {}x{}, {} ms",
        str_field(&done, "id")?,
        facts.width,
        facts.height,
        facts.duration_ms
    ))
}

macro_rules! generations {
    ($($name:ident = $model:literal $size:literal $seconds:literal;)*) => {
        $(pub async fn $name(ctx: &Ctx) -> Checked<String> {
            generation(ctx, $model, $size, $seconds).await
        })*
    };
}

generations! {
    size_720x1280 = "sora-2" "720x1280" "4";
    size_1280x720 = "sora-2" "1280x720" "4";
    size_1024x1792 = "sora-2-pro" "1024x1792" "4";
    size_1792x1024 = "sora-2-pro" "1792x1024" "4";
    size_1080x1920 = "sora-2-pro" "1080x1920" "4";
    size_1920x1080 = "sora-2-pro" "1920x1080" "4";
    seconds_8 = "sora-2" "720x1280" "8";
    seconds_12 = "sora-2" "720x1280" "12";
    seconds_16 = "sora-2" "720x1280" "16";
    seconds_20 = "sora-2" "720x1280" "20";
}
