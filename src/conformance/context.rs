//! What the scenarios share: the client, the options, and the one *source video* the read-only scenarios reuse
//! (created once, as JSON with an `Idempotency-Key`, at the smallest size and shortest duration), plus the
//! poll loop (bounded, at the server's `openai-poll-after-ms`) and the content check every finished video gets.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::Options;
use super::checks::{Checked, Stop, ensure, expect_json, expect_status, fail, str_field};
use super::client::{Api, Body, Reply};
use super::media::{Mp4Facts, check_mp4, check_mp4_declared};

pub const STATUSES: [&str; 4] = ["queued", "in_progress", "completed", "failed"];
/// The cheapest video the Sora contract offers: the smallest size of `sora-2`, the shortest duration.
pub const SOURCE_MODEL: &str = "sora-2";
pub const SOURCE_SIZE: &str = "720x1280";
pub const SOURCE_SECONDS: &str = "4";
/// Poll interval when the server sends no `openai-poll-after-ms`.
const DEFAULT_POLL: Duration = Duration::from_secs(1);
/// Interval bounds applied to the header (0 would hammer the server; an hour would stall the run).
const MIN_POLL: Duration = Duration::from_millis(10);
const MAX_POLL: Duration = Duration::from_secs(60);

/// The source video's create, as sent and answered.
pub struct Created {
    pub body: Value,
    pub idempotency_key: String,
    pub reply: Reply,
    pub id: String,
    /// `GET …/content` while the video was unfinished: (status before, the answer, status after).
    pub not_ready: Option<(String, Reply, String)>,
}

/// A poll loop's record.
pub struct Waited {
    pub history: Vec<Value>,
    /// Unfinished answers, and how many of them lacked `openai-poll-after-ms`.
    pub unfinished: usize,
    pub missing_poll_after: usize,
    pub slept_ms: Vec<u64>,
    pub elapsed: Duration,
}

impl Waited {
    pub fn last(&self) -> &Value {
        self.history.last().unwrap_or(&Value::Null)
    }
}

pub struct Finished {
    pub video: Value,
    pub waited: Waited,
}

pub struct Ctx {
    pub api: Api,
    pub opts: Options,
    /// Random tag of this run, in prompts and idempotency keys.
    pub run_id: String,
    created: OnceCell<Result<Created, String>>,
    finished: OnceCell<Result<Finished, String>>,
    mp4: OnceCell<Result<Bytes, String>>,
    /// Completed videos of this run (first key) that nothing else needs: the delete scenario takes one.
    pub spare: Mutex<Vec<String>>,
    /// A character made by the `characters` scenario.
    pub character: Mutex<Option<String>>,
    /// The webhook receiver, with `--webhook-listen`.
    pub webhooks: Option<super::webhook::Receiver>,
}

impl Ctx {
    pub fn new(api: Api, opts: Options, webhooks: Option<super::webhook::Receiver>) -> Ctx {
        Ctx {
            api,
            opts,
            run_id: format!("{:08x}", rand::random::<u32>()),
            created: OnceCell::new(),
            finished: OnceCell::new(),
            mp4: OnceCell::new(),
            spare: Mutex::new(Vec::new()),
            character: Mutex::new(None),
            webhooks,
        }
    }

    pub fn key(&self) -> Option<&str> {
        Some(self.opts.api_key.as_str())
    }

    /// The second key, or a skip.
    pub fn other_key(&self) -> Checked<&str> {
        self.opts
            .second_api_key
            .as_deref()
            .ok_or_else(|| Stop::Skip("needs --second-api-key".into()))
    }

    pub fn prompt(&self, text: &str) -> String {
        format!("{text} (sora-shim conformance {})", self.run_id)
    }

