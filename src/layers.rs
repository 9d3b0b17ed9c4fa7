//! The layering rule, checked on every `cargo test`: modules import only from their own layer or below (the
//! table below, as `src/lib.rs` lists them), and no set of modules imports each other in a cycle.
//!
//! It reads `src/` as text: comments and string literals are blanked, unit tests are left out (a file's
//! `#[cfg(test)] mod tests` tail, and `tests.rs` files), and every `crate::…`, `super::…`, `self::…` path (grouped `use` trees included) is resolved to the
//! longest prefix that is a module file. A module may always use its own ancestors (a child sees its parent's
//! items). Written by hand: the crates that draw module graphs need a compiler plugin or a nightly toolchain.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Layer of each module, by the longest matching prefix (`crate::` left out; `main` is the binary).
const LAYERS: &[(&str, u8)] = &[
    // 1: domain and leaves
    ("video", 1),
    ("metrics", 1),
    ("media", 1),
    ("tls", 1),
    ("datadir", 1),
    ("http", 1),
    ("schemas", 1),
    ("mapping", 1),
    // 2: parts
    ("store", 2),
    ("assets", 2),
    ("previews", 2),
    ("routing", 2),
    ("auth", 2),
    ("limits", 2),
    ("moderation", 2),
    ("webhooks", 2),
    ("mapping::compile", 2),
    ("mapping::token", 2),
    ("mapping::callback", 2),
    ("backends::local::render", 2),
    // 3: settings
    ("config", 3),
    // 4: runtime pieces
    ("breakers", 4),
    ("backends", 4),
    ("live", 4),
    ("webhooks::dispatcher", 4),
    ("retention", 4),
    ("export", 4),
    // 5: orchestration
    ("admission", 5),
    ("worker", 5),
    ("shadow", 5),
    // 6: the runtime root
    ("app", 6),
    // 7: the surface
    ("api", 7),
    ("server", 7),
    // 8: entry points
    ("main", 8),
    ("conformance", 8),
    ("fuzzing", 8),
    ("layers", 8),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS
        .iter()
        .filter(|(prefix, _)| module == *prefix || module.starts_with(&format!("{prefix}::")))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, l)| *l)
}

/// `src/api/videos.rs` → `api::videos`; `src/lib.rs` → ``; `src/main.rs` → `main`.
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    match last.trim_end_matches(".rs") {
        "lib" | "mod" => {}
        stem => parts.push(stem.to_owned()),
    }
    parts.join("::")
}

/// The code of a file with comments and the contents of string and char literals blanked.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let (c, next) = (chars[i], chars.get(i + 1).copied());
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 1;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 1;
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                i += 1;
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !prev_is_ident(&chars, i) {
            // r"…" or r#"…"#
            let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
            if chars.get(i + 1 + hashes) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            i += 2 + hashes;
            while i < chars.len() && !(chars[i] == '"' && chars[i + 1..].iter().take(hashes).all(|&h| h == '#')) {
                i += 1;
            }
            i += 1 + hashes;
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && (chars.get(i + 2) == Some(&'\'') || next == Some('\\')) {
            // 'x' or '\n', '\u{…}' (a lifetime has no closing quote right after one character)
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn prev_is_ident(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// Every path starting at `crate`, `super`, `self` or `sora_shim`, with grouped `use` trees expanded.
fn paths(code: &str) -> Vec<Vec<String>> {
    let tokens: Vec<String> = tokenize(code);
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].as_str();
        let starts = matches!(t, "crate" | "super" | "self" | "sora_shim")
            && tokens.get(i + 1).map(String::as_str) == Some("::");
        let after_path = i > 0 && tokens[i - 1] == "::";
        if starts && !after_path {
            i = expand(&tokens, i, Vec::new(), &mut out);
        } else {
            i += 1;
        }
    }
    out
}

/// Splits code into identifiers, `::` and single punctuation characters.
fn tokenize(code: &str) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push("::".to_owned());
            i += 2;
        } else {
            if !c.is_whitespace() {
                out.push(c.to_string());
            }
            i += 1;
        }
    }
    out
}

