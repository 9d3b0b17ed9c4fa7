//! Request bodies: read under the size limit, then parsed from JSON or `multipart/form-data` into one form, a
//! [`Doc`]: a JSON object of the fields (multipart bracket keys such as `input_reference[image_url]` and
//! `characters[][id]` become nested objects and arrays) plus the uploaded files. Schemas see the same shape
//! whichever content type the client sent.

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap};
use serde_json::{Map, Value};

use super::error::ApiError;
use super::unread::RequestBody;

/// Oversized bodies up to this size are read and dropped before the 413 (see [`read_limited`]).
const DRAIN_MAX: u64 = 64 * 1024 * 1024;
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What an uploaded file part stands for in [`Doc::fields`], so schemas can tell a file from text.
pub const FILE_MARKER: &str = "<binary>";

#[derive(Debug, Clone)]
pub struct Upload {
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub bytes: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Multipart,
}

#[derive(Debug)]
pub struct Doc {
    pub encoding: Encoding,
    pub fields: Map<String, Value>,
    pub files: BTreeMap<String, Upload>,
}

impl Doc {
    pub fn str(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }
}

/// Reads the whole body, refusing more than `limit` bytes (by `Content-Length` up front, and while reading).
pub async fn read_limited(headers: &HeaderMap, body: RequestBody, limit: u64) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > limit) {
        // Most clients only read the answer once they have sent the whole body: read and drop a moderately
        // oversized body so they see the 413 instead of a broken connection. Huge ones are cut off.
        if n <= DRAIN_MAX {
            let drain = async {
                let mut body = body;
                while let Some(Ok(_)) = body.frame().await {}
            };
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
        }
        return Err(ApiError::TooLarge { limit });
    }
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::TooLarge { limit }),
        Err(e) => Err(ApiError::invalid(
            format!("Could not read the request body: {e}"),
            None,
            None,
        )),
    }
}

/// Reads and parses a request body within the server's limits: the whole body within `request_timeout`
/// (else 408, so a client trickling bytes cannot hold a connection and a buffer), at most `max_body_bytes`,
/// and no uploaded file over `max_upload_bytes` (413 naming the field).
pub async fn read_doc(
    server: &crate::config::ServerConfig,
    headers: &HeaderMap,
    body: RequestBody,
    allow_json: bool,
) -> Result<Doc, ApiError> {
    let read = read_limited(headers, body, server.max_body_bytes);
    let bytes = tokio::time::timeout(server.request_timeout, read)
        .await
        .map_err(|_| ApiError::RequestTimeout {
            secs: server.request_timeout.as_secs(),
        })??;
    let doc = parse(headers, bytes, allow_json).await?;
    if let Some((field, _)) = doc
        .files
        .iter()
        .find(|(_, f)| f.bytes.len() as u64 > server.max_upload_bytes)
    {
        return Err(ApiError::UploadTooLarge {
            field: field.clone(),
            limit: server.max_upload_bytes,
        });
    }
    Ok(doc)
}

/// Parses a body by its `Content-Type`.
pub async fn parse(headers: &HeaderMap, bytes: Bytes, allow_json: bool) -> Result<Doc, ApiError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match mime.as_str() {
        "application/json" if allow_json => parse_json(&bytes),
        "multipart/form-data" => parse_multipart(&content_type, bytes).await,
        // An empty body without a type: treat as an empty JSON object so the missing fields are named.
        "" if bytes.is_empty() && allow_json => Ok(Doc {
            encoding: Encoding::Json,
            fields: Map::new(),
            files: BTreeMap::new(),
        }),
        _ => {
            let expected = if allow_json {
                "application/json or multipart/form-data"
            } else {
                "multipart/form-data"
            };
            let got = if content_type.is_empty() {
                "none".to_owned()
            } else {
                content_type.clone()
            };
            Err(ApiError::invalid(
                format!("Invalid Content-Type header ({got}), expected {expected}."),
                None,
                Some("invalid_content_type"),
            ))
        }
    }
}

fn parse_json(bytes: &[u8]) -> Result<Doc, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::invalid(
            format!(
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your \
                 HTTP library correctly. The API expects a JSON payload, but what was sent was not valid JSON: {e}.)"
            ),
            None,
            Some("invalid_json"),
        )
    })?;
    match value {
        Value::Object(fields) => Ok(Doc {
            encoding: Encoding::Json,
            fields,
            files: BTreeMap::new(),
        }),
        _ => Err(ApiError::invalid(
            "The request body must be a JSON object.",
            None,
            Some("invalid_type"),
        )),
    }
}

async fn parse_multipart(content_type: &str, bytes: Bytes) -> Result<Doc, ApiError> {
    let bad = |detail: String| {
        ApiError::invalid(
            format!("Could not parse the multipart/form-data body: {detail}"),
            None,
            Some("invalid_multipart"),
        )
    };
    let boundary = multer::parse_boundary(content_type).map_err(|e| bad(e.to_string()))?;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(bytes) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut fields = Map::new();
    let mut files = BTreeMap::new();
    while let Some(field) = multipart.next_field().await.map_err(|e| bad(e.to_string()))? {
        let name = field.name().unwrap_or("").to_owned();
        if name.is_empty() {
            return Err(bad("a part has no name".into()));
        }
        let path = parse_key(&name).ok_or_else(|| bad(format!("unsupported field name {name:?}")))?;
        if let Some(filename) = field.file_name().map(str::to_owned) {
            let content_type = field.content_type().map(|m| m.to_string());
            let data = field.bytes().await.map_err(|e| bad(e.to_string()))?;
            insert_path(&mut fields, &path, Value::String(FILE_MARKER.into()));
            files.insert(
                path[0].clone(),
                Upload {
                    filename: Some(filename),
                    content_type,
                    bytes: data,
                },
            );
        } else {
            let text = field.text().await.map_err(|e| bad(e.to_string()))?;
            insert_path(&mut fields, &path, Value::String(text));
        }
    }
    Ok(Doc {
        encoding: Encoding::Multipart,
        fields,
        files,
    })
}

