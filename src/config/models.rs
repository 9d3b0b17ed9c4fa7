//! `[models.NAME]` and `[api]`: each Sora model's route (weighted targets, fallback, stickiness), shadow
//! candidates, sizes and lengths, and the warnings about what its backends would round.

use std::collections::BTreeMap;

use super::*;

pub(super) fn validate_models(
    raw: BTreeMap<String, RawModel>,
    backends: &BTreeMap<String, BackendConfig>,
    p: &mut Problems,
) -> BTreeMap<String, ModelConfig> {
    let mut out = BTreeMap::new();
    if raw.is_empty() {
        p.add("models", "at least one model must be configured");
    }
    for (name, m) in raw {
        let key = format!("models.\"{name}\"");
        let route = validate_route(&key, &m, backends, p);
        let mut shadow = Vec::new();
        for (i, t) in m.shadow.iter().enumerate() {
            let at = format!("{key}.shadow[{i}]");
            if !backends.contains_key(&t.backend) {
                p.add(
                    &format!("{at}.backend"),
                    format!("no backend named {:?} is configured", t.backend),
                );
            }
            if !(t.sample > 0.0 && t.sample <= 1.0) {
                p.add(&format!("{at}.sample"), "must be above 0 and at most 1");
            }
            shadow.push(ShadowTarget {
                backend: t.backend.clone(),
                sample: t.sample,
            });
        }
        let sizes: Vec<Size> = m
            .sizes
            .iter()
            .filter_map(|s| match s.parse::<Size>() {
                Ok(size) => Some(size),
                Err(e) => {
                    p.add(&format!("{key}.sizes"), e);
                    None
                }
            })
            .collect();
        let seconds: Vec<Seconds> = m
            .seconds
            .iter()
            .filter_map(|s| match s.parse::<Seconds>() {
                Ok(sec) => Some(sec),
                Err(e) => {
                    p.add(&format!("{key}.seconds"), e);
                    None
                }
            })
            .collect();
        if sizes.is_empty() || seconds.is_empty() {
            p.add(&key, "needs at least one size and one duration");
        }
        warn_rounding(&key, &route, m.strict, &sizes, &seconds, backends, p);
        out.insert(
            name,
            ModelConfig {
                route,
                shadow,
                shadow_daily_cap: m.shadow_daily_cap,
                moderation: m.moderation,
                strict: m.strict,
                sizes,
                seconds,
            },
        );
    }
    out
}

/// Warns where a model offers a size or length that one of its backends would round (or refuse): clients asking
/// for it would get something else, or a 400 under `strict`.
pub(super) fn warn_rounding(
    key: &str,
    route: &crate::routing::Route,
    strict: bool,
    sizes: &[Size],
    seconds: &[Seconds],
    backends: &BTreeMap<String, BackendConfig>,
    p: &mut Problems,
) {
    for name in route.backends() {
        let Some(BackendConfig::Mapped(b)) = backends.get(name) else {
            continue;
        };
        let offered = sizes.iter().map(|s| {
            (
                s.to_string(),
                b.mapping.map_size(*s).map(|(got, _)| (got != *s, got.to_string())),
            )
        });
        let lengths = (seconds.iter()).map(|s| {
            (
                format!("\"{s}\""),
                b.mapping
                    .map_seconds(*s)
                    .map(|(got, _)| (got != *s, format!("{got} s"))),
            )
        });
        for (field, values) in [("sizes", offered.collect::<Vec<_>>()), ("seconds", lengths.collect())] {
            for (value, made) in values {
                let message = match made {
                    Ok((false, _)) => continue,
                    Ok((true, got)) if strict => {
                        format!("{value} is made as {got} by backend {name:?}; strict = true refuses it")
                    }
                    Ok((true, got)) => {
                        format!("{value} is made as {got} by backend {name:?}; set strict = true to refuse it instead")
                    }
                    Err(_) => format!("{value} is refused by backend {name:?}, which does not make it"),
                };
                p.warn(&format!("{key}.{field}"), message);
            }
        }
    }
}

