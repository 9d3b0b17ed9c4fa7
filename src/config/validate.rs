//! Stage 2: the raw, merged config becomes a [`Config`] whose fields cannot hold a bad value; every problem is
//! collected (as `file: key.path: message`) before any is reported. Backends and models are in their own files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::backends::validate_backends;
use super::models::{validate_api, validate_models};
use super::*;

pub(super) fn validate(
    raw: RawConfig,
    source: String,
    data_dir: PathBuf,
    secrets: SecretSource,
) -> Result<Config, ConfigError> {
    let mut p = Problems::new(source.clone());
    let base_dir = Path::new(&source)
        .parent()
        .filter(|_| source != "<embedded default>")
        .map(Path::to_owned)
        .unwrap_or_default();
    let server = validate_server(raw.server.unwrap_or_default(), &base_dir, &mut p);
    let prices: BTreeMap<String, f64> = raw
        .backends
        .iter()
        .flatten()
        .filter_map(|(name, b)| b.price_per_second.map(|price| (name.clone(), price)))
        .collect();
    for (name, price) in &prices {
        if !(price.is_finite() && *price >= 0.0) {
            p.add(
                &format!("backends.{name}.price_per_second"),
                "must be a number, 0 or more",
            );
        }
    }
    let backends = validate_backends(raw.backends.unwrap_or_default(), &base_dir, secrets, &mut p);
    let models = validate_models(raw.models.unwrap_or_default(), &backends, &mut p);
    let api = validate_api(raw.api.unwrap_or_default(), &models, &mut p);
    let store = validate_store(raw.store.unwrap_or_default(), &data_dir, &base_dir, secrets, &mut p);
    let assets = validate_assets(raw.assets.unwrap_or_default(), &data_dir, &mut p);
    if let (StoreConfig::Postgres { .. }, AssetStorage::Local { .. }) = (&store, &assets.storage)
        && !assets.shared
    {
        p.add(
            "assets.kind",
            "a PostgreSQL store is shared by replicas, and each replica must find every video's files: use \
             kind = \"s3\", or set shared = true if assets.dir is one file system mounted on every replica",
        );
    }
    let w = raw.worker.unwrap_or_default();
    let worker = WorkerConfig {
        poll_interval: Duration::from_millis(positive(&mut p, "worker.poll_interval_ms", w.poll_interval_ms, 500)),
        retry_base: Duration::from_millis(positive(&mut p, "worker.retry_base_ms", w.retry_base_ms, 500)),
        retry_max: Duration::from_millis(positive(&mut p, "worker.retry_max_ms", w.retry_max_ms, 30_000)),
        queue_deadline: Duration::from_secs(positive(
            &mut p,
            "worker.queue_deadline_secs",
            w.queue_deadline_secs,
            3600,
        )),
        job_deadline: Duration::from_secs(positive(
            &mut p,
            "worker.job_deadline_secs",
            w.job_deadline_secs,
            86_400,
        )),
        max_active_steps: usize::try_from(positive(&mut p, "worker.max_active_steps", w.max_active_steps, 256))
            .unwrap_or(256),
        sweep_interval: match &store {
            StoreConfig::Postgres { lease, .. } => (*lease / 3).min(Duration::from_secs(5)),
            StoreConfig::Sqlite { .. } => Duration::from_secs(5),
        },
    };
    let shadow_queue = usize::try_from(positive(&mut p, "worker.shadow_queue", w.shadow_queue, 256)).unwrap_or(256);
    let h = raw.health.unwrap_or_default();
    let failure_rate = h.failure_rate.unwrap_or(0.5);
    if !(failure_rate > 0.0 && failure_rate <= 1.0) {
        p.add("health.failure_rate", "must be above 0 and at most 1");
    }
    let health = HealthConfig {
        window: Duration::from_secs(positive(&mut p, "health.window_secs", h.window_secs, 60)),
        min_requests: u32::try_from(positive(
            &mut p,
            "health.min_requests",
            h.min_requests.map(u64::from),
            5,
        ))
        .unwrap_or(5),
        failure_rate,
        open_for: Duration::from_secs(positive(&mut p, "health.open_secs", h.open_secs, 30)),
    };
    let access = crate::auth::validate(raw.tenants.unwrap_or_default(), raw.admin, secrets, &mut p);
    let moderation = crate::moderation::validate(raw.moderation.unwrap_or_default(), &base_dir, secrets, &mut p);
    let webhooks = crate::webhooks::validate(raw.webhooks.unwrap_or_default(), &access, &base_dir, secrets, &mut p);
    for (name, m) in &models {
        if let Some(policy) = &m.moderation
            && !moderation.contains_key(policy)
        {
            p.add(
                &format!("models.{name}.moderation"),
                format!("no policy named {policy:?} under [moderation]"),
            );
        }
    }
    if !p.lines.is_empty() {
        return Err(ConfigError::Invalid(p.lines));
    }
    Ok(Config {
        warnings: p.warnings,
        source,
        data_dir,
        server,
        api,
        store,
        assets,
        worker,
        health,
        prices,
        shadow_queue,
        access,
        moderation,
        webhooks,
        backends,
        models,
    })
}

