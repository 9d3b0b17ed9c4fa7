//! The catalogue: every scenario in one table, each with the part of the Sora contract it checks and the
//! profile it needs. `quick` scenarios run in both profiles; `full` ones only in `full`. The scenarios
//! themselves: the source video's create, polling and content in [`super::create`], derived videos in
//! [`super::derived`], listing and deletion in [`super::listing`], errors, idempotency, headers and schemas in
//! [`super::negative`].
//!
//! Cost: `quick` pays for four generations of the cheapest video (`sora-2`, 720x1280, 4 s): the source video,
//! which every read-only scenario reuses, and one remix, edit and extension of it. The multipart create is sent
//! under the source's `Idempotency-Key`, so a conforming server answers it with the source video.

use std::future::Future;
use std::pin::Pin;

use super::Profile;
use super::checks::Checked;
use super::context::Ctx;
use super::create::{
    content_not_ready, content_range, content_spritesheet, content_thumbnail, content_video, create_json,
    create_multipart, poll_until_terminal,
};
use super::{derived, events, listing, negative};

pub type Fut<'a> = Pin<Box<dyn Future<Output = Checked<String>> + 'a>>;
pub type Run = for<'a> fn(&'a Ctx) -> Fut<'a>;

pub struct Scenario {
    pub name: &'static str,
    /// The part of the Sora contract it checks.
    pub contract: &'static str,
    /// The cheapest profile that runs it.
    pub profile: Profile,
    pub run: Run,
}

macro_rules! scenario {
    ($name:literal, $profile:ident, $run:path, $contract:literal) => {
        Scenario {
            name: $name,
            contract: $contract,
            profile: Profile::$profile,
            run: |ctx| Box::pin($run(ctx)),
        }
    };
}

