//! Authentication: the API key names the tenant.
//!
//! Two modes. With tenants in the config, only their keys get in: each key is kept as a SHA-256 digest (from the
//! config as `sha256:<hex>`, or read from an environment variable at start-up and hashed at once), a presented
//! key is hashed and compared in constant time against every configured digest. Without tenants (the embedded
//! default) the shim runs in open development mode: any non-empty key is accepted and is its own tenant, named
//! by the digest. Admin keys are a separate set and open only `/admin/…`.
//!
//! Unsalted SHA-256 is the right tool here: API keys are long random strings, not passwords, so a fast digest
//! cannot be brute-forced and lets every request be checked without a slow KDF.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use hyper::header::{AUTHORIZATION, HeaderMap};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The tenant of every shadow job: not a SHA-256 hex digest (open mode) and a name no configured tenant may take
/// (checked below), so no API key maps to it.
pub const SHADOW_TENANT: &str = "shadow";

/// Why a request's key was refused: a 401 in OpenAI's envelope (rendered in `api/error.rs`). No variant carries
/// any part of the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer \
         auth (i.e. Authorization: Bearer YOUR_KEY)."
    )]
    Missing,
    #[error("Invalid authorization header: expected 'Bearer YOUR_API_KEY'.")]
    Malformed,
    // OpenAI echoes a masked key here; we echo none of it, so no part of a key reaches a body or a log.
    #[error("Incorrect API key provided. Ask the operator of this endpoint for a valid key.")]
    Incorrect,
    #[error("The admin API needs an admin key (configured under [admin] or in SORA_SHIM_ADMIN_KEY) as a Bearer token.")]
    NotAdmin,
}

impl AuthError {
    /// The envelope's `code`.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            AuthError::Missing => None,
            AuthError::Malformed | AuthError::Incorrect | AuthError::NotAdmin => Some("invalid_api_key"),
        }
    }
}

/// A SHA-256 digest of an API key.
pub type KeyDigest = [u8; 32];

/// Who is calling. `id` is what job records hold (the tenant's name, or in open mode the key's digest); `name`
/// is what logs and metrics show. Neither is ever the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub requests_per_minute: Option<NonZeroU32>,
    pub max_unfinished_jobs: Option<NonZeroU32>,
}

/// A configured tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantConfig {
    pub name: String,
    pub keys: Vec<KeyDigest>,
    pub requests_per_minute: Option<NonZeroU32>,
    pub max_unfinished_jobs: Option<NonZeroU32>,
    /// This tenant's asset retention, over `[assets] retention` (`Some(None)`: never expire).
    pub retention: Option<Option<std::time::Duration>>,
}

/// Who may call what: the tenants (none: open development mode) and the admin keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    pub tenants: Vec<TenantConfig>,
    pub admin_keys: Vec<KeyDigest>,
}

/// `[tenants.NAME]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTenant {
    /// Digests from `sora-shim key hash`, as `sha256:<64 hex digits>`.
    #[serde(default)]
    keys: Vec<String>,
    /// Environment variables holding keys, read (and hashed) at start-up.
    #[serde(default)]
    key_env: Vec<String>,
    requests_per_minute: Option<u32>,
    max_unfinished_jobs: Option<u32>,
    /// How long this tenant's finished videos are kept (`"1h"`, `"30d"`, `"never"`).
    retention: Option<String>,
}

/// `[admin]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    key_env: Vec<String>,
}

/// The environment variable that adds an admin key without a config file.
pub const ADMIN_KEY_ENV: &str = "SORA_SHIM_ADMIN_KEY";

pub fn hash_key(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
}

/// `sha256:<hex>`, the form `sora-shim key hash` prints and the config takes.
pub fn format_digest(digest: &KeyDigest) -> String {
    format!("sha256:{}", hex::encode(digest))
}

fn parse_digest(text: &str) -> Option<KeyDigest> {
    let hex_part = text.strip_prefix("sha256:")?;
    let bytes = hex::decode(hex_part).ok()?;
    bytes.try_into().ok()
}

/// Digests and environment keys of one `keys`/`key_env` pair; problems go to `problems` as (key, message).
fn collect_keys(
    at: &str,
    keys: &[String],
    key_env: &[String],
    secrets: crate::http::SecretSource,
    problems: &mut crate::http::Problems,
) -> Vec<KeyDigest> {
    let mut out = Vec::new();
    for (i, text) in keys.iter().enumerate() {
        match parse_digest(text.trim()) {
            Some(d) => out.push(d),
            // Never echo the value: an operator may have pasted a key where its digest belongs.
            None => problems.add(
                &format!("{at}.keys[{i}]"),
                "not a key digest: expected sha256:<64 hex digits> as printed by `sora-shim key hash` (a raw key \
                 belongs in an environment variable named in key_env)",
            ),
        }
    }
    for var in key_env {
        match secrets.read(var) {
            Ok(Some(v)) => out.push(hash_key(v.trim())),
            // Not read (`check --without-secrets`): one stand-in per variable, so the checks on keys still run.
            Ok(None) => out.push(hash_key(&format!("\0unread:{var}"))),
            Err(message) => problems.add(&format!("{at}.key_env"), message),
        }
    }
    out
}

