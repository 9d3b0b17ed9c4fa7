//! Test harness: runs the real `sora-shim` binary on 127.0.0.1:0 with its own data directory and config, and
//! talks to it over real HTTP.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod moto;
pub mod pki;
pub mod postgres;
pub mod receiver;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Config every test run uses unless it passes its own: fast renders, fast polling, small bodies.
pub const TEST_CONFIG: &str = r#"
[server]
max_body_bytes = 2097152
poll_after_ms = 100
[worker]
poll_interval_ms = 50
[backends.local]
kind = "local"
fps = 8
"#;

pub struct Shim {
    pub child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
    config: PathBuf,
    env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
    client: Client<HttpConnector, Full<Bytes>>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Shim {
    /// The config file the shim was started with (rewrite it and send SIGHUP to reload).
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    pub fn start() -> Shim {
        Self::start_with(TEST_CONFIG)
    }

    pub fn start_with(config: &str) -> Shim {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Shim {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        let config_path = tmp.path().join("sora-shim.toml");
        std::fs::write(&config_path, config).unwrap();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut shim = Self::spawn(&data_dir, &config_path, &env);
        shim._tmp = Some(tmp);
        shim.env = env;
        shim
    }

    /// Listening on a given address (a config that names the shim's own URL, for provider callbacks).
    pub fn start_listening(config: &str, env: &[(&str, &str)], listen: &str) -> Shim {
        let mut env: Vec<(&str, &str)> = env.to_vec();
        env.push(("SORA_SHIM_TEST_LISTEN", listen));
        Self::start_with_env(config, &env)
    }

    /// A shim on an existing config file and data directory (owned by the caller).
    pub fn start_on(config: &Path, data_dir: &Path) -> Shim {
        Self::spawn(data_dir, config, &[])
    }

    /// Starts another process on the same data directory and config (after a crash or a stop).
    pub fn restart(mut self) -> Shim {
        let tmp = self._tmp.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut again = Self::spawn(&self.data_dir, &self.config, &self.env);
        again.env = std::mem::take(&mut self.env);
        again._tmp = tmp;
        again
    }

    fn spawn(data_dir: &Path, config: &Path, env: &[(String, String)]) -> Shim {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.parent().unwrap().join("shim.log"))
            .unwrap();
        let listen = env
            .iter()
            .find(|(k, _)| k == "SORA_SHIM_TEST_LISTEN")
            .map_or("127.0.0.1:0", |(_, v)| v.as_str());
        let mut child = Command::new(env!("CARGO_BIN_EXE_sora-shim"))
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .arg("--config")
            .arg(config)
            .env("SORA_SHIM_LOG", "info")
            .env("SORA_SHIM_TEST_PROVIDER_KEY", FAKE_KEY)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let url = listening_on(&mut child, Some(&data_dir.parent().unwrap().join("shim.log")));
        let addr = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_owned();
        Shim {
            child,
            addr,
            data_dir: data_dir.to_owned(),
            config: config.to_owned(),
            env: Vec::new(),
            _tmp: None,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.parent().unwrap().join("shim.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap()
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let resp = self
            .client
            .request(req.body(Full::new(body.into())).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    pub async fn get(&self, path: &str, key: &str) -> Reply {
        self.call(Method::GET, path, Some(key), &[], Bytes::new()).await
    }

    pub async fn post_json(&self, path: &str, key: &str, body: &Value) -> Reply {
        self.call(
            Method::POST,
            path,
            Some(key),
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    pub async fn post_multipart(&self, path: &str, key: &str, content_type: &str, body: Vec<u8>) -> Reply {
        self.call(Method::POST, path, Some(key), &[("content-type", content_type)], body)
            .await
    }

    /// Creates a video (JSON body), checks the answer against the schema and returns its id.
    pub async fn create(&self, key: &str, body: &Value) -> String {
        let r = self.post_json("/v1/videos", key, body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_schema("video", &v);
        v["id"].as_str().unwrap().to_owned()
    }

    /// Polls a video until it is completed or failed, checking the status set and monotonic progress.
    pub async fn wait(&self, id: &str, key: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last_progress = 0;
        loop {
            let r = self.get(&format!("/v1/videos/{id}"), key).await;
            assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
            let v = r.json();
            let status = v["status"].as_str().unwrap().to_owned();
            assert!(["queued", "in_progress", "completed", "failed"].contains(&status.as_str()));
            let progress = v["progress"].as_i64().unwrap();
            assert!(
                progress >= last_progress,
                "progress went back from {last_progress} to {progress}"
            );
            last_progress = progress;
            if status == "completed" || status == "failed" {
                assert!(r.header("openai-poll-after-ms").is_none());
                return v;
            }
            assert_eq!(r.header("openai-poll-after-ms"), Some("100"));
            assert!(Instant::now() < deadline, "video {id} still {status}\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The URL from the first stdout line every server here prints: `listening on http://ADDR`; otherwise a panic
/// that shows the server's log (`log`), where it says why it did not start.
fn listening_on(child: &mut Child, log: Option<&Path>) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| {
            let log = log.and_then(|l| std::fs::read_to_string(l).ok()).unwrap_or_default();
            panic!("unexpected first line {line:?}; log:\n{log}")
        })
        .to_owned()
}

/// A multipart/form-data body: `(name, filename, content type, bytes)`; text parts have no filename.
pub fn multipart(parts: &[(&str, Option<&str>, &str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "sorashimtestboundary7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, filename, content_type, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: {content_type}\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Validates `value` against one of `schemas/sora/*.schema.json`.
pub fn assert_schema(name: &str, value: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas/sora")
        .join(format!("{name}.schema.json"));
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(value).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{name} schema violations: {errors:?}\n{value:#}");
}

/// An error response: status, envelope shape, and the fields a test cares about.
pub fn assert_error(r: &Reply, status: u16, param: Option<&str>, code: Option<&str>) -> Value {
    assert_eq!(r.status.as_u16(), status, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("x-request-id").is_some());
    let v = r.json();
    assert_schema("error", &v);
    assert_eq!(v["error"]["param"].as_str(), param, "{v}");
    if code.is_some() {
        assert_eq!(v["error"]["code"].as_str(), code, "{v}");
    }
    v
}

/// A fake provider from `tests/fakes/` (Python, standard library only) on 127.0.0.1:0.
pub struct Fake {
    pub child: Child,
    pub url: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

pub const FAKE_KEY: &str = "test-key";

impl Fake {
    pub fn start(name: &str) -> Fake {
        Self::start_with_env(name, &[])
    }

    pub fn start_with_env(name: &str, env: &[(&str, &str)]) -> Fake {
        Self::start_with_args(name, env, &[])
    }

    /// With extra command-line arguments (`--tls-cert`, `--tls-key`, `--key`).
    pub fn start_with_args(name: &str, env: &[(&str, &str)], args: &[&str]) -> Fake {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fakes")
            .join(format!("{name}.py"));
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--port", "0", "--key", FAKE_KEY])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = listening_on(&mut child, None);
        Fake {
            child,
            url,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn control(&self, method: Method, what: &str, body: String) -> Value {
        let req = Request::builder()
            .method(method)
            .uri(format!("{}/__control/{what}", self.url))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = self.client.request(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(
            status.is_success(),
            "control {what}: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    }

    /// Replaces the fake's fault plan.
    pub async fn faults(&self, plan: Value) {
        self.control(Method::POST, "faults", plan.to_string()).await;
    }

    pub async fn stats(&self) -> Value {
        self.control(Method::GET, "stats", String::new()).await
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A shim config serving `sora-2` and `sora-2-pro` through one mapped backend at `fake`.
pub fn mapped_config(mapping: &str, fake: &Fake, model: &str, extra: &str) -> String {
    format!(
        r#"
[server]
poll_after_ms = 100
[worker]
poll_interval_ms = 50
retry_base_ms = 50
retry_max_ms = 400
[backends.prov]
kind = "mapping"
mapping = "{mapping}"
base_url = "{url}"
{secrets}
model = "{model}"
timeout_secs = 5
{extra}
[models."sora-2"]
backend = "prov"
sizes = ["720x1280", "1280x720"]
seconds = ["4", "8", "12"]
"#,
        url = fake.url,
        secrets = PROVIDERS
            .get(mapping)
            .and_then(|p| p.secret.as_deref())
            .map(|name| format!("secrets = {{ {name} = \"SORA_SHIM_TEST_PROVIDER_KEY\" }}"))
            .unwrap_or_default(),
    )
}

/// One built-in mapping's row of tests/fakes/providers.toml (the table the contract suite reads too).
#[derive(serde::Deserialize)]
struct Provider {
    fake: String,
    model: String,
    secret: Option<String>,
    #[serde(default)]
    settings: String,
}

static PROVIDERS: std::sync::LazyLock<std::collections::BTreeMap<String, Provider>> = std::sync::LazyLock::new(|| {
    toml::from_str(include_str!("../fakes/providers.toml")).expect("tests/fakes/providers.toml")
});

/// (mapping, fake, provider model) for every mapping but veo-vertex, whose service-account key
/// `tests/mapped.rs` mints for its own test.
pub static BACKENDS: std::sync::LazyLock<Vec<(&'static str, &'static str, &'static str)>> =
    std::sync::LazyLock::new(|| {
        PROVIDERS
            .iter()
            .filter(|(_, p)| p.secret.as_deref() != Some("service_account"))
            .map(|(m, p)| (m.as_str(), p.fake.as_str(), p.model.as_str()))
            .collect()
    });

/// Where `mapping` is in [`BACKENDS`].
pub fn index_of(mapping: &str) -> usize {
    BACKENDS
        .iter()
        .position(|(m, _, _)| *m == mapping)
        .expect("a mapping in tests/fakes/providers.toml")
}

/// Backend settings a mapping needs beyond the common ones.
pub fn settings(mapping: &str) -> String {
    PROVIDERS
        .get(mapping)
        .map(|p| p.settings.trim().replace("{repo}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_default()
}

/// Makes the RSA key pair of a test Vertex AI service account in `dir` (`sa.pem`, `sa.pub.pem`), with the
/// same script the contract suite uses.
pub fn mint_vertex_key(dir: &Path) -> (PathBuf, PathBuf) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes/vertex_key.py");
    let ok = Command::new("python3").arg(script).arg(dir).status().unwrap().success();
    assert!(
        ok,
        "tests/fakes/vertex_key.py could not make a test key (is openssl installed?)"
    );
    (dir.join("sa.pem"), dir.join("sa.pub.pem"))
}

/// A fake provider and a shim whose `sora-2` routes to it through the mapping.
pub fn start_mapped(which: usize, extra: &str) -> (Fake, Shim) {
    let (mapping, fake, model) = BACKENDS[which];
    let fake = Fake::start(fake);
    let extra = format!("{}\n{extra}", settings(mapping));
    let shim = Shim::start_with(&mapped_config(mapping, &fake, model, &extra));
    (fake, shim)
}

/// A PNG of the given size (a reference image).
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image::RgbImage::from_pixel(width, height, image::Rgb([200, 30, 30]))
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// The value of one sample line of a Prometheus exposition (0 when absent).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

impl Shim {
    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        let r = self.call(Method::GET, "/metrics", None, &[], Bytes::new()).await;
        String::from_utf8_lossy(&r.body).into_owned()
    }
}

/// Runs the `sora-shim` binary with `args` in `cwd` (this process's own when `None`) and waits for it. The
/// environment variables that would point it elsewhere are removed unless `env` sets them.
pub fn cli(args: &[&str], cwd: Option<&Path>, env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sora-shim"));
    command
        .args(args)
        .env_remove("SORA_SHIM_DATA_DIR")
        .env_remove("SORA_SHIM_CONFIG")
        .env_remove("SORA_SHIM_LISTEN")
        .env_remove("SORA_SHIM_ALLOW_OPEN_MODE")
        .env_remove("SSL_CERT_FILE")
        .env("SORA_SHIM_LOG", "warn")
        .envs(env.iter().copied());
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    command.output().unwrap()
}

/// Polls `check` every 50 ms until it holds or `within` passes; false if it never held.
pub async fn eventually(within: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