/// Every scenario, in the order they run.
pub fn catalogue() -> Vec<Scenario> {
    vec![
        scenario!(
            "create.json",
            Quick,
            create_json,
            "POST /videos with a JSON body (legacy SDKs, Batch) answers 200 and a `video` object echoing model, size, seconds and prompt"
        ),
        scenario!(
            "poll.until_terminal",
            Quick,
            poll_until_terminal,
            "GET /videos/{id} until completed or failed: only queued, in_progress, completed, failed; progress 0..100 never going back; openai-poll-after-ms on every unfinished answer (and obeyed); completed means progress 100, completed_at, no error"
        ),
        scenario!(
            "create.multipart",
            Quick,
            create_multipart,
            "POST /videos as multipart/form-data text parts, the way the current SDKs send it, answers the same `video` (quick: the source request under its Idempotency-Key, so nothing is generated)"
        ),
        scenario!(
            "content.not_ready",
            Quick,
            content_not_ready,
            "GET /videos/{id}/content of an unfinished video answers 404 with the error envelope"
        ),
        scenario!(
            "content.video",
            Quick,
            content_video,
            "GET /videos/{id}/content (default and variant=video): 200, video/mp4, Content-Length, a playable MP4 (boxes, H.264 key frame) of the job's size and duration"
        ),
        scenario!(
            "webhook.signed_event",
            Quick,
            events::signed_event,
            "With a receiver: a video.completed event {id, object: \"event\", created_at, type, data: {id}} for the finished video, signed with webhook-id, webhook-timestamp and webhook-signature (Standard Webhooks, HMAC-SHA256 of the whsec_ key) so client.webhooks.unwrap verifies it; retries repeat the same ids"
        ),
        scenario!(
            "content.thumbnail",
            Quick,
            content_thumbnail,
            "GET /videos/{id}/content?variant=thumbnail: 200, image/webp, Content-Length, WebP bytes"
        ),
        scenario!(
            "content.spritesheet",
            Quick,
            content_spritesheet,
            "GET /videos/{id}/content?variant=spritesheet: 200, image/jpeg, Content-Length, JPEG bytes"
        ),
        scenario!(
            "content.range",
            Quick,
            content_range,
            "Range requests on content: bytes=0-99 and bytes=-10 answer 206 with Content-Range and the right bytes; a range past the end answers 416 with Content-Range bytes */len"
        ),
        scenario!(
            "idempotency.create",
            Quick,
            negative::idempotency,
            "Idempotency-Key on POST /videos: the same key and body return the same video; the same key with another body answers 409 and creates nothing"
        ),
        scenario!(
            "create.multipart_upload",
            Full,
            derived::create_upload,
            "POST /videos multipart with input_reference as an uploaded PNG of the video's size; the video completes"
        ),
        scenario!(
            "create.bracketed_image_url",
            Full,
            derived::create_bracketed,
            "POST /videos multipart with the bracketed key input_reference[image_url] (a data URL); the video completes"
        ),
        scenario!(
            "generate.size.720x1280",
            Full,
            derived::size_720x1280,
            "sora-2 at 720x1280, 4 s completes and its MP4 has that size and length (the source video)"
        ),
        scenario!(
            "generate.size.1280x720",
            Full,
            derived::size_1280x720,
            "sora-2 at 1280x720, 4 s completes and its MP4 has that size and length"
        ),
        scenario!(
            "generate.size.1024x1792",
            Full,
            derived::size_1024x1792,
            "sora-2-pro at 1024x1792, 4 s completes and its MP4 has that size and length"
        ),
        scenario!(
            "generate.size.1792x1024",
            Full,
            derived::size_1792x1024,
            "sora-2-pro at 1792x1024, 4 s completes and its MP4 has that size and length"
        ),
        scenario!(
            "generate.size.1080x1920",
            Full,
            derived::size_1080x1920,
            "sora-2-pro at 1080x1920, 4 s completes and its MP4 has that size and length"
        ),
        scenario!(
            "generate.size.1920x1080",
            Full,
            derived::size_1920x1080,
            "sora-2-pro at 1920x1080, 4 s completes and its MP4 has that size and length"
        ),
        scenario!(
            "generate.seconds.8",
            Full,
            derived::seconds_8,
            "sora-2 at 720x1280 for 8 s completes and its MP4 lasts 8 s"
        ),
        scenario!(
            "generate.seconds.12",
            Full,
            derived::seconds_12,
            "sora-2 at 720x1280 for 12 s completes and its MP4 lasts 12 s"
        ),
        scenario!(
            "generate.seconds.16",
            Full,
            derived::seconds_16,
            "sora-2 at 720x1280 for 16 s completes and its MP4 lasts 16 s"
        ),
        scenario!(
            "generate.seconds.20",
            Full,
            derived::seconds_20,
            "sora-2 at 720x1280 for 20 s completes and its MP4 lasts 20 s"
        ),
        scenario!(
            "remix",
            Quick,
            derived::remix,
            "POST /videos/{id}/remix {prompt}: a new video with remixed_from_video_id and the source's model, size and seconds; it completes (full: also as multipart)"
        ),
        scenario!(
            "edit",
            Quick,
            derived::edit,
            "POST /videos/edits by id as multipart with the bracketed key video[id]: the source's model and size; it completes (full: also JSON {video:{id}} and an uploaded MP4)"
        ),
        scenario!(
            "extend",
            Quick,
            derived::extend,
            "POST /videos/extensions {prompt, seconds, video:{id}}: seconds is the stitched total; it completes and its MP4 lasts that long (full: also multipart video[id])"
        ),
        scenario!(
            "characters",
            Quick,
            derived::characters,
            "POST /videos/characters (multipart: name + uploaded MP4) and GET /videos/characters/{id} answer the same `character`; another key gets 404 (full: a video with characters[][id] completes)"
        ),
        scenario!(
            "list.pagination",
            Quick,
            listing::pagination,
            "GET /videos: `list` pages in both orders followed with after=last_id; first_id/last_id/has_more consistent; no duplicates; desc is asc reversed; default order newest first; this run's videos listed"
        ),
        scenario!(
            "error.bad_size",
            Quick,
            negative::bad_size,
            "size 123x456 answers 400, the error envelope, param \"size\""
        ),
        scenario!(
            "error.bad_seconds",
            Quick,
            negative::bad_seconds,
            "seconds \"15\" answers 400, the error envelope, param \"seconds\""
        ),
        scenario!(
            "error.missing_prompt",
            Quick,
            negative::missing_prompt,
            "a create without prompt (JSON and multipart) answers 400, the error envelope, param \"prompt\""
        ),
        scenario!(
            "error.malformed_json",
            Quick,
            negative::malformed_json,
            "a truncated JSON body answers 400, the error envelope, param null"
        ),
        scenario!(
            "error.oversize_body",
            Quick,
            negative::oversize_body,
            "a body over the endpoint's limit (--max-body-bytes) answers 413 with the error envelope"
        ),
        scenario!(
            "error.unknown_id",
            Quick,
            negative::unknown_id,
            "an unknown video id answers 404 with the error envelope on retrieve, content, delete and remix"
        ),
        scenario!(
            "error.missing_key",
            Quick,
            negative::missing_key,
            "no Authorization header answers 401 with the error envelope on list, create and retrieve"
        ),
        scenario!(
            "error.other_key",
            Quick,
            negative::other_key,
            "another key's video answers 404 (not 403) on retrieve, content, delete and remix, is not listed, and is left untouched"
        ),
        scenario!(
            "error.bad_variant",
            Quick,
            negative::bad_variant,
            "content?variant=mp4 answers 400, the error envelope, param \"variant\""
        ),
        scenario!(
            "delete",
            Quick,
            listing::delete,
            "DELETE /videos/{id} of a completed video answers `video.deleted` {id, deleted: true}; then retrieve, content and delete answer 404"
        ),
        scenario!(
            "headers.request_id",
            Quick,
            negative::request_ids,
            "every answer of the run (successes and errors) carries a unique x-request-id"
        ),
        scenario!(
            "headers.rate_limit",
            Quick,
            negative::rate_limit,
            "every 429 carries retry-after or x-ratelimit-* headers and the error envelope (full: after a burst of list requests)"
        ),
        scenario!(
            "schemas.every_response",
            Quick,
            negative::every_response,
            "every JSON body of the run matches its official schema (schemas/sora: video, video_list, video_deleted, character, error)"
        ),
    ]
}
