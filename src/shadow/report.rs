//! `sora-shim shadow report`: each primary compared with its shadow copy, per model, primary backend and
//! candidate, with the copies the sample called for but that were not made.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::ModelConfig;
use crate::video::{Job, State, Variant};

/// One primary → candidate comparison (per model).
#[derive(Debug, Serialize, PartialEq)]
pub struct PairStats {
    pub model: String,
    pub primary: String,
    pub shadow: String,
    pub pairs: usize,
    /// Creates the sample called for: the pairs, plus the copies that were not made.
    pub sampled: u64,
    /// Copies the sample called for that were not made, by reason: `dropped` (the queue of copies waiting was
    /// full), `capped` (`shadow_daily_cap`), `failed` (the store refused it). Empty when every copy was made.
    pub missed: BTreeMap<String, u64>,
    /// The sample configured now for this candidate; `None` once it is no longer configured.
    pub sample: Option<f64>,
    /// The share of the primary's creates really compared: `sample` × pairs ÷ sampled. Below `sample` whenever
    /// copies were missed.
    pub effective_sample: Option<f64>,
    /// Pairs where both sides have finished.
    pub finished: usize,
    pub primary_completed: usize,
    pub shadow_completed: usize,
    pub shadow_refused: usize,
    /// Exactly one side ended `moderation_blocked`.
    pub moderation_disagreements: usize,
    pub primary_submit_ms_p50: Option<i64>,
    pub shadow_submit_ms_p50: Option<i64>,
    pub primary_seconds_to_complete_p50: Option<i64>,
    pub primary_seconds_to_complete_p95: Option<i64>,
    pub shadow_seconds_to_complete_p50: Option<i64>,
    pub shadow_seconds_to_complete_p95: Option<i64>,
    /// Mean length (s), resolution and bytes of the completed videos.
    pub primary_video: Option<VideoFacts>,
    pub shadow_video: Option<VideoFacts>,
    /// Estimated from `price_per_second` and the produced length; `None` without a price.
    pub primary_cost_per_video: Option<f64>,
    pub shadow_cost_per_video: Option<f64>,
    /// The candidate's error codes and how often.
    pub shadow_errors: BTreeMap<String, usize>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct VideoFacts {
    pub mean_seconds: f64,
    pub mean_bytes: u64,
    /// The most frequent `WxH`.
    pub resolution: String,
}

fn percentile(mut values: Vec<i64>, p: f64) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

fn facts(jobs: &[&Job]) -> Option<VideoFacts> {
    let done: Vec<&&Job> = jobs.iter().filter(|j| j.state == State::Completed).collect();
    let produced: Vec<_> = done.iter().filter_map(|j| j.produced).collect();
    if produced.is_empty() {
        return None;
    }
    let n = produced.len();
    let mut resolutions: BTreeMap<String, usize> = BTreeMap::new();
    for p in &produced {
        *resolutions.entry(format!("{}x{}", p.width, p.height)).or_default() += 1;
    }
    let bytes: u64 = done
        .iter()
        .filter_map(|j| j.assets.iter().find(|a| a.variant == Variant::Video).map(|a| a.bytes))
        .sum();
    Some(VideoFacts {
        mean_seconds: produced.iter().map(|p| p.duration_ms as f64 / 1000.0).sum::<f64>() / n as f64,
        mean_bytes: bytes / done.len().max(1) as u64,
        resolution: resolutions
            .into_iter()
            .max_by_key(|(_, count)| *count)
            .map(|(r, _)| r)
            .unwrap_or_default(),
    })
}

fn cost(jobs: &[&Job], price: Option<f64>) -> Option<f64> {
    let price = price?;
    let done: Vec<f64> = jobs
        .iter()
        .filter(|j| j.state == State::Completed)
        .filter_map(|j| j.produced.map(|p| p.duration_ms as f64 / 1000.0 * price))
        .collect();
    (!done.is_empty()).then(|| done.iter().sum::<f64>() / done.len() as f64)
}

fn seconds_to_complete(jobs: &[&Job]) -> Vec<i64> {
    jobs.iter()
        .filter(|j| j.state == State::Completed)
        .filter_map(|j| j.completed_at.map(|c| c - j.created_at))
        .collect()
}

fn submit_ms(jobs: &[&Job]) -> Vec<i64> {
    jobs.iter()
        .filter_map(|j| j.submitted_at_ms.map(|s| s - j.created_at_ms))
        .collect()
}

fn moderated(j: &Job) -> bool {
    j.error.as_ref().is_some_and(|e| e.code == "moderation_blocked")
}

/// (model, primary backend, candidate backend).
pub type Comparison = (String, String, String);

/// The comparison per (model, primary backend, candidate) from (primary, shadow) pairs and the copies not made
/// ([`missed`]), with the prices and the shadow samples configured now.
pub fn report(
    pairs: &[(Job, Job)],
    missed: &BTreeMap<Comparison, BTreeMap<String, u64>>,
    prices: &BTreeMap<String, f64>,
    models: &BTreeMap<String, ModelConfig>,
) -> Vec<PairStats> {
    let mut groups: BTreeMap<Comparison, Vec<(&Job, &Job)>> = BTreeMap::new();
    for (p, s) in pairs {
        groups
            .entry((p.request.model.clone(), p.backend.clone(), s.backend.clone()))
            .or_default()
            .push((p, s));
    }
    for comparison in missed.keys() {
        groups.entry(comparison.clone()).or_default();
    }
    groups
        .into_iter()
        .map(|((model, primary, shadow), pairs)| {
            let missed = missed
                .get(&(model.clone(), primary.clone(), shadow.clone()))
                .cloned()
                .unwrap_or_default();
            let sampled = pairs.len() as u64 + missed.values().sum::<u64>();
            let sample = models
                .get(&model)
                .and_then(|m| m.shadow.iter().find(|t| t.backend == shadow))
                .map(|t| t.sample);
            let effective_sample = sample
                .filter(|_| sampled > 0)
                .map(|s| s * pairs.len() as f64 / sampled as f64);
            let ps: Vec<&Job> = pairs.iter().map(|(p, _)| *p).collect();
            let ss: Vec<&Job> = pairs.iter().map(|(_, s)| *s).collect();
            let finished: Vec<&(&Job, &Job)> = pairs
                .iter()
                .filter(|(p, s)| p.state.is_terminal() && s.state.is_terminal())
                .collect();
            let mut shadow_errors = BTreeMap::new();
            for s in &ss {
                if let Some(e) = &s.error {
                    *shadow_errors.entry(e.code.clone()).or_default() += 1;
                }
            }
            PairStats {
                pairs: pairs.len(),
                sampled,
                missed,
                sample,
                effective_sample,
                finished: finished.len(),
                primary_completed: ps.iter().filter(|j| j.state == State::Completed).count(),
                shadow_completed: ss.iter().filter(|j| j.state == State::Completed).count(),
                shadow_refused: ss
                    .iter()
                    .filter(|j| j.error.as_ref().is_some_and(|e| e.code == "shadow_refused"))
                    .count(),
                moderation_disagreements: finished.iter().filter(|(p, s)| moderated(p) != moderated(s)).count(),
                primary_submit_ms_p50: percentile(submit_ms(&ps), 0.5),
                shadow_submit_ms_p50: percentile(submit_ms(&ss), 0.5),
                primary_seconds_to_complete_p50: percentile(seconds_to_complete(&ps), 0.5),
                primary_seconds_to_complete_p95: percentile(seconds_to_complete(&ps), 0.95),
                shadow_seconds_to_complete_p50: percentile(seconds_to_complete(&ss), 0.5),
                shadow_seconds_to_complete_p95: percentile(seconds_to_complete(&ss), 0.95),
                primary_video: facts(&ps),
                shadow_video: facts(&ss),
                primary_cost_per_video: cost(&ps, prices.get(&primary).copied()),
                shadow_cost_per_video: cost(&ss, prices.get(&shadow).copied()),
                shadow_errors,
                model,
                primary,
                shadow,
            }
        })
        .collect()
}

fn pct(part: usize, whole: usize) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.0}%", part as f64 * 100.0 / whole as f64)
    }
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".into(), ToString::to_string)
}