pub(super) fn validate_route(
    key: &str,
    m: &RawModel,
    backends: &BTreeMap<String, BackendConfig>,
    p: &mut Problems,
) -> crate::routing::Route {
    use crate::routing::{Route, Sticky, Target};
    let targets: Vec<Target> = match (&m.backend, &m.targets) {
        (Some(b), None) => vec![Target::new(b, 1)],
        (None, Some(t)) if !t.is_empty() => t
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if (t.model.is_some() || t.options.is_some())
                    && matches!(backends.get(&t.backend), Some(BackendConfig::Local { .. }))
                {
                    p.add(
                        &format!("{key}.targets[{i}]"),
                        "model and options are for mapping backends; the local backend takes neither",
                    );
                }
                Target {
                    backend: t.backend.clone(),
                    weight: t.weight,
                    model: t.model.clone(),
                    options: t
                        .options
                        .as_ref()
                        .map(|o| serde_json::to_value(o).unwrap_or(serde_json::Value::Null))
                        .unwrap_or(serde_json::Value::Null),
                }
            })
            .collect(),
        (Some(_), Some(_)) => {
            p.add(key, "set either backend or targets, not both");
            vec![]
        }
        _ => {
            p.add(
                key,
                "missing: backend = \"NAME\", or targets = [{ backend = \"NAME\", weight = N }, …]",
            );
            vec![]
        }
    };
    let field = if m.targets.is_some() { "targets" } else { "backend" };
    for Target { backend, .. } in &targets {
        if !backends.contains_key(backend) {
            p.add(
                &format!("{key}.{field}"),
                format!("no backend named {backend:?} is configured"),
            );
        }
    }
    if !targets.is_empty() && targets.iter().all(|t| t.weight == 0) {
        p.add(&format!("{key}.targets"), "at least one target needs a weight above 0");
    }
    let total: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
    if m.targets.is_some() && total != 100 && total > 0 {
        p.warn(
            &format!("{key}.targets"),
            format!("weights sum to {total}, not 100: each target gets its weight out of {total}"),
        );
    }
    for backend in &m.fallback {
        if !backends.contains_key(backend) {
            p.add(
                &format!("{key}.fallback"),
                format!("no backend named {backend:?} is configured"),
            );
        }
    }
    let sticky = match m.sticky.as_deref().unwrap_or("tenant") {
        "tenant" => Sticky::Tenant,
        "idempotency_key" => Sticky::IdempotencyKey,
        "job" => Sticky::Job,
        other => {
            p.add(
                &format!("{key}.sticky"),
                format!("unknown {other:?}; use \"tenant\", \"idempotency_key\" or \"job\""),
            );
            Sticky::Tenant
        }
    };
    Route::new(targets, m.fallback.clone(), sticky)
}

pub(super) fn validate_api(a: RawApi, models: &BTreeMap<String, ModelConfig>, p: &mut Problems) -> ApiConfig {
    let default_model = a.default_model.unwrap_or_else(|| "sora-2".to_owned());
    let default_size = a
        .default_size
        .as_deref()
        .unwrap_or("720x1280")
        .parse()
        .unwrap_or_else(|e| {
            p.add("api.default_size", e);
            Size {
                width: 720,
                height: 1280,
            }
        });
    let default_seconds = a.default_seconds.as_deref().unwrap_or("4").parse().unwrap_or_else(|e| {
        p.add("api.default_seconds", e);
        Seconds(4)
    });
    match models.get(&default_model) {
        None if !models.is_empty() => p.add(
            "api.default_model",
            format!("{default_model:?} is not a configured model"),
        ),
        Some(m) if !m.sizes.contains(&default_size) => p.add(
            "api.default_size",
            format!("{default_size} is not a size of the default model {default_model:?}"),
        ),
        Some(m) if !m.seconds.contains(&default_seconds) => p.add(
            "api.default_seconds",
            format!("{default_seconds} is not a duration of the default model {default_model:?}"),
        ),
        _ => {}
    }
    ApiConfig {
        default_model,
        default_size,
        default_seconds,
        max_total_seconds: a.max_total_seconds.unwrap_or(120),
    }
}
