//! How a scenario says no: [`Stop`] (fail with the reason, or skip with why) and the `expect_*` helpers that
//! turn an answer that breaks the contract into a failure naming the request, the status and the body.

use serde_json::Value;

use super::client::{CallError, Reply};
use super::schema::{Kind, violations};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    Fail(String),
    Skip(String),
}

/// A scenario's result: `Ok(what was seen)` or why it stopped.
pub type Checked<T> = Result<T, Stop>;

impl From<CallError> for Stop {
    fn from(e: CallError) -> Stop {
        Stop::Fail(e.to_string())
    }
}

pub fn fail<T>(message: impl Into<String>) -> Checked<T> {
    Err(Stop::Fail(message.into()))
}

pub fn ensure(condition: bool, message: impl FnOnce() -> String) -> Checked<()> {
    if condition { Ok(()) } else { fail(message()) }
}

pub fn expect_status(r: &Reply, status: u16) -> Checked<()> {
    ensure(r.status == status, || {
        format!(
            "{} {}: expected HTTP {status}, got {}: {}",
            r.method,
            r.path,
            r.status,
            r.snippet()
        )
    })
}

pub fn expect_json(r: &Reply) -> Checked<Value> {
    r.json()
        .ok_or_else(|| Stop::Fail(format!("{}: body is not JSON: {}", r.what(), r.snippet())))
}

pub fn expect_schema(kind: Kind, v: &Value, what: &str) -> Checked<()> {
    let errors = violations(kind, v);
    match errors.first() {
        None => Ok(()),
        Some(first) => fail(format!(
            "{what}: not a valid {} object ({first}; {} violations)",
            kind.name(),
            errors.len()
        )),
    }
}

/// 200, JSON, valid against `kind`.
pub fn expect_ok(r: &Reply, kind: Kind) -> Checked<Value> {
    expect_status(r, 200)?;
    let v = expect_json(r)?;
    expect_schema(kind, &v, &r.what())?;
    Ok(v)
}

/// An endpoint may decline an optional capability (an operation, an input image, characters, a size or length
/// its backend lacks) with a 400 naming the parameter. That is a configuration choice, not a contract breach:
/// the scenario is skipped, and the skip carries the endpoint's own message so the report shows it.
pub fn declined(r: &Reply) -> Checked<()> {
    if r.status != 400 {
        return Ok(());
    }
    let Some(v) = r.json() else { return Ok(()) };
    match v["error"]["param"].as_str() {
        Some(param @ ("model" | "size" | "seconds" | "input_reference" | "characters")) => Err(Stop::Skip(format!(
            "not offered by this endpoint ({param}): {}",
            v["error"]["message"].as_str().unwrap_or("")
        ))),
        _ => Ok(()),
    }
}

pub fn str_field<'a>(v: &'a Value, name: &str) -> Checked<&'a str> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| Stop::Fail(format!("no string '{name}' in {v}")))
}

/// What an error's `param` must be.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    /// Not part of the contract for this error.
    Any,
    Null,
    Is(&'a str),
}

/// The OpenAI error envelope with `status` and `param`, a message, and an `x-request-id`.
pub fn expect_error(r: &Reply, status: u16, param: Param<'_>) -> Checked<Value> {
    expect_status(r, status)?;
    let v = expect_json(r)?;
    expect_schema(Kind::Error, &v, &r.what())?;
    let err = &v["error"];
    ensure(err["message"].as_str().is_some_and(|m| !m.trim().is_empty()), || {
        format!("{}: empty error message", r.what())
    })?;
    ensure(r.header("x-request-id").is_some(), || {
        format!("{}: no x-request-id", r.what())
    })?;
    let got = &err["param"];
    match param {
        Param::Any => Ok(()),
        Param::Null => ensure(got.is_null(), || {
            format!("{}: error.param is {got}, expected null", r.what())
        }),
        Param::Is(p) => ensure(got.as_str() == Some(p), || {
            format!("{}: error.param is {got}, expected {p:?}", r.what())
        }),
    }?;
    Ok(v)
}

/// The video fields a derived or created video must echo, as `name = expected`.
pub fn expect_fields(v: &Value, fields: &[(&str, &str)], what: &str) -> Checked<()> {
    for (name, want) in fields {
        let got = v.get(*name).and_then(Value::as_str);
        ensure(got == Some(*want), || {
            format!("{what}: {name} is {:?}, expected {want:?}", got)
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::{HeaderMap, Method};

    fn reply(status: u16, body: &str, request_id: bool) -> Reply {
        let mut headers = HeaderMap::new();
        if request_id {
            headers.insert("x-request-id", hyper::header::HeaderValue::from_static("req_1"));
        }
        Reply {
            method: Method::POST,
            path: "/videos".into(),
            status,
            headers,
            body: body.to_owned().into(),
        }
    }

    #[test]
    fn errors() {
        let body = r#"{"error":{"message":"Invalid value","type":"invalid_request_error","param":"size","code":"invalid_value"}}"#;
        assert!(expect_error(&reply(400, body, true), 400, Param::Is("size")).is_ok());
        assert!(expect_error(&reply(400, body, true), 400, Param::Any).is_ok());
        let Err(Stop::Fail(m)) = expect_error(&reply(400, body, true), 400, Param::Is("seconds")) else {
            panic!()
        };
        assert_eq!(m, "POST /videos -> 400: error.param is \"size\", expected \"seconds\"");
        let Err(Stop::Fail(m)) = expect_error(&reply(200, "{}", true), 400, Param::Any) else {
            panic!()
        };
        assert_eq!(m, "POST /videos: expected HTTP 400, got 200: {}");
        let Err(Stop::Fail(m)) = expect_error(&reply(400, body, false), 400, Param::Any) else {
            panic!()
        };
        assert!(m.ends_with("no x-request-id"));
        let Err(Stop::Fail(m)) = expect_error(&reply(400, r#"{"error":"bad"}"#, true), 400, Param::Any) else {
            panic!()
        };
        assert!(m.contains("not a valid error object"), "{m}");
    }
}
