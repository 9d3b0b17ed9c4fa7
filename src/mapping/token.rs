//! Credentials that are minted rather than read: a Google service-account OAuth2 access token (a signed RS256
//! JWT exchanged at the token URI, cached and refreshed before it expires, as Vertex AI needs) and an HS256 JWT
//! signed for each request (as Kling needs). Hand-written on `ring` because each is a few lines of JOSE and a
//! JWT crate would add a second crypto stack beside the one rustls already brings.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::http::HttpClient;

/// Refresh a cached token this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSpec {
    /// The secret holds a service-account key file (JSON with `client_email`, `private_key`, `token_uri`).
    GoogleServiceAccount { secret: String, scope: String },
    /// `iss` = the access key, signed with the secret key; valid `ttl` seconds.
    Hs256Jwt {
        access_key: String,
        secret_key: String,
        ttl: u64,
    },
}

pub struct TokenSource {
    spec: TokenSpec,
    cached: Mutex<Option<(String, Instant)>>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `header.claims.signature`, with the signing done by `sign`.
fn jwt(alg: &str, claims: &Value, sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>) -> Result<String, String> {
    let header = json!({"alg": alg, "typ": "JWT"});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = sign(input.as_bytes())?;
    Ok(format!("{input}.{}", b64(&signature)))
}

pub fn hs256_jwt(access_key: &str, secret_key: &str, ttl: u64, now: u64) -> Result<String, String> {
    let claims = json!({"iss": access_key, "exp": now + ttl, "nbf": now.saturating_sub(5)});
    jwt("HS256", &claims, |input| {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret_key.as_bytes());
        Ok(ring::hmac::sign(&key, input).as_ref().to_vec())
    })
}

/// The DER inside a PEM block (`-----BEGIN PRIVATE KEY-----`).
fn pem_to_der(pem: &str) -> Result<Vec<u8>, String> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
    STANDARD
        .decode(body)
        .map_err(|_| "the service account's private_key is not a PEM key".to_owned())
}

pub fn service_account_assertion(key_file: &Value, scope: &str, now: u64) -> Result<(String, String), String> {
    let field = |name: &str| {
        key_file[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("the service account key has no {name:?}"))
    };
    let email = field("client_email")?;
    let token_uri = field("token_uri").unwrap_or_else(|_| "https://oauth2.googleapis.com/token".to_owned());
    let der = pem_to_der(&field("private_key")?)?;
    let key = ring::signature::RsaKeyPair::from_pkcs8(&der)
        .map_err(|_| "the service account's private_key is not a PKCS#8 RSA key".to_owned())?;
    let claims = json!({"iss": email, "scope": scope, "aud": token_uri, "iat": now, "exp": now + 3600});
    let assertion = jwt("RS256", &claims, |input| {
        let mut sig = vec![0u8; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            input,
            &mut sig,
        )
        .map_err(|_| "signing failed".to_owned())?;
        Ok(sig)
    })?;
    Ok((assertion, token_uri))
}

impl TokenSource {
    pub fn new(spec: TokenSpec) -> TokenSource {
        TokenSource {
            spec,
            cached: Mutex::new(None),
        }
    }

    /// A valid token. `secret` looks up a secret's value by name. Errors never contain a secret.
    pub async fn get(&self, http: &HttpClient, secret: impl Fn(&str) -> Option<String>) -> Result<String, String> {
        match &self.spec {
            TokenSpec::Hs256Jwt {
                access_key,
                secret_key,
                ttl,
            } => {
                let ak = secret(access_key).ok_or("access key secret missing")?;
                let sk = secret(secret_key).ok_or("secret key secret missing")?;
                hs256_jwt(&ak, &sk, *ttl, now_secs())
            }
            TokenSpec::GoogleServiceAccount { secret: name, scope } => {
                let mut cached = self.cached.lock().await;
                if let Some((token, until)) = cached.as_ref()
                    && Instant::now() < *until
                {
                    return Ok(token.clone());
                }
                let key_file: Value = secret(name)
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .ok_or("the service account secret is not a JSON key file")?;
                let (assertion, token_uri) = service_account_assertion(&key_file, scope, now_secs())?;
                let form = form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
                    .append_pair("assertion", &assertion)
                    .finish();
                let reply = http
                    .send_form(&token_uri, &form)
                    .await
                    .map_err(|e| format!("token exchange: {e}"))?;
                let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
                let Some(token) = body["access_token"].as_str() else {
                    return Err(format!(
                        "token exchange answered HTTP {} without an access_token",
                        reply.status
                    ));
                };
                let lifetime = Duration::from_secs(body["expires_in"].as_u64().unwrap_or(3600));
                *cached = Some((
                    token.to_owned(),
                    Instant::now() + lifetime.saturating_sub(REFRESH_MARGIN),
                ));
                Ok(token.to_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hs256_jwt_matches_an_independent_computation() {
        let token = hs256_jwt("ak", "sk", 1800, 1_700_000_000).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            json!({"iss": "ak", "exp": 1_700_001_800u64, "nbf": 1_699_999_995u64})
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"sk");
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        ring::hmac::verify(&key, format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig).unwrap();
    }

    #[test]
    fn a_bad_service_account_key_is_a_clear_error() {
        let e = service_account_assertion(&json!({"client_email": "a@b", "private_key": "nope"}), "s", 0).unwrap_err();
        assert!(e.contains("private_key"), "{e}");
        let e = service_account_assertion(&json!({}), "s", 0).unwrap_err();
        assert!(e.contains("client_email"), "{e}");
    }
}
