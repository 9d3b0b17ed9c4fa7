//! Prompt policies checked before a job is dispatched: word and regular-expression rules, and optionally an
//! external moderation endpoint described like a mapping (a URL, a secret from the environment, jq for the
//! request it sends and for reading the verdict from the answer).
//!
//! A blocked prompt ends the way Sora ended one: by default the video is created and is `failed` at once with
//! `moderation_blocked` ("Your request was blocked by our moderation system."); with `action = "reject"` the
//! create itself answers 400 with that code. Every verdict — a policy's, or a provider's `moderation_blocked` —
//! is recorded on the job (`Job::moderation`), visible through the admin API.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::HttpClient;
use crate::http::Secret;
use crate::mapping::jq::Expr;
use crate::video::Verdict;

/// What Sora said about a blocked prompt (community-observed; see the reference).
pub const BLOCKED_MESSAGE: &str = "Your request was blocked by our moderation system.";

/// `[moderation.NAME]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    /// Words or phrases, matched case-insensitively at word boundaries.
    #[serde(default)]
    words: Vec<String>,
    /// Regular expressions (Rust `regex` syntax; add `(?i)` for case-insensitive).
    #[serde(default)]
    patterns: Vec<String>,
    /// `fail` (default): the video is created and fails with `moderation_blocked`; `reject`: the create gets 400.
    action: Option<String>,
    endpoint: Option<RawEndpoint>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    url: String,
    /// Environment variable holding a bearer token for the endpoint.
    secret_env: Option<String>,
    /// jq over `{prompt, model}`: the JSON body sent.
    request: String,
    /// jq over the answer: true when the prompt is to be blocked.
    flagged: String,
    /// jq over the answer: why (recorded on the job).
    reason: Option<String>,
    timeout_secs: Option<u64>,
    /// When the endpoint cannot answer: `block` (default, fail closed) or `allow`.
    on_error: Option<String>,
    /// PEM file of extra CA certificates (a self-hosted endpoint); relative to the config file.
    ca_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Fail,
    Reject,
}

pub struct Policy {
    pub name: String,
    pub action: Action,
    rules: Vec<(String, regex::Regex)>,
    endpoint: Option<Endpoint>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("action", &self.action)
            .field("rules", &self.rules.iter().map(|(label, _)| label).collect::<Vec<_>>())
            .field("endpoint", &self.endpoint.as_ref().map(|e| &e.url))
            .finish()
    }
}

struct Endpoint {
    url: String,
    secret: Option<Secret>,
    request: Expr,
    flagged: Expr,
    reason: Option<Expr>,
    fail_open: bool,
    client: HttpClient,
}

pub(crate) fn validate(
    raw: BTreeMap<String, RawPolicy>,
    base_dir: &Path,
    secrets: crate::http::SecretSource,
    problems: &mut crate::http::Problems,
) -> BTreeMap<String, std::sync::Arc<Policy>> {
    let mut out = BTreeMap::new();
    for (name, p) in raw {
        let at = format!("moderation.{name}");
        let mut rules = Vec::new();
        for (i, word) in p.words.iter().enumerate() {
            let word = word.trim();
            if word.is_empty() {
                problems.add(&format!("{at}.words[{i}]"), "is empty");
                continue;
            }
            // Whole words only: "ass" must not block "class". \b needs a word character at the edge.
            let pattern = format!(r"(?i)(?:^|\W){}(?:$|\W)", regex::escape(word));
            match regex::Regex::new(&pattern) {
                Ok(r) => rules.push((format!("words[{i}]"), r)),
                Err(e) => problems.add(&format!("{at}.words[{i}]"), e.to_string()),
            }
        }
        for (i, pattern) in p.patterns.iter().enumerate() {
            match regex::Regex::new(pattern) {
                Ok(r) => rules.push((format!("patterns[{i}]"), r)),
                Err(e) => problems.add(&format!("{at}.patterns[{i}]"), format!("not a regular expression: {e}")),
            }
        }
        let action = match p.action.as_deref() {
            None | Some("fail") => Action::Fail,
            Some("reject") => Action::Reject,
            Some(other) => {
                problems.add(
                    &format!("{at}.action"),
                    format!("unknown action {other:?}; supported: \"fail\", \"reject\""),
                );
                Action::Fail
            }
        };
        let endpoint = p
            .endpoint
            .and_then(|e| validate_endpoint(&at, e, base_dir, secrets, problems));
        if rules.is_empty() && endpoint.is_none() {
            problems.add(&at, "has no rules: give words, patterns or an endpoint");
        }
        out.insert(
            name.clone(),
            std::sync::Arc::new(Policy {
                name,
                action,
                rules,
                endpoint,
            }),
        );
    }
    out
}

fn validate_endpoint(
    at: &str,
    e: RawEndpoint,
    base_dir: &Path,
    secrets: crate::http::SecretSource,
    problems: &mut crate::http::Problems,
) -> Option<Endpoint> {
    let at = format!("{at}.endpoint");
    let mut ok = true;
    if let Err(message) = crate::http::check_url(&e.url) {
        problems.add(&format!("{at}.url"), message);
        ok = false;
    }
    let secret = match &e.secret_env {
        None => None,
        Some(var) => match secrets.read(var) {
            Ok(value) => Some(Secret::new(value.unwrap_or_default())),
            Err(message) => {
                problems.add(&format!("{at}.secret_env"), message);
                ok = false;
                None
            }
        },
    };
    let mut compile = |field: &str, code: &str| match Expr::compile(code) {
        Ok(x) => Some(x),
        Err(msg) => {
            problems.add(&format!("{at}.{field}"), msg);
            None
        }
    };
    let request = compile("request", &e.request);
    let flagged = compile("flagged", &e.flagged);
    let reason = match &e.reason {
        Some(code) => compile("reason", code).map(Some),
        None => Some(None),
    };
    let fail_open = match e.on_error.as_deref() {
        None | Some("block") => false,
        Some("allow") => true,
        Some(other) => {
            problems.add(
                &format!("{at}.on_error"),
                format!("unknown value {other:?}; supported: \"block\", \"allow\""),
            );
            false
        }
    };
    let client = crate::http::endpoint_client(&at, e.timeout_secs, 10, e.ca_file, base_dir, 1024 * 1024, problems);
    match (ok, request, flagged, reason, client) {
        (true, Some(request), Some(flagged), Some(reason), Some(client)) => Some(Endpoint {
            url: e.url,
            secret,
            request,
            flagged,
            reason,
            fail_open,
            client,
        }),
        _ => None,
    }
}

