//! One answer of the endpoint under test, with what was asked: what the client returns and the recorder reads.

use bytes::Bytes;
use hyper::Method;
use hyper::header::HeaderMap;
use serde_json::Value;

/// One answer, with what was asked (for messages).
#[derive(Debug, Clone)]
pub struct Reply {
    pub method: Method,
    pub path: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `GET /videos/x -> 404`
    pub fn what(&self) -> String {
        format!("{} {} -> {}", self.method, self.path, self.status)
    }

    /// The start of the body, on one line, for failure messages.
    pub fn snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body[..self.body.len().min(300)]);
        let one_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        if self.body.len() > 300 {
            format!("{one_line}…")
        } else {
            one_line
        }
    }
}