pub(super) fn validate_server(s: RawServer, base_dir: &Path, p: &mut Problems) -> ServerConfig {
    let listen_text = s.listen.unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let listen = listen_text.parse().unwrap_or_else(|e| {
        p.add(
            "server.listen",
            format!("{listen_text:?} is not an address like 127.0.0.1:8080 ({e})"),
        );
        SocketAddr::from(([127, 0, 0, 1], 8080))
    });
    ServerConfig {
        listen,
        max_body_bytes: positive(p, "server.max_body_bytes", s.max_body_bytes, 52_428_800),
        poll_after_ms: positive(p, "server.poll_after_ms", s.poll_after_ms, 2000),
        shutdown_grace: Duration::from_secs(s.shutdown_grace_secs.unwrap_or(20)),
        header_read_timeout: Duration::from_secs(positive(
            p,
            "server.header_read_timeout_secs",
            s.header_read_timeout_secs,
            30,
        )),
        max_upload_bytes: positive(p, "server.max_upload_bytes", s.max_upload_bytes, 52_428_800),
        max_header_bytes: match s.max_header_bytes {
            // hyper's HTTP/1.1 read buffer cannot be smaller than 8 KiB.
            Some(n) if !(8192..=1_048_576).contains(&n) => {
                p.add("server.max_header_bytes", "must be between 8192 and 1048576");
                65_536
            }
            Some(n) => n as u32,
            None => 65_536,
        },
        request_timeout: Duration::from_secs(positive(p, "server.request_timeout_secs", s.request_timeout_secs, 300)),
        idle_timeout: Duration::from_secs(positive(p, "server.idle_timeout_secs", s.idle_timeout_secs, 120)),
        max_connections: usize::try_from(positive(p, "server.max_connections", s.max_connections, 10_000))
            .unwrap_or(usize::MAX),
        tls: match (s.tls_cert, s.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let files = TlsFiles {
                    cert: resolve(base_dir, cert),
                    key: resolve(base_dir, key),
                };
                if let Err(e) = crate::tls::load_pair(&files.cert, &files.key) {
                    p.add("server.tls_cert", e);
                }
                Some(files)
            }
            _ => {
                p.add(
                    "server.tls_cert",
                    "tls_cert and tls_key go together: give both or neither",
                );
                None
            }
        },
    }
}