/// The report as text, one block per comparison.
pub fn render(stats: &[PairStats]) -> String {
    if stats.is_empty() {
        return "no shadow jobs yet (set `shadow = [{ backend = \"…\", sample = 0.1 }]` on a model)\n".into();
    }
    let mut out = String::new();
    for s in stats {
        out.push_str(&format!(
            "{} : {} (primary) vs {} (shadow), {} pairs, {} finished\n",
            s.model, s.primary, s.shadow, s.pairs, s.finished
        ));
        let video = |v: &Option<VideoFacts>| {
            v.as_ref().map_or("-".into(), |v| {
                format!("{} {:.1} s {} KiB", v.resolution, v.mean_seconds, v.mean_bytes / 1024)
            })
        };
        let money = |c: &Option<f64>| c.map_or("-".into(), |c| format!("{c:.2}"));
        let rows = [
            (
                "completed",
                pct(s.primary_completed, s.pairs),
                pct(s.shadow_completed, s.pairs),
            ),
            (
                "submit ms p50",
                opt(&s.primary_submit_ms_p50),
                opt(&s.shadow_submit_ms_p50),
            ),
            (
                "complete s p50/p95",
                format!(
                    "{}/{}",
                    opt(&s.primary_seconds_to_complete_p50),
                    opt(&s.primary_seconds_to_complete_p95)
                ),
                format!(
                    "{}/{}",
                    opt(&s.shadow_seconds_to_complete_p50),
                    opt(&s.shadow_seconds_to_complete_p95)
                ),
            ),
            ("video", video(&s.primary_video), video(&s.shadow_video)),
            (
                "cost per video",
                money(&s.primary_cost_per_video),
                money(&s.shadow_cost_per_video),
            ),
        ];
        out.push_str(&format!("  {:<20} {:<28} {:<28}\n", "", "primary", "shadow"));
        for (name, p, sh) in rows {
            out.push_str(&format!("  {name:<20} {p:<28} {sh:<28}\n"));
        }
        out.push_str(&format!(
            "  moderation disagreements: {} of {} finished pairs; refused by the candidate: {}\n",
            s.moderation_disagreements, s.finished, s.shadow_refused
        ));
        if !s.missed.is_empty() {
            let missed: Vec<String> = s.missed.iter().map(|(why, n)| format!("{why} ×{n}")).collect();
            let effective = match (s.sample, s.effective_sample) {
                (Some(sample), Some(effective)) => {
                    format!("; effective sample {effective:.3} of the configured {sample}")
                }
                _ => String::new(),
            };
            out.push_str(&format!(
                "  copies not made: {} of {} sampled ({}){effective}\n",
                s.sampled - s.pairs as u64,
                s.sampled,
                missed.join(", ")
            ));
        }
        if !s.shadow_errors.is_empty() {
            let errors: Vec<String> = s.shadow_errors.iter().map(|(c, n)| format!("{c} ×{n}")).collect();
            out.push_str(&format!("  shadow errors: {}\n", errors.join(", ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        assert_eq!(percentile(vec![], 0.5), None);
        assert_eq!(percentile(vec![5, 1, 3], 0.5), Some(3));
        assert_eq!(percentile((1..=100).collect(), 0.95), Some(95));
    }

    #[test]
    fn render_says_when_there_is_nothing_yet() {
        assert!(render(&[]).starts_with("no shadow jobs yet"));
    }
}