/// Validates `[tenants]` and `[admin]` (plus `SORA_SHIM_ADMIN_KEY`). Problems come back as (key, message).
pub(crate) fn validate(
    tenants: BTreeMap<String, RawTenant>,
    admin: Option<RawAdmin>,
    secrets: crate::http::SecretSource,
    problems: &mut crate::http::Problems,
) -> Access {
    let mut out = Vec::new();
    for (name, t) in tenants {
        let at = format!("tenants.{name}");
        let valid_name = !name.is_empty()
            && name.len() <= 63
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && name != SHADOW_TENANT;
        if !valid_name {
            problems.add(
                &at,
                "a tenant name is 1 to 63 letters, digits, '-', '_' or '.', and not \"shadow\"",
            );
        }
        let keys = collect_keys(&at, &t.keys, &t.key_env, secrets, problems);
        if keys.is_empty() {
            problems.add(&at, "has no keys: give `keys` (digests) or `key_env`");
        }
        let nonzero = |field: &str, v: Option<u32>, problems: &mut crate::http::Problems| match v {
            Some(0) => {
                problems.add(
                    &format!("{at}.{field}"),
                    "must be greater than 0 (leave it out for no limit)",
                );
                None
            }
            v => v.and_then(NonZeroU32::new),
        };
        let retention = match t.retention.as_deref().map(crate::video::parse_retention) {
            None => None,
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => {
                problems.add(&format!("{at}.retention"), e);
                None
            }
        };
        out.push(TenantConfig {
            retention,
            requests_per_minute: nonzero("requests_per_minute", t.requests_per_minute, problems),
            max_unfinished_jobs: nonzero("max_unfinished_jobs", t.max_unfinished_jobs, problems),
            name,
            keys,
        });
    }
    let admin = admin.unwrap_or_default();
    let mut admin_keys = collect_keys("admin", &admin.keys, &admin.key_env, secrets, problems);
    if let Ok(v) = std::env::var(ADMIN_KEY_ENV)
        && !v.trim().is_empty()
    {
        admin_keys.push(hash_key(v.trim()));
    }
    // A key opens one door: a tenant's key that were also an admin key would make that tenant an admin.
    let mut seen: BTreeMap<KeyDigest, String> = BTreeMap::new();
    for t in &out {
        for k in &t.keys {
            if let Some(other) = seen.insert(*k, t.name.clone())
                && other != t.name
            {
                problems.add(
                    &format!("tenants.{}", t.name),
                    format!("shares a key with tenant {other:?}"),
                );
            }
        }
    }
    if admin_keys.iter().any(|k| seen.contains_key(k)) {
        problems.add(
            "admin",
            "an admin key is also a tenant's key; admin keys must be separate",
        );
    }
    Access {
        tenants: out,
        admin_keys,
    }
}

