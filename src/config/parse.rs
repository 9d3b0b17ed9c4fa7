//! Stage 1's error report. serde stops at the first unknown or mistyped key; an operator fixing a file wants
//! every one at once, so a file that is valid TOML but does not deserialize is read again section by section
//! (and entry by entry in the named tables) to list each problem, with the nearest known key for a misspelt one.

use serde::Deserialize;

/// Sections whose entries are named by the operator (`[backends.NAME]`): each entry is checked on its own.
const NAMED: &[&str] = &["backends", "models", "tenants", "moderation", "webhooks"];

/// Every problem in `text`, the first one (`first`, with its line and column) leading.
pub(super) fn every_problem<T: for<'de> Deserialize<'de>>(text: &str, first: &toml::de::Error) -> Vec<String> {
    let first_text = suggest(first.to_string().trim_end());
    // The message itself is the last line, after the line number and the quoted source.
    let first_core = first_text.lines().last().unwrap_or_default().to_owned();
    let mut out = vec![first_text.clone()];
    // A syntax error leaves nothing to read section by section.
    let Ok(table) = text.parse::<toml::Table>() else {
        return out;
    };
    for (section, value) in &table {
        let entries: Vec<(String, toml::Table)> = match value.as_table() {
            Some(entries) if NAMED.contains(&section.as_str()) => (entries.iter())
                .map(|(name, entry)| {
                    let mut one = toml::Table::new();
                    one.insert(name.clone(), entry.clone());
                    let mut wrapped = toml::Table::new();
                    wrapped.insert(section.clone(), toml::Value::Table(one));
                    (format!("{section}.{name}"), wrapped)
                })
                .collect(),
            _ => {
                let mut wrapped = toml::Table::new();
                wrapped.insert(section.clone(), value.clone());
                vec![(section.clone(), wrapped)]
            }
        };
        for (at, wrapped) in entries {
            if let Err(e) = T::deserialize(toml::Value::Table(wrapped)) {
                // `message\nin `key.path``: the path toml names is more exact than the entry's.
                let e = e.to_string();
                let (core, path) = match e.trim_end().rsplit_once("\nin `") {
                    Some((core, path)) => (core.to_owned(), path.trim_end_matches('`').to_owned()),
                    None => (e.trim_end().to_owned(), at),
                };
                let core = suggest(&core);
                // The first problem is already listed, with its line.
                if core != first_core {
                    out.push(format!("{path}: {core}"));
                }
            }
        }
    }
    out
}

/// serde's `unknown field `x`, expected one of `a`, `b`` gains `; did you mean `a`?` when one is close.
pub(super) fn suggest(message: &str) -> String {
    let Some(rest) = message.lines().find_map(|l| l.split("unknown field `").nth(1)) else {
        return message.to_owned();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message.to_owned();
    };
    let nearest = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|known| (strsim::levenshtein(unknown, known), known))
        .filter(|(d, known)| *d <= (known.len() / 3).max(2))
        .min();
    match nearest {
        Some((_, known)) => format!("{message}; did you mean `{known}`?"),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// The keys a section takes, as the parser itself lists them when it meets an unknown one.
    fn known_keys(probe: &str) -> BTreeSet<String> {
        let e = toml::from_str::<super::super::RawConfig>(probe)
            .unwrap_err()
            .to_string();
        let line = e.lines().find(|l| l.contains("unknown field `__probe`")).expect(&e);
        let expected = line.split("expected ").nth(1).expect(line);
        expected.split('`').skip(1).step_by(2).map(str::to_owned).collect()
    }

    /// `## `[section]`` headings of docs/configuration.md and the keys in the first column of their tables.
    fn documented_keys(doc: &str) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut section = None;
        for line in doc.lines() {
            if let Some(heading) = line.strip_prefix("## ") {
                section = heading
                    .strip_prefix('`')
                    .and_then(|h| h.strip_suffix('`'))
                    .map(str::to_owned);
                continue;
            }
            let (Some(s), Some(row)) = (&section, line.strip_prefix("| `")) else {
                continue;
            };
            if let Some((key, _)) = row.split_once('`') {
                out.entry(s.clone()).or_default().insert(key.to_owned());
            }
        }
        out
    }

    /// The reference is checked against the parser both ways: every key it takes is documented under its
    /// section, and no documented key is one it would refuse.
    #[test]
    fn the_configuration_reference_lists_every_key_and_no_other() {
        let doc = documented_keys(include_str!("../../docs/configuration.md"));
        let probes = [
            ("[server]", "[server]\n__probe = 1"),
            ("[api]", "[api]\n__probe = 1"),
            ("[store]", "[store]\n__probe = 1"),
            ("[assets]", "[assets]\n__probe = 1"),
            ("[worker]", "[worker]\n__probe = 1"),
            ("[health]", "[health]\n__probe = 1"),
            ("[backends.NAME]", "[backends.x]\n__probe = 1"),
            ("[models.NAME]", "[models.x]\n__probe = 1"),
            ("[[models.NAME.targets]]", "[[models.x.targets]]\n__probe = 1"),
            ("[[models.NAME.shadow]]", "[[models.x.shadow]]\n__probe = 1"),
            ("[tenants.NAME]", "[tenants.x]\n__probe = 1"),
            ("[admin]", "[admin]\n__probe = 1"),
            ("[moderation.NAME]", "[moderation.x]\n__probe = 1"),
            ("[moderation.NAME.endpoint]", "[moderation.x.endpoint]\n__probe = 1"),
            ("[webhooks.NAME]", "[webhooks.x]\n__probe = 1"),
        ];
        for (heading, probe) in probes {
            let documented = doc
                .get(heading)
                .unwrap_or_else(|| panic!("docs/configuration.md lacks {heading}"));
            assert_eq!(
                documented,
                &known_keys(probe),
                "{heading}: documented (left) vs parsed (right)"
            );
        }
        // And every top-level section has a heading.
        for section in known_keys("__probe = 1") {
            assert!(
                doc.keys().any(|h| h.trim_start_matches('[').starts_with(&section)),
                "docs/configuration.md has no section for [{section}]"
            );
        }
    }

    #[test]
    fn a_misspelt_key_gets_the_nearest_known_one() {
        let m = "unknown field `max_concurent`, expected one of `kind`, `max_concurrent`, `model`";
        assert!(
            suggest(m).ends_with("; did you mean `max_concurrent`?"),
            "{}",
            suggest(m)
        );
        let far = "unknown field `zzzzzz`, expected one of `kind`, `model`";
        assert_eq!(suggest(far), far);
        assert_eq!(suggest("invalid type: string"), "invalid type: string");
    }
}
