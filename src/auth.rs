//! Authentication: the bearer key names the tenant. In the open development mode (the embedded default) any
//! non-empty key is accepted and each distinct key is its own tenant; only a SHA-256 of the key is kept.

use hyper::header::{AUTHORIZATION, HeaderMap};
use sha2::{Digest, Sha256};

use crate::api::error::ApiError;

/// Who is calling: the hex SHA-256 of their API key. Never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(pub String);

/// Reads `Authorization: Bearer <key>` (or Azure's `api-key: <key>`).
pub fn authenticate(headers: &HeaderMap) -> Result<Tenant, ApiError> {
    let bearer = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::trim);
    let key = match bearer {
        Some(value) => match value.split_once(' ') {
            Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => key.trim(),
            _ => {
                return Err(ApiError::Unauthorized {
                    message: "Invalid authorization header: expected 'Bearer YOUR_API_KEY'.".into(),
                    code: Some("invalid_api_key"),
                });
            }
        },
        None => headers
            .get("api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .unwrap_or(""),
    };
    if key.is_empty() {
        return Err(ApiError::Unauthorized {
            message: "You didn't provide an API key. You need to provide your API key in an Authorization header \
                      using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                .into(),
            code: None,
        });
    }
    Ok(Tenant(hex::encode(Sha256::digest(key.as_bytes()))))
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

    #[test]
    fn keys_become_hashed_tenants() {
        let a = authenticate(&with("authorization", "Bearer sk-a")).unwrap();
        let b = authenticate(&with("authorization", "bearer sk-b")).unwrap();
        assert_ne!(a, b);
        assert_eq!(a, authenticate(&with("api-key", "sk-a")).unwrap());
        assert!(!a.0.contains("sk-a"));
        assert_eq!(a.0.len(), 64);
    }

    #[test]
    fn missing_or_malformed_keys_are_401() {
        for h in [
            HeaderMap::new(),
            with("authorization", "Bearer "),
            with("authorization", "Basic abc"),
        ] {
            assert!(matches!(authenticate(&h), Err(ApiError::Unauthorized { .. })));
        }
    }
}