    /// The source video's create (made on first use).
    pub async fn created(&self) -> Result<&Created, String> {
        self.created
            .get_or_init(|| self.create_source())
            .await
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The source video, polled to its end (on first use).
    pub async fn finished(&self) -> Result<&Finished, String> {
        let init = async {
            let created = self.created().await?;
            let waited = self.wait(&created.id, self.key()).await.map_err(|e| match e {
                Stop::Fail(m) | Stop::Skip(m) => m,
            })?;
            let video = waited.last().clone();
            if video["status"] != "completed" {
                return Err(format!(
                    "the source video {} ended {}: {}",
                    created.id, video["status"], video["error"]
                ));
            }
            Ok(Finished { video, waited })
        };
        self.finished.get_or_init(|| init).await.as_ref().map_err(Clone::clone)
    }

    /// The finished source video for a scenario that only reads it: a skip when there is none.
    pub async fn source(&self) -> Checked<(&str, &Value)> {
        match self.finished().await {
            Ok(f) => Ok((f.video["id"].as_str().unwrap_or(""), &f.video)),
            Err(e) => Err(Stop::Skip(format!("no finished source video ({e})"))),
        }
    }

    /// The source video's MP4 (downloaded once).
    pub async fn source_mp4(&self) -> Checked<Bytes> {
        let (id, _) = self.source().await?;
        let init = async {
            let r = self
                .api
                .get(&format!("/videos/{id}/content"), self.key())
                .await
                .map_err(|e| e.to_string())?;
            if r.status == 200 {
                Ok(r.body)
            } else {
                Err(format!("{}: {}", r.what(), r.snippet()))
            }
        };
        let got = self.mp4.get_or_init(|| init).await;
        got.clone().map_err(|e| Stop::Skip(format!("no source MP4 ({e})")))
    }

    async fn create_source(&self) -> Result<Created, String> {
        let body = json!({
            "prompt": self.prompt("A paper boat drifting on a calm lake"),
            "model": SOURCE_MODEL,
            "size": SOURCE_SIZE,
            "seconds": SOURCE_SECONDS,
        });
        let idempotency_key = format!("sora-shim-conformance-{}-source", self.run_id);
        let reply = self
            .api
            .call(
                hyper::Method::POST,
                "/videos",
                self.key(),
                &[("idempotency-key", &idempotency_key)],
                Body::Json(body.clone()),
            )
            .await
            .map_err(|e| e.to_string())?;
        let id = match reply.json().as_ref().and_then(|v| v["id"].as_str()) {
            Some(id) if reply.status == 200 => id.to_owned(),
            _ => {
                return Err(format!(
                    "{}: expected 200 and a video id, got: {}",
                    reply.what(),
                    reply.snippet()
                ));
            }
        };
        // Content of an unfinished video: probed now, while it most likely still is.
        let status = |v: Option<Value>| {
            v.and_then(|v| v["status"].as_str().map(str::to_owned))
                .unwrap_or_default()
        };
        let before = status(reply.json());
        let mut not_ready = None;
        if before == "queued" || before == "in_progress" {
            let content = self.api.get(&format!("/videos/{id}/content"), self.key()).await;
            let after = self.api.get(&format!("/videos/{id}"), self.key()).await;
            if let (Ok(content), Ok(after)) = (content, after) {
                not_ready = Some((before, content, status(after.json())));
            }
        }
        Ok(Created {
            body,
            idempotency_key,
            reply,
            id,
            not_ready,
        })
    }

    /// Polls `GET /videos/{id}` until `completed` or `failed`, sleeping what `openai-poll-after-ms` says,
    /// at most `--timeout-secs`. Each answer: 200, one of the four states, progress 0..=100 and never lower.
    pub async fn wait(&self, id: &str, key: Option<&str>) -> Checked<Waited> {
        let started = Instant::now();
        let deadline = started + self.opts.timeout;
        let mut w = Waited {
            history: Vec::new(),
            unfinished: 0,
            missing_poll_after: 0,
            slept_ms: Vec::new(),
            elapsed: Duration::ZERO,
        };
        let mut last_progress = 0;
        loop {
            let r = self.api.get(&format!("/videos/{id}"), key).await?;
            expect_status(&r, 200)?;
            let v = expect_json(&r)?;
            let status = str_field(&v, "status")?.to_owned();
            ensure(STATUSES.contains(&status.as_str()), || {
                format!("video {id}: status {status:?} is not a Sora status")
            })?;
            ensure(v["id"] == id, || format!("GET /videos/{id} answered video {}", v["id"]))?;
            let progress = v["progress"]
                .as_i64()
                .ok_or_else(|| Stop::Fail(format!("video {id}: no integer progress")))?;
            ensure((0..=100).contains(&progress), || {
                format!("video {id}: progress {progress} outside 0..100")
            })?;
            ensure(progress >= last_progress, || {
                format!("video {id}: progress went back from {last_progress} to {progress}")
            })?;
            last_progress = progress;
            w.history.push(v);
            if status == "completed" || status == "failed" {
                w.elapsed = started.elapsed();
                return Ok(w);
            }
            w.unfinished += 1;
            let pause = match r
                .header("openai-poll-after-ms")
                .and_then(|h| h.trim().parse::<u64>().ok())
            {
                Some(ms) => Duration::from_millis(ms).clamp(MIN_POLL, MAX_POLL),
                None => {
                    w.missing_poll_after += 1;
                    DEFAULT_POLL
                }
            };
            if Instant::now() + pause > deadline {
                return fail(format!(
                    "video {id} still {status} ({progress}%) after {} s (--timeout-secs)",
                    self.opts.timeout.as_secs()
                ));
            }
            w.slept_ms.push(u64::try_from(pause.as_millis()).unwrap_or(u64::MAX));
            tokio::time::sleep(pause).await;
        }
    }

    /// `GET /videos/{id}/content`: 200, `video/mp4`, `Content-Length`, and an MP4 of the job's size and length.
    pub async fn check_content(&self, id: &str, key: Option<&str>, video: &Value) -> Checked<(Bytes, Mp4Facts)> {
        let r = self.api.get(&format!("/videos/{id}/content"), key).await?;
        expect_status(&r, 200)?;
        check_asset_headers(&r, "video/mp4")?;
        let (size, seconds) = (str_field(video, "size")?, str_field(video, "seconds")?);
        let meta = self.api.get(&format!("/videos/{id}"), key).await?;
        let facts = match meta.header("x-sora-shim-produced") {
            Some(declared) => check_mp4_declared(&r.body, size, declared),
            None => check_mp4(&r.body, size, seconds),
        }
        .map_err(|e| Stop::Fail(format!("video {id}: {e}")))?;
        Ok((r.body, facts))
    }

    /// A video this run asked for (first key): polled to `completed`, content checked, kept as deletable.
    pub async fn complete(&self, video: &Value) -> Checked<(Value, Mp4Facts)> {
        let id = str_field(video, "id")?;
        let waited = self.wait(id, self.key()).await?;
        let done = waited.last().clone();
        ensure(done["status"] == "completed", || {
            format!("video {id} ended {}: {}", done["status"], done["error"])
        })?;
        let (_, facts) = self.check_content(id, self.key(), &done).await?;
        self.spare.lock().unwrap_or_else(|e| e.into_inner()).push(id.to_owned());
        Ok((done, facts))
    }
}

/// `Content-Type` (without parameters) and a `Content-Length` equal to the bytes received.
pub fn check_asset_headers(r: &Reply, content_type: &str) -> Checked<()> {
    let got = r
        .header("content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    ensure(got == content_type, || {
        format!("{}: Content-Type {got:?}, expected {content_type:?}", r.what())
    })?;
    let length = r.header("content-length").and_then(|v| v.parse::<usize>().ok());
    ensure(length == Some(r.body.len()), || {
        format!(
            "{}: Content-Length {length:?} but {} bytes received",
            r.what(),
            r.body.len()
        )
    })
}
