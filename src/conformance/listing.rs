//! `GET /videos` pagination and `DELETE /videos/{id}`.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::checks::{Checked, Param, Stop, ensure, expect_error, expect_ok, fail};
use super::context::Ctx;
use super::schema::Kind;

/// Page size while walking the list, and how many pages at most (a key with a long history).
const PAGE: usize = 2;
const MAX_PAGES: usize = 50;

struct Walk {
    videos: Vec<Value>,
    pages: usize,
    complete: bool,
}

fn ids(videos: &[Value]) -> Vec<&str> {
    videos.iter().filter_map(|v| v["id"].as_str()).collect()
}

/// Follows `after=last_id` from the first page until `has_more` is false.
async fn walk(ctx: &Ctx, order: &str) -> Checked<Walk> {
    let mut w = Walk {
        videos: Vec::new(),
        pages: 0,
        complete: false,
    };
    let mut after: Option<String> = None;
    while w.pages < MAX_PAGES {
        let mut path = format!("/videos?limit={PAGE}&order={order}");
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let page = expect_ok(&ctx.api.get(&path, ctx.key()).await?, Kind::VideoList)?;
        w.pages += 1;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        ensure(data.len() <= PAGE, || {
            format!("{path}: {} videos for limit={PAGE}", data.len())
        })?;
        let (first, last) = (
            data.first().map(|v| v["id"].clone()),
            data.last().map(|v| v["id"].clone()),
        );
        ensure(page["first_id"] == first.unwrap_or(Value::Null), || {
            format!("{path}: first_id {} is not the first video", page["first_id"])
        })?;
        ensure(page["last_id"] == last.unwrap_or(Value::Null), || {
            format!("{path}: last_id {} is not the last video", page["last_id"])
        })?;
        let has_more = page["has_more"] == true;
        ensure(!has_more || !data.is_empty(), || {
            format!("{path}: has_more on an empty page")
        })?;
        if after.is_some() && data.is_empty() {
            return fail(format!("{path}: the previous page said has_more, this one is empty"));
        }
        w.videos.extend(data);
        if !has_more {
            w.complete = true;
            break;
        }
        after = page["last_id"].as_str().map(str::to_owned);
    }
    let mut seen = HashSet::new();
    for id in ids(&w.videos) {
        ensure(seen.insert(id), || format!("order={order}: video {id} listed twice"))?;
    }
    let times: Vec<i64> = w.videos.iter().filter_map(|v| v["created_at"].as_i64()).collect();
    let sorted = times
        .windows(2)
        .all(|p| if order == "asc" { p[0] <= p[1] } else { p[0] >= p[1] });
    ensure(sorted, || {
        format!("order={order}: created_at not in {order}ending order: {times:?}")
    })?;
    Ok(w)
}

pub async fn pagination(ctx: &Ctx) -> Checked<String> {
    let asc = walk(ctx, "asc").await?;
    let desc = walk(ctx, "desc").await?;
    let (a, d) = (ids(&asc.videos), ids(&desc.videos));
    if asc.complete && desc.complete {
        let reversed: Vec<&str> = a.iter().rev().copied().collect();
        ensure(d == reversed, || format!("desc {d:?} is not asc {a:?} reversed"))?;
        let default = expect_ok(&ctx.api.get("/videos", ctx.key()).await?, Kind::VideoList)?;
        let first: Vec<&str> = default["data"].as_array().map(|v| ids(v)).unwrap_or_default();
        ensure(d.starts_with(&first), || {
            format!("GET /videos without order is not newest first: {first:?} vs {d:?}")
        })?;
        let mut ours: Vec<String> = ctx.spare.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Ok(f) = ctx.finished().await {
            ours.extend(f.video["id"].as_str().map(str::to_owned));
        }
        for id in &ours {
            ensure(a.contains(&id.as_str()), || {
                format!("video {id} of this run is not listed")
            })?;
        }
    }
    if a.is_empty() {
        let empty = expect_ok(&ctx.api.get("/videos", ctx.key()).await?, Kind::VideoList)?;
        let want = json!({"object": "list", "data": [], "first_id": null, "last_id": null, "has_more": false});
        ensure(empty == want, || format!("an empty list reads {empty}"))?;
    }
    let complete = if asc.complete && desc.complete {
        ""
    } else {
        " (stopped at the page limit)"
    };
    Ok(format!(
        "{} videos in {} + {} pages of {PAGE}, asc and desc{complete}",
        a.len(),
        asc.pages,
        desc.pages
    ))
}

pub async fn delete(ctx: &Ctx) -> Checked<String> {
    let spare = ctx.spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let (id, which) = match spare {
        Some(id) => (id, "a video of this run"),
        // Nothing else of this run was made: the source (no scenario after this one reads it).
        None => (
            ctx.source()
                .await
                .map_err(|e| match e {
                    Stop::Skip(m) | Stop::Fail(m) => Stop::Skip(format!("no completed video to delete: {m}")),
                })?
                .0
                .to_owned(),
            "the source video",
        ),
    };
    let path = format!("/videos/{id}");
    let v = expect_ok(&ctx.api.delete(&path, ctx.key()).await?, Kind::VideoDeleted)?;
    let want = json!({"id": id, "object": "video.deleted", "deleted": true});
    ensure(v == want, || format!("DELETE {path} answered {v}, expected {want}"))?;
    for r in [
        ctx.api.get(&path, ctx.key()).await?,
        ctx.api.get(&format!("{path}/content"), ctx.key()).await?,
        ctx.api.delete(&path, ctx.key()).await?,
    ] {
        expect_error(&r, 404, Param::Any)?;
    }
    Ok(format!(
        "deleted {which} {id}; retrieve, content and a second delete answer 404"
    ))
}