impl Policy {
    /// Checks a prompt: the rules first (no network), then the endpoint.
    pub async fn judge(&self, prompt: &str, model: &str) -> Verdict {
        let verdict = |blocked: bool, rule: Option<String>, reason: Option<String>| Verdict {
            source: "policy".into(),
            by: self.name.clone(),
            verdict: if blocked { "blocked" } else { "allowed" }.into(),
            rule,
            reason,
        };
        if let Some((label, _)) = self.rules.iter().find(|(_, r)| r.is_match(prompt)) {
            return verdict(true, Some(label.clone()), None);
        }
        let Some(endpoint) = &self.endpoint else {
            return verdict(false, None, None);
        };
        match endpoint.ask(prompt, model).await {
            Ok((flagged, reason)) => verdict(flagged, flagged.then(|| "endpoint".to_owned()), reason),
            Err(e) => {
                tracing::warn!(policy = %self.name, error = %e, fail_open = endpoint.fail_open, "moderation endpoint failed");
                let reason = Some(format!("moderation endpoint unavailable: {e}"));
                if endpoint.fail_open {
                    verdict(false, None, reason)
                } else {
                    verdict(true, Some("endpoint".into()), reason)
                }
            }
        }
    }
}

impl Endpoint {
    async fn ask(&self, prompt: &str, model: &str) -> Result<(bool, Option<String>), String> {
        let body = self.request.eval(&json!({"prompt": prompt, "model": model}))?;
        let mut headers = Vec::new();
        if let Some(s) = &self.secret {
            headers.push(("authorization".to_owned(), format!("Bearer {}", s.expose())));
        }
        let reply = self
            .client
            .send(&hyper::Method::POST, &self.url, &headers, Some(&body))
            .await
            .map_err(|e| e.to_string())?;
        if !(200..300).contains(&reply.status) {
            return Err(format!("answered HTTP {}", reply.status));
        }
        let answer: Value = serde_json::from_slice(&reply.body).map_err(|e| format!("answer is not JSON: {e}"))?;
        let flagged = match self.flagged.eval(&answer)? {
            Value::Bool(b) => b,
            other => return Err(format!("`flagged` gave {other}, not true or false")),
        };
        let reason = match &self.reason {
            Some(r) if flagged => Some(r.eval_string(&answer)?),
            _ => None,
        };
        Ok((flagged, reason))
    }
}

/// `sora_shim_moderation_verdicts_total`.
pub fn count_verdict(v: &Verdict) {
    if let Some(m) = crate::metrics::get() {
        m.moderation
            .with_label_values(&[v.source.as_str(), v.verdict.as_str()])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml_text: &str) -> Result<std::sync::Arc<Policy>, crate::http::Problems> {
        let raw: BTreeMap<String, RawPolicy> = toml::from_str(toml_text).unwrap();
        let mut problems = crate::http::Problems::new("test.toml");
        let mut out = validate(
            raw,
            Path::new(""),
            crate::http::SecretSource::Environment,
            &mut problems,
        );
        if problems.is_empty() {
            Ok(out.remove("p").unwrap())
        } else {
            Err(problems)
        }
    }

    #[tokio::test]
    async fn words_match_whole_words_case_insensitively_and_patterns_as_written() {
        let p = policy("[p]\nwords = [\"ass\", \"blood bath\"]\npatterns = [\"(?i)celebrit(y|ies)\"]").unwrap();
        let judge = |s: &'static str| {
            let p = std::sync::Arc::clone(&p);
            async move { p.judge(s, "sora-2").await }
        };
        assert!(!judge("a class of its own").await.blocked());
        let v = judge("What an ASS.").await;
        assert_eq!((v.blocked(), v.rule.as_deref()), (true, Some("words[0]")));
        assert_eq!(judge("a Blood  Bath").await.rule, None, "phrases match as written");
        assert_eq!(judge("a Blood Bath at dawn").await.rule.as_deref(), Some("words[1]"));
        assert_eq!(
            judge("two Celebrities dancing").await.rule.as_deref(),
            Some("patterns[0]")
        );
        assert_eq!(judge("a calm lake").await.verdict, "allowed");
    }

    #[test]
    fn bad_policies_name_the_key() {
        let problems = policy("[p]\npatterns = [\"(unclosed\"]\naction = \"shout\"").unwrap_err();
        let text = format!("{problems:?}");
        assert!(
            text.contains("moderation.p.patterns[0]") && text.contains("moderation.p.action"),
            "{text}"
        );
        let problems = policy("[p]\naction = \"reject\"").unwrap_err();
        assert!(format!("{problems:?}").contains("has no rules"));
        let problems =
            policy("[p.endpoint]\nurl = \"ftp://x\"\nrequest = \"{input: .prompt}\"\nflagged = \".results[0\"")
                .unwrap_err();
        let text = format!("{problems:?}");
        assert!(
            text.contains("endpoint.url") && text.contains("endpoint.flagged"),
            "{text}"
        );
    }
}
