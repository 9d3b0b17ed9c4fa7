//! `sora-shim conformance`: runs the catalogue of Sora-contract scenarios (`scenarios::catalogue`) against
//! any endpoint over HTTP and reports one line per scenario, a closing `N passed, N failed[, N skipped]` line,
//! and optionally JUnit XML and a Markdown report.
//!
//! - `checks`    — fail or skip, and the `expect_*` helpers that say why.
//! - `reply`     — one answer and what was asked.
//! - `client`    — HTTP (hyper + rustls) with any body: JSON, raw, multipart as the SDKs send it.
//! - `schema`    — the official response schemas, and the recorder every answer passes through.
//! - `webhook`   — the kit's webhook receiver and the Standard Webhooks signature check.
//! - `context`   — what scenarios share: the source video, the bounded poll loop, content checks.
//! - `scenarios` — the catalogue: name, contract, profile; the scenarios live in `create` (the source video:
//!   create, poll, content), `derived` (remix, edit, extend, characters, sizes, durations), `listing` (list,
//!   delete), `negative` (errors, idempotency, headers, schemas) and `events` (the signed webhook).
//! - [`media`]     — MP4 structure, size and duration; WebP and JPEG magic.
//! - [`report`]    — console lines, JUnit XML, Markdown.

mod checks;
mod client;
mod context;
mod create;
mod derived;
mod events;
mod listing;
pub mod media;
mod negative;
mod reply;
pub mod report;
mod scenarios;
mod schema;
mod webhook;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use report::{Outcome, ScenarioResult, Summary};

use self::checks::Stop;
use self::client::Api;
use self::context::Ctx;

