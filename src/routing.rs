//! Which backend serves a new job of a Sora model: the model's weighted targets, picked by a sticky hash, and
//! the fallback order used when the picked backend is down (see `worker`, and `health` for circuit breakers).
//!
//! The pick is deterministic: SHA-256 of the model name and the sticky key (the tenant by default) gives a point
//! in `[0, total weight)`, and the targets own consecutive slices of that range in the order configured. So a
//! tenant stays on one backend while the weights are unchanged, and raising a target's weight from 5 to 50 only
//! moves tenants onto it (the slices grow from the first target's side).

use sha2::{Digest, Sha256};

/// What an empty route (refused by config validation) would pick: no backend the worker can find.
static NO_TARGET: Target = Target {
    backend: String::new(),
    weight: 0,
    model: None,
    options: serde_json::Value::Null,
};

/// What keeps a client on one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sticky {
    /// The API key's tenant: one client, one backend.
    Tenant,
    /// The request's `Idempotency-Key` (the tenant when there is none).
    IdempotencyKey,
    /// Each job on its own.
    Job,
}

/// One weighted target of a route: a backend, optionally with its own provider model and options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub backend: String,
    pub weight: u32,
    pub model: Option<String>,
    pub options: serde_json::Value,
}

impl Target {
    pub fn new(backend: &str, weight: u32) -> Target {
        Target {
            backend: backend.to_owned(),
            weight,
            model: None,
            options: serde_json::Value::Null,
        }
    }

    /// What a job picked for this target carries over its backend's own settings, if anything.
    pub fn override_for_job(&self) -> Option<crate::video::TargetOverride> {
        (self.model.is_some() || !self.options.is_null()).then(|| crate::video::TargetOverride {
            model: self.model.clone(),
            options: self.options.clone(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// In the configured order.
    targets: Vec<Target>,
    fallback: Vec<String>,
    pub sticky: Sticky,
}

impl Route {
    pub fn new(targets: Vec<Target>, fallback: Vec<String>, sticky: Sticky) -> Route {
        Route {
            targets,
            fallback,
            sticky,
        }
    }

    /// Backends to move a job to when its target is down, in order.
    pub fn fallback(&self) -> &[String] {
        &self.fallback
    }

    /// Every backend the route may send a job to: its targets in order (weight 0 included), then the fallback.
    pub fn backends(&self) -> impl Iterator<Item = &str> {
        self.targets
            .iter()
            .map(|t| t.backend.as_str())
            .chain(self.fallback.iter().map(String::as_str))
    }

    /// The target for a new job of `model`. `tenant` is the tenant id, `idempotency_key` the request's key if
    /// any, `job_nonce` something unique to this request (for `Sticky::Job`).
    pub fn pick(&self, model: &str, tenant: &str, idempotency_key: Option<&str>, job_nonce: &str) -> &Target {
        let key = match self.sticky {
            Sticky::Tenant => tenant,
            Sticky::IdempotencyKey => idempotency_key.unwrap_or(tenant),
            Sticky::Job => job_nonce,
        };
        let total: u64 = self.targets.iter().map(|t| u64::from(t.weight)).sum();
        if total == 0 {
            // Config validation refuses this; an empty route picks nothing the worker could find.
            return self.targets.first().unwrap_or(&NO_TARGET);
        }
        let digest = Sha256::new()
            .chain_update(model)
            .chain_update([0])
            .chain_update(key)
            .finalize();
        let mut eight = [0u8; 8];
        eight.copy_from_slice(&digest[..8]);
        let mut point = u64::from_be_bytes(eight) % total;
        for target in &self.targets {
            if point < u64::from(target.weight) {
                return target;
            }
            point -= u64::from(target.weight);
        }
        self.targets.last().unwrap_or(&NO_TARGET)
    }

    /// Where a job goes when `current` cannot take it: the next fallback after `current` (or the first, when
    /// `current` is a target), skipping `current` itself.
    pub fn next_after(&self, current: &str) -> Option<&str> {
        let start = self.fallback.iter().position(|b| b == current).map_or(0, |i| i + 1);
        self.fallback[start..]
            .iter()
            .map(String::as_str)
            .find(|b| *b != current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(weights: &[(&str, u32)]) -> Route {
        Route::new(
            weights.iter().map(|(b, w)| Target::new(b, *w)).collect(),
            vec!["c".into(), "d".into()],
            Sticky::Tenant,
        )
    }

    #[test]
    fn weights_split_tenants_and_a_tenant_stays_put() {
        let r = route(&[("a", 90), ("b", 10)]);
        let picks: Vec<&str> = (0..10_000)
            .map(|i| r.pick("sora-2", &format!("t{i}"), None, "").backend.as_str())
            .collect();
        let b = picks.iter().filter(|p| **p == "b").count();
        assert!((800..=1200).contains(&b), "{b} of 10000 on b");
        for i in 0..100 {
            let t = format!("t{i}");
            assert_eq!(r.pick("sora-2", &t, None, "x"), r.pick("sora-2", &t, None, "y"));
        }
    }

    #[test]
    fn raising_a_weight_only_moves_tenants_onto_that_target() {
        let before = route(&[("b", 5), ("a", 95)]);
        let after = route(&[("b", 50), ("a", 50)]);
        for i in 0..5000 {
            let t = format!("t{i}");
            if before.pick("m", &t, None, "").backend == "b" {
                assert_eq!(after.pick("m", &t, None, "").backend, "b", "{t} left b when b grew");
            }
        }
    }

    #[test]
    fn fallback_order() {
        let r = route(&[("a", 1)]);
        assert_eq!(r.next_after("a"), Some("c"));
        assert_eq!(r.next_after("c"), Some("d"));
        assert_eq!(r.next_after("d"), None);
    }
}