/// Compares two digests without an early exit, so the time taken says nothing about where they differ.
fn digest_eq(a: &KeyDigest, b: &KeyDigest) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The key a request presents: `Authorization: Bearer <key>` (or Azure's `api-key: <key>`).
fn presented_key(headers: &HeaderMap) -> Result<&str, AuthError> {
    let bearer = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::trim);
    let key = match bearer {
        Some(value) => match value.split_once(' ') {
            Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => key.trim(),
            _ => return Err(AuthError::Malformed),
        },
        None => headers
            .get("api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .unwrap_or(""),
    };
    if key.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(key)
}

impl Access {
    /// Open development mode: no tenants configured.
    pub fn is_open(&self) -> bool {
        self.tenants.is_empty()
    }

    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Tenant, AuthError> {
        let digest = hash_key(presented_key(headers)?);
        if self.is_open() {
            let id = hex::encode(digest);
            return Ok(Tenant {
                name: format!("dev-{}", &id[..8]),
                id,
                requests_per_minute: None,
                max_unfinished_jobs: None,
            });
        }
        // Every digest is compared, matched or not, so timing does not tell how many keys or which one matched.
        let mut found = None;
        for t in &self.tenants {
            for k in &t.keys {
                if digest_eq(&digest, k) {
                    found = Some(t);
                }
            }
        }
        let t = found.ok_or(AuthError::Incorrect)?;
        Ok(Tenant {
            id: t.name.clone(),
            name: t.name.clone(),
            requests_per_minute: t.requests_per_minute,
            max_unfinished_jobs: t.max_unfinished_jobs,
        })
    }

    /// `/admin/…`: an admin key, or 401 (also when no admin key is configured).
    pub fn authenticate_admin(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let digest = hash_key(presented_key(headers)?);
        let mut ok = false;
        for k in &self.admin_keys {
            ok |= digest_eq(&digest, k);
        }
        if ok { Ok(()) } else { Err(AuthError::NotAdmin) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        h
    }

    fn access(tenants: &[(&str, &str)], admin: &[&str]) -> Access {
        let raw = tenants
            .iter()
            .map(|(name, key)| {
                let t = RawTenant {
                    keys: vec![format_digest(&hash_key(key))],
                    key_env: vec![],
                    requests_per_minute: None,
                    max_unfinished_jobs: None,
                    retention: None,
                };
                (name.to_string(), t)
            })
            .collect();
        let admin = RawAdmin {
            keys: admin.iter().map(|k| format_digest(&hash_key(k))).collect(),
            key_env: vec![],
        };
        let mut problems = crate::http::Problems::new("test.toml");
        let a = validate(raw, Some(admin), crate::http::SecretSource::Environment, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        a
    }

    #[test]
    fn open_mode_keys_become_hashed_tenants() {
        let open = Access::default();
        let a = open.authenticate(&with("authorization", "Bearer sk-a")).unwrap();
        let b = open.authenticate(&with("authorization", "bearer sk-b")).unwrap();
        assert_ne!(a, b);
        assert_eq!(a, open.authenticate(&with("api-key", "sk-a")).unwrap());
        assert!(!a.id.contains("sk-a") && !a.name.contains("sk-a"));
        assert_eq!(a.id.len(), 64);
    }

    #[test]
    fn configured_keys_name_their_tenant_and_others_are_refused() {
        let a = access(&[("acme", "sk-acme"), ("globex", "sk-globex")], &["sk-admin"]);
        assert_eq!(
            a.authenticate(&with("authorization", "Bearer sk-acme")).unwrap().id,
            "acme"
        );
        assert_eq!(a.authenticate(&with("api-key", "sk-globex")).unwrap().name, "globex");
        for h in [
            with("authorization", "Bearer sk-nobody"),
            with("authorization", "Bearer sk-admin"),
        ] {
            let e = a.authenticate(&h).unwrap_err();
            assert_eq!(e, AuthError::Incorrect);
            assert_eq!(e.code(), Some("invalid_api_key"));
            assert!(!e.to_string().contains("sk-"));
        }
        assert!(a.authenticate_admin(&with("authorization", "Bearer sk-admin")).is_ok());
        assert!(a.authenticate_admin(&with("authorization", "Bearer sk-acme")).is_err());
        assert!(
            Access::default()
                .authenticate_admin(&with("authorization", "Bearer x"))
                .is_err()
        );
    }

    #[test]
    fn missing_or_malformed_keys_are_401() {
        for h in [
            HeaderMap::new(),
            with("authorization", "Bearer "),
            with("authorization", "Basic abc"),
        ] {
            assert!(matches!(
                Access::default().authenticate(&h),
                Err(AuthError::Missing | AuthError::Malformed)
            ));
        }
    }

    #[test]
    fn bad_tenant_config_is_reported_without_echoing_values() {
        let mut tenants = BTreeMap::new();
        tenants.insert(
            "shadow".to_owned(),
            RawTenant {
                keys: vec!["sk-raw-key-pasted-here".into()],
                key_env: vec!["SORA_SHIM_TEST_UNSET_VARIABLE".into()],
                requests_per_minute: Some(0),
                max_unfinished_jobs: None,
                retention: Some("forever".into()),
            },
        );
        let mut problems = crate::http::Problems::new("test.toml");
        validate(tenants, None, crate::http::SecretSource::Environment, &mut problems);
        let text = format!("{problems:?}");
        for needle in [
            "tenants.shadow",
            "keys[0]",
            "SORA_SHIM_TEST_UNSET_VARIABLE",
            "requests_per_minute",
            "no keys",
            "retention",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        assert!(!text.contains("sk-raw-key-pasted-here"));
    }

    #[test]
    fn digests_round_trip() {
        let d = hash_key("sk-test");
        assert_eq!(parse_digest(&format_digest(&d)), Some(d));
        assert_eq!(parse_digest("sha256:abc"), None);
        assert_eq!(parse_digest("md5:00"), None);
    }
}
