//! The mapping file as written (`mappings/*.toml`), before validation. Unknown keys are refused. The
//! documentation of every key is `mappings/README.md`.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMapping {
    pub mapping: RawMeta,
    #[serde(default)]
    pub auth: RawAuth,
    pub capabilities: RawCapabilities,
    pub create: RawRequest,
    pub poll: RawRequest,
    pub result: Option<RawRequest>,
    pub upload: Option<RawUpload>,
    pub callback: Option<RawCallback>,
    pub outputs: RawOutputs,
    #[serde(default)]
    pub download: RawDownload,
    pub states: BTreeMap<String, String>,
    #[serde(default)]
    pub errors: Vec<RawErrorRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMeta {
    pub name: String,
    pub version: String,
    /// The provider documentation the mapping follows.
    pub docs: String,
    /// Whether a create whose outcome is unknown may be sent again (only for providers that deduplicate).
    #[serde(default)]
    pub resubmit_after_lost: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Secret names; the backend config says which environment variable holds each.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Header name → jq over `{secrets}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Query parameter name → jq over `{secrets}`.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// A minted credential, seen by header and query expressions as `.token`.
    pub token: Option<RawToken>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    /// `google_service_account` or `hs256_jwt`.
    pub kind: String,
    /// google_service_account: the secret holding the key file JSON.
    pub secret: Option<String>,
    pub scope: Option<String>,
    /// hs256_jwt: the secrets holding the access key (`iss`) and the signing key.
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub ttl_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCapabilities {
    pub operations: Vec<String>,
    #[serde(default = "reject")]
    pub size_policy: String,
    pub sizes: BTreeMap<String, toml::Value>,
    #[serde(default = "reject")]
    pub seconds_policy: String,
    pub seconds: BTreeMap<String, toml::Value>,
    /// How a reference image reaches the provider: `data_uri`, `base64`, `upload` or `none`.
    #[serde(default = "none")]
    pub images: String,
}

fn reject() -> String {
    "reject".into()
}

fn none() -> String {
    "none".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequest {
    #[serde(default = "get")]
    pub method: String,
    pub path: String,
    pub body: Option<String>,
    /// Create: the provider's job id.
    pub job_id: Option<String>,
    /// Create: anything else to keep with the job (status URLs, …).
    pub job_data: Option<String>,
    /// Poll: the provider's state, a key of `[states]`.
    pub state: Option<String>,
    /// Poll: percent done (0–100).
    pub progress: Option<String>,
    /// Poll: `{code, message}` when the state is failed.
    pub error: Option<String>,
}

fn get() -> String {
    "GET".into()
}

fn post() -> String {
    "POST".into()
}

fn image() -> String {
    "image".into()
}

/// `[callback]`: the provider calls the shim back when a job changes (a backend turns it on with
/// `callback_base_url`; the create sees the URL as `.callback_url`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCallback {
    /// How the provider signs callbacks: `standard-webhooks` (webhook-id/-timestamp/-signature, HMAC-SHA256 of a
    /// `whsec_` key) or `fal-ed25519` (X-Fal-Webhook-* headers, Ed25519 keys from a JWKS).
    pub verify: String,
    /// standard-webhooks: the backend secret (a name under the backend's `secrets`) holding the signing key.
    pub secret: Option<String>,
    /// fal-ed25519: where the provider publishes its public keys.
    pub jwks_url: Option<String>,
    /// jq over `{body, headers}` → the provider's job id, checked against the job's.
    pub job_id: Option<String>,
    /// jq over `{body, headers}` → what a poll would have answered (seen as `.response` by `poll.state` …).
    pub response: String,
    /// jq over `{body, headers}` → what the `[result]` step would have answered (that call is then skipped).
    pub result: Option<String>,
}

/// `images = "upload"`: the reference image is sent to the provider first, as a multipart file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpload {
    #[serde(default = "post")]
    pub method: String,
    pub path: String,
    /// The form part that carries the file.
    #[serde(default = "image")]
    pub field: String,
    /// jq → an object of more text parts.
    pub form: Option<String>,
    /// jq over the answer → what the create sees as `.image`.
    pub image: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutputs {
    pub video: String,
    pub thumbnail: Option<String>,
    pub spritesheet: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDownload {
    /// Send the auth headers and query with downloads (only ever to the backend's own host and `auth_hosts`).
    #[serde(default)]
    pub auth: bool,
    /// Other hosts that get the credentials with downloads (e.g. `storage.googleapis.com`).
    #[serde(default)]
    pub auth_hosts: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawErrorRule {
    /// jq over `{status, response, headers, step}`; the first rule that is true decides.
    pub when: String,
    /// `rejected` (the job fails with `code`), `retry` (try again later), `ambiguous` (a create may have happened).
    pub kind: String,
    #[serde(default)]
    pub code: Option<String>,
    /// jq over the same context; the message the client sees.
    #[serde(default)]
    pub message: Option<String>,
}