fn validate_store(
    s: RawStore,
    data_dir: &Path,
    base_dir: &Path,
    secrets: SecretSource,
    p: &mut Problems,
) -> StoreConfig {
    let kind = s.kind.as_deref().unwrap_or("sqlite");
    let postgres_only = [
        ("url_env", s.url_env.is_some()),
        ("pool_size", s.pool_size.is_some()),
        ("ca_file", s.ca_file.is_some()),
        ("lease_secs", s.lease_secs.is_some()),
    ];
    match kind {
        "sqlite" => {
            for (key, _) in postgres_only.iter().filter(|(_, set)| *set) {
                p.add(&format!("store.{key}"), "only for kind = \"postgres\"");
            }
            StoreConfig::Sqlite {
                path: resolve(data_dir, s.path.unwrap_or_else(|| "sora-shim.db".into())),
            }
        }
        "postgres" => {
            // (`path` is left alone: the embedded default sets it, and PostgreSQL never reads it.)
            let url_env = s.url_env.unwrap_or_else(|| "SORA_SHIM_DATABASE_URL".into());
            let url = match secrets.read(&url_env) {
                Ok(Some(url)) => {
                    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                        p.add(
                            "store.url_env",
                            format!("{url_env} must hold a postgres:// URL (postgres://user:password@host:5432/db)"),
                        );
                    } else if let Err(e) = url.parse::<tokio_postgres::Config>() {
                        // Read as `serve` will read it (sslmode, port, options), so `check` catches what start-up
                        // would refuse. The parser's message names the part, never the password.
                        p.add("store.url_env", format!("{url_env} is not a valid PostgreSQL URL: {e}"));
                    }
                    url
                }
                Ok(None) => String::new(),
                Err(e) => {
                    p.add("store.url_env", format!("{e} (the PostgreSQL connection URL)"));
                    String::new()
                }
            };
            let lease = positive(p, "store.lease_secs", s.lease_secs, 30);
            if lease < 3 {
                p.add(
                    "store.lease_secs",
                    "must be at least 3 (a lease is renewed every lease/3, at most every 5 s)",
                );
            }
            let ca_file = s.ca_file.map(|f| resolve(base_dir, f));
            if let Some(f) = &ca_file
                && !f.is_file()
            {
                p.add("store.ca_file", format!("{} is not a readable file", f.display()));
            }
            StoreConfig::Postgres {
                options: crate::store::postgres::PgOptions {
                    url: crate::http::Secret::new(url),
                    pool_size: positive(p, "store.pool_size", s.pool_size, 16) as usize,
                    ca_file,
                },
                url_env,
                lease: Duration::from_secs(lease),
            }
        }
        other => {
            p.add(
                "store.kind",
                format!("unknown store {other:?}; supported: \"sqlite\", \"postgres\""),
            );
            StoreConfig::Sqlite { path: PathBuf::new() }
        }
    }
}

pub(super) fn validate_assets(a: RawAssets, data_dir: &Path, p: &mut Problems) -> AssetsConfig {
    let retention = match a.retention.as_deref().map(crate::video::parse_retention) {
        None => Some(Duration::from_secs(3600)),
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            p.add("assets.retention", e);
            None
        }
    };
    let sweep_interval = Duration::from_secs(positive(p, "assets.sweep_interval_secs", a.sweep_interval_secs, 60));
    let storage = match a.kind.as_deref().unwrap_or("local") {
        "local" => AssetStorage::Local {
            dir: resolve(data_dir, a.dir.unwrap_or_else(|| "assets".into())),
        },
        "s3" => {
            let bucket = a.bucket.unwrap_or_default();
            if bucket.is_empty() {
                p.add("assets.bucket", "missing: the bucket to store assets in");
            }
            if let Some(e) = &a.endpoint
                && !(e.starts_with("https://") || e.starts_with("http://"))
            {
                p.add("assets.endpoint", format!("{e:?} is not an http(s) URL"));
            }
            AssetStorage::S3 {
                settings: crate::assets::object::S3Settings {
                    bucket,
                    prefix: a.prefix.unwrap_or_default(),
                    region: a.region,
                    endpoint: a.endpoint,
                },
                scratch: data_dir.join("scratch"),
            }
        }
        other => {
            p.add(
                "assets.kind",
                format!("unknown asset storage {other:?}; supported: \"local\", \"s3\""),
            );
            AssetStorage::Local { dir: PathBuf::new() }
        }
    };
    let shared = a.shared.unwrap_or(false);
    if shared && !matches!(storage, AssetStorage::Local { .. }) {
        p.add("assets.shared", "only for kind = \"local\"");
    }
    AssetsConfig {
        storage,
        retention,
        sweep_interval,
        shared,
    }
}