/// How much the run may generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// As few generations as possible: the shortest, smallest video, reused by every read-only scenario.
    Quick,
    /// Everything, including every size and duration of the Sora contract.
    Full,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Quick => "quick",
            Profile::Full => "full",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Base URL as the SDKs take it, e.g. `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    pub api_key: String,
    /// Another tenant's key, for the cross-key scenarios (skipped without it).
    pub second_api_key: Option<String>,
    pub profile: Profile,
    /// Comma-separated patterns: a scenario runs if its name contains one (`*` matches anything).
    pub only: Option<String>,
    pub junit: Option<PathBuf>,
    pub report: Option<PathBuf>,
    /// Longest wait for one video to finish.
    pub timeout: Duration,
    /// The endpoint's request body limit; the oversize scenario sends 1 KiB more.
    pub max_body_bytes: u64,
    /// Where the kit listens for the endpoint's webhooks (the webhook scenario is skipped without it).
    pub webhook_listen: Option<std::net::SocketAddr>,
    /// The signing secret the endpoint uses for that receiver (`whsec_…`).
    pub webhook_secret: Option<String>,
    /// Extra CA certificates (PEM) to trust for an HTTPS endpoint, besides the platform's roots.
    pub ca_file: Option<PathBuf>,
}

/// The `conformance` subcommand's arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base URL of the endpoint, as the SDKs take it (e.g. http://127.0.0.1:8080/v1).
    #[arg(long)]
    pub base_url: String,
    /// API key (sent as Authorization: Bearer).
    #[arg(long, env = "SORA_CONFORMANCE_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// A second key (another tenant) for the cross-key scenarios.
    #[arg(long, env = "SORA_CONFORMANCE_SECOND_API_KEY", hide_env_values = true)]
    pub second_api_key: Option<String>,
    /// quick: as few generations as possible; full: every size and duration.
    #[arg(long, value_enum, default_value_t = Profile::Quick)]
    pub profile: Profile,
    /// Run only scenarios whose name contains one of these comma-separated patterns (`*` wildcard).
    #[arg(long, value_name = "PATTERN")]
    pub only: Option<String>,
    /// Write JUnit XML here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write a Markdown report here.
    #[arg(long, value_name = "FILE.md")]
    pub report: Option<PathBuf>,
    /// Longest wait for one video to finish, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// The endpoint's request body limit (server.max_body_bytes); the oversize scenario sends 1 KiB more.
    #[arg(long, default_value_t = 52_428_800)]
    pub max_body_bytes: u64,
    /// Listen here for the endpoint's webhooks (configure the endpoint to deliver `video.completed` to it).
    #[arg(long, value_name = "ADDR")]
    pub webhook_listen: Option<std::net::SocketAddr>,
    /// The secret the endpoint signs those webhooks with (`whsec_…`).
    #[arg(long, env = "SORA_CONFORMANCE_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// PEM file of CA certificates to trust for an HTTPS endpoint behind a private CA, besides the platform's
    /// roots (which honour SSL_CERT_FILE and SSL_CERT_DIR).
    #[arg(long, value_name = "FILE.pem")]
    pub ca_file: Option<PathBuf>,
}

impl From<Args> for Options {
    fn from(a: Args) -> Options {
        Options {
            base_url: a.base_url,
            api_key: a.api_key,
            second_api_key: a.second_api_key,
            profile: a.profile,
            only: a.only,
            junit: a.junit,
            report: a.report,
            timeout: Duration::from_secs(a.timeout_secs),
            max_body_bytes: a.max_body_bytes,
            webhook_listen: a.webhook_listen,
            webhook_secret: a.webhook_secret,
            ca_file: a.ca_file,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    #[error("invalid --base-url {url:?}: {reason}")]
    BaseUrl { url: String, reason: String },
    #[error("no scenario matches --only {0:?}")]
    NothingSelected(String),
    #[error("cannot reach {url}: {reason}. Nothing was checked.")]
    Unreachable { url: String, reason: String },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen for webhooks on {addr}: {source}")]
    WebhookListen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Whether `name` is selected by `--only`.
fn selected(name: &str, only: Option<&str>) -> bool {
    let Some(only) = only else { return true };
    only.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .any(|p| glob(&format!("*{}*", p.trim_matches('*')), name))
}

/// `*` matches any run of characters; everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == text;
    }
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Runs the suite, printing one line per scenario to stdout as it finishes.
pub async fn run(opts: Options) -> Result<Summary, ConformanceError> {
    let mut out = std::io::stdout();
    run_with(opts, &mut out).await
}

fn write_line(out: &mut dyn Write, line: &str) -> Result<(), ConformanceError> {
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|source| ConformanceError::Write {
            path: "the console".into(),
            source,
        })
}

/// [`run`], writing the lines to `out`.
pub async fn run_with(opts: Options, out: &mut dyn Write) -> Result<Summary, ConformanceError> {
    let api = Api::new(&opts.base_url, opts.ca_file.as_deref()).map_err(|reason| ConformanceError::BaseUrl {
        url: opts.base_url.clone(),
        reason,
    })?;
    // One request first: an endpoint that cannot be reached (refused, DNS, TLS) is one clear error and exit 2,
    // not a page of failed scenarios and a schema check that passes on no answers. Any HTTP answer will do.
    if let Err(e) = api.reachable().await {
        return Err(ConformanceError::Unreachable {
            url: opts.base_url.clone(),
            reason: e,
        });
    }
    let catalogue: Vec<_> = scenarios::catalogue()
        .into_iter()
        .filter(|s| selected(s.name, opts.only.as_deref()))
        .collect();
    if catalogue.is_empty() {
        return Err(ConformanceError::NothingSelected(opts.only.clone().unwrap_or_default()));
    }
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let clock = Instant::now();
    write_line(
        out,
        &format!(
            "sora-shim {} conformance: {} ({} profile, {} scenarios)",
            env!("CARGO_PKG_VERSION"),
            opts.base_url,
            opts.profile.as_str(),
            catalogue.len()
        ),
    )?;
    let receiver = match opts.webhook_listen {
        Some(addr) => Some(
            webhook::Receiver::start(addr)
                .await
                .map_err(|source| ConformanceError::WebhookListen { addr, source })?,
        ),
        None => None,
    };
    let ctx = Ctx::new(api, opts.clone(), receiver);
    let mut results = Vec::with_capacity(catalogue.len());
    for s in &catalogue {
        let t = Instant::now();
        let (outcome, detail) = if s.profile == Profile::Full && opts.profile == Profile::Quick {
            (Outcome::Skip, "full profile only".to_owned())
        } else {
            let before = ctx.api.recorder().schema_violations.len();
            let result = (s.run)(&ctx).await;
            let rec = ctx.api.recorder();
            let new = &rec.schema_violations[before.min(rec.schema_violations.len())..];
            match (result, new.first()) {
                (Ok(_), Some(first)) => (Outcome::Fail, format!("schema violation: {first}")),
                (Ok(note), None) => (Outcome::Pass, note),
                (Err(Stop::Fail(reason)), _) => (Outcome::Fail, reason),
                (Err(Stop::Skip(why)), _) => (Outcome::Skip, why),
            }
        };
        let result = ScenarioResult {
            name: s.name.into(),
            contract: s.contract.into(),
            outcome,
            detail,
            duration: t.elapsed(),
        };
        write_line(out, &report::console_line(&result))?;
        results.push(result);
    }
    let (generations, video_seconds) = ctx.api.recorder().cost();
    let summary = Summary {
        endpoint: opts.base_url.clone(),
        profile: opts.profile.as_str().into(),
        shim_version: env!("CARGO_PKG_VERSION").into(),
        started,
        elapsed: clock.elapsed(),
        results,
        generations,
        video_seconds,
        requests: ctx.api.recorder().responses,
    };
    for (path, text) in [
        (&opts.junit, report::junit(&summary)),
        (&opts.report, report::markdown(&summary)),
    ] {
        if let Some(path) = path {
            std::fs::write(path, text).map_err(|source| ConformanceError::Write {
                path: path.display().to_string(),
                source,
            })?;
        }
    }
    write_line(out, &report::cost_line(&summary))?;
    write_line(out, &report::closing_line(&summary))?;
    Ok(summary)
}

/// The subcommand: exit 0 when nothing failed, 1 when a scenario failed, 2 when the suite could not run.
pub fn cli(args: Args) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sora-shim conformance: {}", ConformanceError::Runtime(e));
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args.into())) {
        Ok(summary) if summary.failed() == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("sora-shim conformance: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_patterns() {
        assert!(selected("error.bad_size", None));
        assert!(selected("error.bad_size", Some("error")));
        assert!(selected("error.bad_size", Some("content, bad_")));
        assert!(selected("error.bad_size", Some("err*size")));
        assert!(!selected("error.bad_size", Some("content,list")));
        assert!(!selected("error.bad_size", Some("size*error")));
        assert!(glob("a*b*c", "aXbYc") && !glob("a*b*c", "aXc") && glob("abc", "abc"));
    }

    #[test]
    fn catalogue_is_documented_and_unique() {
        let all = scenarios::catalogue();
        let mut names: Vec<&str> = all.iter().map(|s| s.name).collect();
        for s in &all {
            assert!(s.contract.len() > 20, "{} has no contract", s.name);
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len(), "duplicate scenario names");
    }
}
