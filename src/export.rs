//! `sora-shim export` and `sora-shim import`: every job record and its asset files, in a documented, versioned
//! directory layout, read back into another store idempotently. How an operator moves between machines or
//! storage kinds, and how an audit gets the full history.
//!
//! Layout (version 1):
//!
//! ```text
//! DIR/manifest.json       {"format": "sora-shim-export", "version": 1, "exported_at", "tenant", "since",
//!                          "jobs", "characters", "asset_files", "asset_bytes"}   (written last: its presence
//!                          means the export is complete)
//! DIR/jobs.jsonl          one job record per line, in creation order: the request (prompt, model, size, seconds,
//!                          inputs), tenant, backend and backend job id, mapping version, states and timestamps,
//!                          error, moderation verdict, assets (key, bytes, sha256), and `deleted_at`
//! DIR/characters.jsonl    one character per line
//! DIR/assets/KEY          every stored file a record points at (outputs, thumbnails, spritesheets, inputs)
//! ```
//!
//! Import copies each record's files into the target asset storage (checking each output's SHA-256 against the
//! record) before inserting the record, so a record never points at a missing file; records already present
//! (same id) are left alone, so importing twice changes nothing. Webhook events are not re-sent.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::TryStreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::assets::{AssetStore, check_key};
use crate::store::{ExportedJob, JobStore, StoreError};
use crate::video::{Character, InputRef, Job};

pub const FORMAT: &str = "sora-shim-export";
pub const VERSION: u64 = 1;
const PAGE: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("job store: {0}")]
    Store(#[from] StoreError),
    #[error("asset {key}: {message}")]
    Asset { key: String, message: String },
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{0}")]
    Format(String),
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> TransferError {
    TransferError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// What an export or import did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub jobs: u64,
    pub characters: u64,
    pub asset_files: u64,
    pub asset_bytes: u64,
    /// Import: records already present (left alone).
    pub skipped: u64,
    /// Files a record names that were not there (inputs of deleted videos, say).
    pub missing_files: u64,
}

/// Every asset key a job record points at: its outputs and its stored inputs.
fn job_keys(job: &Job) -> Vec<String> {
    let mut keys: Vec<String> = job.assets.iter().map(|a| a.key.clone()).collect();
    for input in [&job.request.input_reference, &job.request.source_video]
        .into_iter()
        .flatten()
    {
        if let InputRef::Stored { key, .. } = input {
            keys.push(key.clone());
        }
    }
    keys
}

/// Writes the export of `tenant` (or everyone) since `since` (unix seconds) into `out` (created; must be empty).
pub async fn export(
    store: &Arc<dyn JobStore>,
    assets: &AssetStore,
    out: &Path,
    tenant: Option<&str>,
    since: Option<i64>,
) -> Result<Summary, TransferError> {
    std::fs::create_dir_all(out.join("assets")).map_err(|e| file_error(out, e))?;
    if out.join("manifest.json").exists() || out.join("jobs.jsonl").exists() {
        return Err(TransferError::Format(format!(
            "{} already holds an export; choose an empty directory",
            out.display()
        )));
    }
    let mut summary = Summary::default();
    let jobs_path = out.join("jobs.jsonl");
    let mut jobs_file =
        std::io::BufWriter::new(std::fs::File::create(&jobs_path).map_err(|e| file_error(&jobs_path, e))?);
    let mut after = 0;
    loop {
        let page = store.export_jobs(tenant, since, after, PAGE).await?;
        let Some((last, _)) = page.last() else { break };
        after = *last;
        for (_, exported) in &page {
            for key in job_keys(&exported.job) {
                copy_out(assets, &key, out, &mut summary).await?;
            }
            let line = serde_json::to_string(exported).map_err(|e| TransferError::Format(e.to_string()))?;
            writeln!(jobs_file, "{line}").map_err(|e| file_error(&jobs_path, e))?;
            summary.jobs += 1;
        }
    }
    jobs_file.flush().map_err(|e| file_error(&jobs_path, e))?;
    let chars_path = out.join("characters.jsonl");
    let mut chars_file = std::fs::File::create(&chars_path).map_err(|e| file_error(&chars_path, e))?;
    for c in store.list_characters(tenant).await? {
        if since.is_some_and(|s| c.created_at < s) {
            continue;
        }
        copy_out(assets, &c.video_key, out, &mut summary).await?;
        let line = serde_json::to_string(&c).map_err(|e| TransferError::Format(e.to_string()))?;
        writeln!(chars_file, "{line}").map_err(|e| file_error(&chars_path, e))?;
        summary.characters += 1;
    }
    chars_file.sync_all().map_err(|e| file_error(&chars_path, e))?;
    let manifest = json!({
        "format": FORMAT,
        "version": VERSION,
        "exported_at": crate::video::now_unix(),
        "tenant": tenant,
        "since": since,
        "jobs": summary.jobs,
        "characters": summary.characters,
        "asset_files": summary.asset_files,
        "asset_bytes": summary.asset_bytes,
    });
    let manifest_path = out.join("manifest.json");
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| TransferError::Format(e.to_string()))?;
    std::fs::write(&manifest_path, text + "\n").map_err(|e| file_error(&manifest_path, e))?;
    Ok(summary)
}

