//! `[backends.NAME]`: the local renderer's settings, or a mapping file compiled and checked against what the
//! backend's settings give it (base URL, secrets, files, operations, callbacks).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use super::*;

pub(super) fn validate_backends(
    raw: BTreeMap<String, RawBackend>,
    base_dir: &Path,
    secrets: SecretSource,
    p: &mut Problems,
) -> BTreeMap<String, BackendConfig> {
    let mut out = BTreeMap::new();
    for (name, b) in raw {
        let key = format!("backends.{name}");
        match b.kind.as_str() {
            "local" => {
                let fps = NonZeroU32::new(b.fps.unwrap_or(24)).filter(|f| f.get() <= 60);
                let renders = NonZeroU32::new(b.concurrent_renders.unwrap_or(1));
                match (fps, renders) {
                    (Some(fps), Some(concurrent_renders)) => {
                        out.insert(
                            name,
                            BackendConfig::Local {
                                fps,
                                concurrent_renders,
                            },
                        );
                    }
                    (None, _) => p.add(&format!("{key}.fps"), "must be between 1 and 60"),
                    (_, None) => p.add(&format!("{key}.concurrent_renders"), "must be at least 1"),
                }
            }
            "mapping" => {
                if let Some(m) = validate_mapped(&key, b, base_dir, secrets, p) {
                    out.insert(name, BackendConfig::Mapped(Box::new(m)));
                }
            }
            other => p.add(
                &format!("{key}.kind"),
                format!("unknown backend kind {other:?}; supported: \"local\", \"mapping\""),
            ),
        }
    }
    out
}

pub(super) fn validate_mapped(
    key: &str,
    b: RawBackend,
    base_dir: &Path,
    secret_source: SecretSource,
    p: &mut Problems,
) -> Option<MappedConfig> {
    let Some(reference) = b.mapping else {
        p.add(
            &format!("{key}.mapping"),
            "missing: a built-in mapping name or a mapping file path",
        );
        return None;
    };
    let mut mapping = match crate::mapping::compile::load(&reference, base_dir) {
        Ok(m) => m,
        Err(e) => {
            for line in e.0 {
                p.add(&format!("{key}.mapping"), line);
            }
            return None;
        }
    };
    let base_url = match b.base_url {
        Some(u) if crate::http::check_url(&u).is_ok() => u.trim_end_matches('/').to_owned(),
        Some(u) => {
            p.add(&format!("{key}.base_url"), format!("{u:?} is not an http(s) URL"));
            return None;
        }
        None => {
            p.add(&format!("{key}.base_url"), "missing: the provider's base URL");
            return None;
        }
    };
    let callback_secret = match mapping.callback.as_ref().map(|c| &c.verify) {
        Some(crate::mapping::compile::CallbackVerify::StandardWebhooks { secret }) => Some(secret.clone()),
        _ => None,
    };
    let callbacks = match (&b.callback_base_url, &mapping.callback) {
        (None, _) => None,
        (Some(_), None) => {
            p.add(
                &format!("{key}.callback_base_url"),
                format!(
                    "mapping {:?} has no [callback]: this provider cannot call back",
                    mapping.name
                ),
            );
            None
        }
        (Some(url), Some(_)) if !(url.starts_with("https://") || url.starts_with("http://")) => {
            p.add(
                &format!("{key}.callback_base_url"),
                format!("{url:?} is not an http(s) URL"),
            );
            None
        }
        (Some(url), Some(_)) => Some(CallbackSettings {
            base_url: url.trim_end_matches('/').to_owned(),
            poll_interval: Duration::from_millis(b.callback_poll_interval_ms.filter(|m| *m > 0).unwrap_or(30_000)),
            jwks_url: b.callback_jwks_url.clone(),
        }),
    };
    let mut needed_secrets = mapping.secrets.clone();
    if callbacks.is_some()
        && let Some(s) = &callback_secret
    {
        needed_secrets.push(s.clone());
    }
    let mut secrets = BTreeMap::new();
    for needed in &needed_secrets {
        match b.secrets.get(needed) {
            None => p.add(
                &format!("{key}.secrets.{needed}"),
                format!("missing: the mapping needs secret {needed:?}; name the environment variable that holds it"),
            ),
            Some(var) => match secret_source.read(var) {
                Ok(value) => {
                    secrets.insert(needed.clone(), Secret::new(value.unwrap_or_default()));
                }
                Err(message) => p.add(&format!("{key}.secrets.{needed}"), message),
            },
        }
    }
    for extra in b
        .secrets
        .keys()
        .filter(|k| !mapping.secrets.contains(k) && callback_secret.as_ref() != Some(k))
    {
        p.add(
            &format!("{key}.secrets.{extra}"),
            "the mapping does not use this secret",
        );
    }
    if let Some(wanted) = &b.operations {
        narrow_operations(&format!("{key}.operations"), wanted, &mut mapping, p);
    }
    let options = serde_json::to_value(b.options.unwrap_or_default()).unwrap_or(serde_json::Value::Null);
    let mut files = serde_json::Map::new();
    for (name, path) in &b.files {
        let path = resolve(base_dir, path.clone());
        let loaded = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).map_err(|e| e.to_string()));
        match loaded {
            Ok(v) => {
                files.insert(name.clone(), v);
            }
            Err(e) => p.add(&format!("{key}.files.{name}"), format!("{}: {e}", path.display())),
        }
    }
    let ca_file = b.ca_file.map(|f| resolve(base_dir, f));
    if let Some(ca) = &ca_file
        && let Err(e) = crate::tls::client_config(Some(ca))
    {
        p.add(&format!("{key}.ca_file"), e);
    }
    Some(MappedConfig {
        ca_file,
        callbacks,
        mapping: std::sync::Arc::new(mapping),
        base_url,
        secrets,
        model: b.model,
        options,
        files: serde_json::Value::Object(files),
        timeout: crate::http::timeout(b.timeout_secs, 30).unwrap_or_else(|message| {
            p.add(&format!("{key}.timeout_secs"), message);
            Duration::from_secs(30)
        }),
        max_concurrent: b.max_concurrent.and_then(NonZeroU32::new),
        requests_per_second: b.requests_per_second.and_then(NonZeroU32::new),
        poll_interval: b.poll_interval_ms.filter(|ms| *ms > 0).map(Duration::from_millis),
        max_response_bytes: usize::try_from(positive(p, &format!("{key}.max_response_mib"), b.max_response_mib, 64))
            .unwrap_or(usize::MAX)
            .saturating_mul(1024 * 1024),
    })
}

/// Keeps only the operations the operator lists; each must be one the mapping offers, and `create` stays.
pub(super) fn narrow_operations(
    key: &str,
    wanted: &[String],
    mapping: &mut crate::mapping::compile::Mapping,
    p: &mut Problems,
) {
    let mut kept = Vec::new();
    for name in wanted {
        match crate::video::JobKind::parse(name) {
            Some(kind) if mapping.operations.contains(&kind) => kept.push(kind),
            Some(_) => p.add(key, format!("the mapping does not offer {name:?}")),
            None => p.add(
                key,
                format!("unknown operation {name:?}; use create, remix, edit or extend"),
            ),
        }
    }
    if !kept.contains(&crate::video::JobKind::Create) {
        p.add(key, "must include \"create\"");
    }
    mapping.operations = kept;
}
