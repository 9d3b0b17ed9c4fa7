//! `GET /videos/{id}/content?variant=…`: streams an asset from our storage in constant memory, with
//! `Content-Type`, `Content-Length`, `ETag` (the asset's SHA-256), `If-None-Match` and single `Range` requests.

use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, HeaderValue, IF_NONE_MATCH, RANGE,
};
use hyper::{Request, StatusCode};

use super::error::ApiError;
use super::response::{Response, empty};
use super::unread::RequestBody;
use super::videos::owned_job;
use crate::app::App;
use crate::auth::Tenant;
use crate::video::{State, Variant};

pub async fn download(app: &App, tenant: &Tenant, id: &str, req: &Request<RequestBody>) -> Result<Response, ApiError> {
    let variant = variant_of(req.uri().query())?;
    let job = owned_job(app, tenant, id).await?;
    if job.state != State::Completed {
        // What the Sora API answered while a video was queued or in progress.
        return Err(ApiError::NotFound {
            message: format!(
                "Video is not ready yet, use GET /v1/videos/{id} to check status (current status: {}).",
                job.sora_status()
            ),
            param: None,
        });
    }
    if let Some(at) = job.expires_at.filter(|_| job.is_expired(crate::video::now_unix())) {
        // Sora's assets were downloadable until `expires_at`; after it, the video is there but its content is not.
        return Err(ApiError::NotFound {
            message: format!(
                "The content of video '{id}' has expired (expires_at {at}) and was deleted; the video record remains."
            ),
            param: None,
        });
    }
    let asset = job.asset(variant).ok_or_else(|| ApiError::NotFound {
        message: format!("Video '{id}' has no {} asset.", variant.as_str()),
        param: Some("variant".into()),
    })?;
    let etag = format!("\"{}\"", &asset.sha256[..asset.sha256.len().min(32)]);
    let mut builder = hyper::Response::builder()
        .header(CONTENT_TYPE, variant.content_type())
        .header(ACCEPT_RANGES, "bytes")
        .header(ETAG, &etag)
        .header(CACHE_CONTROL, "private, max-age=3600");
    if if_none_match(req, &etag) {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(empty())
            .map_err(|e| ApiError::internal("response", e));
    }
    let len = app.assets.size(&asset.key).await?;
    let (status, start, count) = match req.headers().get(RANGE).and_then(|v| v.to_str().ok()) {
        None => (StatusCode::OK, 0, len),
        Some(spec) => match parse_range(spec, len) {
            RangeSpec::Whole => (StatusCode::OK, 0, len),
            RangeSpec::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable { len }),
            RangeSpec::Part(start, end) => {
                builder = builder.header(CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
                (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
            }
        },
    };
    let stream = app.assets.read_range(&asset.key, start, count).await?;
    let body = StreamBody::new(futures_util::StreamExt::map(stream, |chunk| {
        // Counted as sent, so a client that hangs up early is not counted for the rest.
        if let (Ok(bytes), Some(m)) = (&chunk, crate::metrics::get()) {
            m.asset_bytes_served.inc_by(bytes.len() as u64);
        }
        chunk.map(Frame::data)
    }));
    builder
        .status(status)
        .header(CONTENT_LENGTH, HeaderValue::from(count))
        .body(body.boxed_unsync())
        .map_err(|e| ApiError::internal("response", e))
}

fn variant_of(query: Option<&str>) -> Result<Variant, ApiError> {
    let value = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "variant")
        .map(|(_, v)| v.into_owned());
    match value {
        None => Ok(Variant::Video),
        Some(v) => Variant::parse(&v).ok_or_else(|| {
            let all: Vec<String> = Variant::ALL.iter().map(|v| v.as_str().to_owned()).collect();
            ApiError::invalid_value("variant", &v, &all)
        }),
    }
}

fn if_none_match(req: &Request<RequestBody>, etag: &str) -> bool {
    req.headers()
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "*" || v.split(',').any(|t| t.trim().trim_start_matches("W/") == etag))
}

#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    /// No usable range (malformed, or several ranges): serve the whole asset, as RFC 9110 allows.
    Whole,
    Unsatisfiable,
    /// Inclusive byte positions.
    Part(u64, u64),
}

fn parse_range(spec: &str, len: u64) -> RangeSpec {
    let Some(ranges) = spec.trim().strip_prefix("bytes=") else {
        return RangeSpec::Whole;
    };
    if ranges.contains(',') {
        return RangeSpec::Whole;
    }
    let Some((a, b)) = ranges.trim().split_once('-') else {
        return RangeSpec::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    match (a.parse::<u64>(), b.parse::<u64>()) {
        // bytes=-N: the last N bytes.
        (Err(_), Ok(n)) if a.is_empty() => {
            if n == 0 || len == 0 {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Part(len.saturating_sub(n), len - 1)
            }
        }
        (Ok(start), _) if start >= len => RangeSpec::Unsatisfiable,
        (Ok(start), Err(_)) if b.is_empty() => RangeSpec::Part(start, len - 1),
        (Ok(start), Ok(end)) if end >= start => RangeSpec::Part(start, end.min(len - 1)),
        _ => RangeSpec::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), RangeSpec::Part(0, 99));
        assert_eq!(parse_range("bytes=900-", 1000), RangeSpec::Part(900, 999));
        assert_eq!(parse_range("bytes=-100", 1000), RangeSpec::Part(900, 999));
        assert_eq!(parse_range("bytes=-5000", 1000), RangeSpec::Part(0, 999));
        assert_eq!(parse_range("bytes=990-5000", 1000), RangeSpec::Part(990, 999));
        assert_eq!(parse_range("bytes=1000-", 1000), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 1000), RangeSpec::Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), RangeSpec::Whole);
        assert_eq!(parse_range("items=0-1", 1000), RangeSpec::Whole);
    }

    #[test]
    fn variants() {
        assert_eq!(variant_of(None).unwrap(), Variant::Video);
        assert_eq!(variant_of(Some("variant=thumbnail")).unwrap(), Variant::Thumbnail);
        let e = variant_of(Some("variant=mp4")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Invalid value: 'mp4'. Supported values are: 'video', 'thumbnail', and 'spritesheet'."
        );
    }
}