/// `a` → `["a"]`, `a[b]` → `["a","b"]`, `a[][b]` → `["a","","b"]` (an empty segment is an array).
fn parse_key(name: &str) -> Option<Vec<String>> {
    let (head, mut rest) = match name.find('[') {
        Some(i) => (&name[..i], &name[i..]),
        None => (name, ""),
    };
    if head.is_empty() {
        return None;
    }
    let mut path = vec![head.to_owned()];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        path.push(inner[..end].to_owned());
        rest = &inner[end + 1..];
    }
    (path.len() <= 4).then_some(path)
}

/// Sets `value` at `path`; `""` segments append to an array, starting a new element when the last one already
/// has the key being set (so repeated `characters[][id]` parts make one object each).
fn insert_path(map: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        map.insert(first.clone(), value);
        return;
    }
    let slot = map.entry(first.clone()).or_insert_with(|| {
        if rest[0].is_empty() {
            Value::Array(vec![])
        } else {
            Value::Object(Map::new())
        }
    });
    insert_value(slot, rest, value);
}

fn insert_value(slot: &mut Value, path: &[String], value: Value) {
    match (slot, path.split_first()) {
        (Value::Array(items), Some((seg, rest))) if seg.is_empty() => {
            if rest.is_empty() {
                items.push(value);
                return;
            }
            let key = &rest[0];
            let needs_new = match items.last() {
                Some(Value::Object(o)) => rest.len() == 1 && o.contains_key(key),
                _ => true,
            };
            if needs_new {
                items.push(Value::Object(Map::new()));
            }
            if let Some(Value::Object(o)) = items.last_mut() {
                insert_path(o, rest, value);
            }
        }
        (Value::Object(o), Some(_)) => insert_path(o, path, value),
        // A key used both as text and as a nested object: keep the nested form, the schema will say what's wrong.
        (slot, Some(_)) => {
            *slot = Value::Object(Map::new());
            insert_value(slot, path, value);
        }
        (_, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(pairs: &[(&str, &str)]) -> Value {
        let mut map = Map::new();
        for (k, v) in pairs {
            insert_path(&mut map, &parse_key(k).unwrap(), Value::String((*v).into()));
        }
        Value::Object(map)
    }

    #[test]
    fn bracket_keys_nest_like_the_sdks_mean_them() {
        assert_eq!(
            fields(&[
                ("prompt", "p"),
                ("input_reference[image_url]", "https://x/y.png"),
                ("video[id]", "video_1")
            ]),
            json!({"prompt": "p", "input_reference": {"image_url": "https://x/y.png"}, "video": {"id": "video_1"}})
        );
        assert_eq!(
            fields(&[("characters[][id]", "char_1"), ("characters[][id]", "char_2")]),
            json!({"characters": [{"id": "char_1"}, {"id": "char_2"}]})
        );
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in ["", "[a]", "a[b", "a[b]c]"] {
            assert!(parse_key(bad).is_none(), "{bad}");
        }
        assert!(parse_key("a[b][c][d][e]").is_none());
    }

    #[tokio::test]
    async fn multipart_text_and_file_parts() {
        let body = "--XX\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nhello\r\n\
                    --XX\r\nContent-Disposition: form-data; name=\"input_reference\"; filename=\"r.png\"\r\n\
                    Content-Type: image/png\r\n\r\nPNGDATA\r\n--XX--\r\n";
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, "multipart/form-data; boundary=XX".parse().unwrap());
        let doc = parse(&headers, Bytes::from(body), true).await.unwrap();
        assert_eq!(doc.encoding, Encoding::Multipart);
        assert_eq!(
            Value::Object(doc.fields),
            json!({"prompt": "hello", "input_reference": FILE_MARKER})
        );
        let upload = &doc.files["input_reference"];
        assert_eq!(&upload.bytes[..], b"PNGDATA");
        assert_eq!(upload.content_type.as_deref(), Some("image/png"));
    }

    #[tokio::test]
    async fn wrong_content_type_and_bad_json_are_clear_errors() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, "text/plain".parse().unwrap());
        let e = parse(&headers, Bytes::from("x"), true).await.unwrap_err();
        assert!(e.to_string().contains("Invalid Content-Type header (text/plain)"));
        headers.insert(CONTENT_TYPE, "application/json".parse().unwrap());
        let e = parse(&headers, Bytes::from("{\"prompt\":"), true).await.unwrap_err();
        assert!(e.to_string().contains("could not parse the JSON body"));
        let e = parse(&headers, Bytes::from("[1]"), true).await.unwrap_err();
        assert!(e.to_string().contains("must be a JSON object"));
    }
}