/// Reads one path (`a::b::{c, d::e}`) from `i` onward with `prefix` before it; returns the index after it.
fn expand(tokens: &[String], mut i: usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    loop {
        match tokens.get(i).map(String::as_str) {
            Some("{") => {
                i += 1;
                loop {
                    match tokens.get(i).map(String::as_str) {
                        Some("}") => return i + 1,
                        Some(",") => i += 1,
                        None => return i,
                        Some(_) => i = expand(tokens, i, prefix.clone(), out),
                    }
                }
            }
            Some(name) if name.chars().all(|c| c.is_alphanumeric() || c == '_') => {
                prefix.push(name.to_owned());
                if tokens.get(i + 1).map(String::as_str) == Some("::") {
                    i += 2;
                } else {
                    out.push(prefix);
                    return i + 1;
                }
            }
            _ => {
                out.push(prefix);
                return i;
            }
        }
    }
}

/// The module a path names, as seen from `from`: the longest prefix that is a module.
fn resolve(from: &str, path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    let mut base: Vec<String> = if from.is_empty() || from == "main" {
        Vec::new()
    } else {
        from.split("::").map(str::to_owned).collect()
    };
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate" | "sora_shim") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    let full: Vec<String> = base.into_iter().chain(rest.iter().cloned()).collect();
    (1..=full.len())
        .rev()
        .map(|n| full[..n].join("::"))
        .find(|m| modules.contains(m))
}

/// module → the modules it imports (ancestors and itself left out).
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.strip_prefix(src).ok())
        .map(module_of)
        .collect();
    let mut out = BTreeMap::new();
    for file in &files {
        let Ok(rel) = file.strip_prefix(src) else { continue };
        let from = module_of(rel);
        // Unit tests (a `tests.rs` beside the code, or a `mod tests` at the end of a file) may reach anywhere.
        if from == "tests" || from.ends_with("::tests") {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
        let mut to = BTreeSet::new();
        for path in paths(&code_only(text)) {
            if let Some(target) = resolve(&from, &path, &modules) {
                let ancestor = target.is_empty() || from == target || from.starts_with(&format!("{target}::"));
                if !ancestor {
                    to.insert(target);
                }
            }
        }
        out.insert(from, to);
    }
    out
}

/// Modules that import each other in a cycle (strongly connected components of two or more).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    let reach = |start: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start.to_owned()];
        while let Some(m) = todo.pop() {
            for next in graph.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> = graph.keys().map(|m| (m, reach(m))).collect();
    let mut out: Vec<BTreeSet<String>> = Vec::new();
    for (m, from_m) in &reachable {
        let component: BTreeSet<String> = from_m
            .iter()
            .filter(|other| reachable.get(other).is_some_and(|r| r.contains(*m)))
            .cloned()
            .collect();
        if component.len() > 1 && !out.contains(&component) {
            out.push(component);
        }
    }
    out
}

#[test]
fn modules_import_only_their_own_layer_or_below_and_form_no_cycle() {
    let graph = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.len() > 30, "read only {} modules", graph.len());
    let mut problems = Vec::new();
    for (from, targets) in &graph {
        let Some(from_layer) = layer(from).or(from.is_empty().then_some(8)) else {
            problems.push(format!("{from}: no layer in src/layers.rs"));
            continue;
        };
        for to in targets {
            match layer(to) {
                Some(l) if l > from_layer => {
                    problems.push(format!("{from} (layer {from_layer}) uses {to} (layer {l})"))
                }
                _ => {}
            }
        }
    }
    for cycle in cycles(&graph) {
        problems.push(format!(
            "import cycle: {}",
            cycle.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_reader_sees_grouped_uses_and_ignores_comments_and_strings() {
    let code =
        code_only("use crate::{a::{B, c::D}, e};\n// crate::f::G\nlet s = \"crate::h\"; let l: &'a str; crate::i::J;");
    let found: Vec<String> = paths(&code).iter().map(|p| p.join("::")).collect();
    assert_eq!(found, ["crate::a::B", "crate::a::c::D", "crate::e", "crate::i::J"]);
}