async fn copy_out(assets: &AssetStore, key: &str, out: &Path, summary: &mut Summary) -> Result<(), TransferError> {
    let asset_error = |e: crate::assets::AssetError| TransferError::Asset {
        key: key.to_owned(),
        message: e.to_string(),
    };
    let size = match assets.size(key).await {
        Ok(n) => n,
        Err(e) if e.is_not_found() => {
            summary.missing_files += 1;
            return Ok(());
        }
        Err(e) => return Err(asset_error(e)),
    };
    let dest = out.join("assets").join(key);
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    }
    let mut file = tokio::fs::File::create(&dest).await.map_err(|e| file_error(&dest, e))?;
    let mut chunks = assets.read_range(key, 0, size).await.map_err(asset_error)?;
    while let Some(chunk) = chunks.try_next().await.map_err(|e| file_error(&dest, e))? {
        file.write_all(&chunk).await.map_err(|e| file_error(&dest, e))?;
    }
    file.sync_all().await.map_err(|e| file_error(&dest, e))?;
    summary.asset_files += 1;
    summary.asset_bytes += size;
    Ok(())
}

/// Reads an export from `dir` into the store and asset storage. Idempotent.
pub async fn import(store: &Arc<dyn JobStore>, assets: &AssetStore, dir: &Path) -> Result<Summary, TransferError> {
    let manifest_path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
        file_error(
            &manifest_path,
            format!("{e} (an export is complete only once it has its manifest)"),
        )
    })?;
    let manifest: serde_json::Value = serde_json::from_str(&text).map_err(|e| file_error(&manifest_path, e))?;
    if manifest["format"] != FORMAT {
        return Err(TransferError::Format(format!(
            "{}: not a sora-shim export",
            manifest_path.display()
        )));
    }
    if manifest["version"].as_u64() != Some(VERSION) {
        return Err(TransferError::Format(format!(
            "{}: export version {} is not one this sora-shim reads (it reads version {VERSION})",
            manifest_path.display(),
            manifest["version"]
        )));
    }
    let mut summary = Summary::default();
    let jobs_path = dir.join("jobs.jsonl");
    let text = std::fs::read_to_string(&jobs_path).map_err(|e| file_error(&jobs_path, e))?;
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let exported: ExportedJob =
            serde_json::from_str(line).map_err(|e| file_error(&jobs_path, format!("line {}: {e}", n + 1)))?;
        for key in job_keys(&exported.job) {
            let sha = exported
                .job
                .assets
                .iter()
                .find(|a| a.key == key)
                .map(|a| a.sha256.as_str());
            copy_in(assets, dir, &key, sha, &mut summary).await?;
        }
        if store.import_job(&exported).await? {
            summary.jobs += 1;
        } else {
            summary.skipped += 1;
        }
    }
    let chars_path = dir.join("characters.jsonl");
    let text = std::fs::read_to_string(&chars_path).map_err(|e| file_error(&chars_path, e))?;
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let c: Character =
            serde_json::from_str(line).map_err(|e| file_error(&chars_path, format!("line {}: {e}", n + 1)))?;
        copy_in(assets, dir, &c.video_key, None, &mut summary).await?;
        if store.import_character(&c).await? {
            summary.characters += 1;
        } else {
            summary.skipped += 1;
        }
    }
    Ok(summary)
}

/// Copies one exported file into asset storage, checking its digest where the record has one.
async fn copy_in(
    assets: &AssetStore,
    dir: &Path,
    key: &str,
    sha256: Option<&str>,
    summary: &mut Summary,
) -> Result<(), TransferError> {
    check_key(key).map_err(|e| TransferError::Asset {
        key: key.to_owned(),
        message: e.to_string(),
    })?;
    let src: PathBuf = dir.join("assets").join(key);
    if !src.exists() {
        summary.missing_files += 1;
        return Ok(());
    }
    if let Some(expected) = sha256 {
        let path = src.clone();
        let actual = tokio::task::spawn_blocking(move || sha256_file(&path))
            .await
            .map_err(|e| file_error(&src, e))?
            .map_err(|e| file_error(&src, e))?;
        if actual != expected {
            return Err(file_error(
                &src,
                format!("SHA-256 {actual} does not match the record's {expected}"),
            ));
        }
    }
    let stored = assets.put_file(key, &src).await.map_err(|e| TransferError::Asset {
        key: key.to_owned(),
        message: e.to_string(),
    })?;
    summary.asset_files += 1;
    summary.asset_bytes += stored.bytes;
    Ok(())
}

/// A file's SHA-256, streamed (an export holds whole videos: none is read into memory at once). Blocking.
fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// `YYYY-MM-DD` (UTC midnight) or unix seconds.
pub fn parse_since(text: &str) -> Result<i64, String> {
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs);
    }
    let parts: Vec<&str> = text.split('-').collect();
    let bad = || format!("{text:?} is not a date (YYYY-MM-DD) or unix seconds");
    let [y, m, d] = parts.as_slice() else { return Err(bad()) };
    let (y, m, d): (i64, i64, i64) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    // Days from 1970-01-01 to the civil date (Howard Hinnant's algorithm); std has no calendar.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok((era * 146_097 + doe - 719_468) * 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_dates_and_seconds() {
        assert_eq!(parse_since("1970-01-01"), Ok(0));
        assert_eq!(parse_since("2026-09-24"), Ok(1_790_208_000));
        assert_eq!(parse_since("2000-03-01"), Ok(951_868_800));
        assert_eq!(parse_since("1758941485"), Ok(1_758_941_485));
        assert!(parse_since("yesterday").is_err());
        assert!(parse_since("2026-13-01").is_err());
    }
}
