//! What a run produced, and the three ways it is written: one console line per scenario and a closing
//! `N passed, N failed[, N skipped]` line, JUnit XML (`--junit`), and a Markdown report (`--report`).

use std::fmt::Write as _;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
}

#[derive(Debug, Clone)]
pub struct ScenarioResult {
    pub name: String,
    /// The part of the Sora contract the scenario checks.
    pub contract: String,
    pub outcome: Outcome,
    /// What was seen (pass), the reason (fail), or why not run (skip).
    pub detail: String,
    pub duration: Duration,
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub endpoint: String,
    pub profile: String,
    pub shim_version: String,
    /// Unix seconds when the run started.
    pub started: u64,
    pub elapsed: Duration,
    pub results: Vec<ScenarioResult>,
    /// Videos whose generation the run requested, and their seconds.
    pub generations: usize,
    pub video_seconds: u32,
    pub requests: usize,
}

impl Summary {
    fn count(&self, outcome: Outcome) -> usize {
        self.results.iter().filter(|r| r.outcome == outcome).count()
    }
    pub fn passed(&self) -> usize {
        self.count(Outcome::Pass)
    }
    pub fn failed(&self) -> usize {
        self.count(Outcome::Fail)
    }
    pub fn skipped(&self) -> usize {
        self.count(Outcome::Skip)
    }
}

/// `PASS create.json (0.1 s): …`, `FAIL …: reason`, `SKIP …: why`.
pub fn console_line(r: &ScenarioResult) -> String {
    let tag = match r.outcome {
        Outcome::Pass => "PASS",
        Outcome::Fail => "FAIL",
        Outcome::Skip => "SKIP",
    };
    let mut line = format!("{tag} {} ({:.1} s)", r.name, r.duration.as_secs_f64());
    if !r.detail.is_empty() {
        let _ = write!(line, ": {}", r.detail);
    }
    line
}

/// What the run cost: generations and seconds of video requested.
pub fn cost_line(s: &Summary) -> String {
    format!(
        "generations requested: {} ({} s of video); {} requests in {:.1} s",
        s.generations,
        s.video_seconds,
        s.requests,
        s.elapsed.as_secs_f64()
    )
}

/// The last line: `N passed, N failed` and `, N skipped` when some were.
pub fn closing_line(s: &Summary) -> String {
    let mut line = format!("{} passed, {} failed", s.passed(), s.failed());
    if s.skipped() > 0 {
        let _ = write!(line, ", {} skipped", s.skipped());
    }
    line
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters, even escaped.
            c if c.is_control() && !matches!(c, '\n' | '\t') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

pub fn junit(s: &Summary) -> String {
    let (tests, failures, skipped) = (s.results.len(), s.failed(), s.skipped());
    let time = s.elapsed.as_secs_f64();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"sora-shim conformance\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" \
         skipped=\"{skipped}\" time=\"{time:.3}\">"
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"sora-shim conformance ({})\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" \
         skipped=\"{skipped}\" time=\"{time:.3}\" timestamp=\"{}\">",
        xml_escape(&s.profile),
        iso_datetime(s.started)
    );
    x.push_str("    <properties>\n");
    let generations = s.generations.to_string();
    let seconds = s.video_seconds.to_string();
    for (name, value) in [
        ("endpoint", s.endpoint.as_str()),
        ("profile", s.profile.as_str()),
        ("shim_version", s.shim_version.as_str()),
        ("generations", generations.as_str()),
        ("video_seconds", seconds.as_str()),
    ] {
        let _ = writeln!(x, "      <property name=\"{name}\" value=\"{}\"/>", xml_escape(value));
    }
    x.push_str("    </properties>\n");
    for r in &s.results {
        let group = r.name.split('.').next().unwrap_or("sora");
        let _ = write!(
            x,
            "    <testcase name=\"{}\" classname=\"conformance.{}\" time=\"{:.3}\">",
            xml_escape(&r.name),
            xml_escape(group),
            r.duration.as_secs_f64()
        );
        let detail = xml_escape(&r.detail);
        match r.outcome {
            Outcome::Pass => {}
            Outcome::Fail => {
                let _ = write!(
                    x,
                    "\n      <failure message=\"{detail}\" type=\"contract\">{detail}</failure>\n    "
                );
            }
            Outcome::Skip => {
                let _ = write!(x, "\n      <skipped message=\"{detail}\"/>\n    ");
            }
        }
        let _ = writeln!(x, "<system-out>{}</system-out></testcase>", xml_escape(&r.contract));
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

pub fn markdown(s: &Summary) -> String {
    let mut m = String::from("# sora-shim conformance report\n\n| | |\n|---|---|\n");
    let results = closing_line(s);
    let generations = format!("{} ({} s of video)", s.generations, s.video_seconds);
    let duration = format!("{:.1} s, {} requests", s.elapsed.as_secs_f64(), s.requests);
    for (k, v) in [
        ("Endpoint", format!("`{}`", md_cell(&s.endpoint))),
        ("Date", format!("{} UTC", iso_datetime(s.started).replace('T', " "))),
        ("Shim version", md_cell(&s.shim_version)),
        ("Profile", md_cell(&s.profile)),
        ("Scenarios", s.results.len().to_string()),
        ("Results", results),
        ("Generations used", generations),
        ("Duration", duration),
    ] {
        let _ = writeln!(m, "| {k} | {v} |");
    }
    m.push_str("\n| Scenario | Sora contract | Result | Detail |\n|---|---|---|---|\n");
    for r in &s.results {
        let result = match r.outcome {
            Outcome::Pass => "pass",
            Outcome::Fail => "**FAIL**",
            Outcome::Skip => "skip",
        };
        let _ = writeln!(
            m,
            "| `{}` | {} | {result} | {} |",
            r.name,
            md_cell(&r.contract),
            md_cell(&r.detail)
        );
    }
    m
}

/// `2026-05-01T12:34:56` (UTC) from Unix seconds.
pub fn iso_datetime(unix: u64) -> String {
    let days = i64::try_from(unix / 86_400).unwrap_or(0);
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, outcome: Outcome, detail: &str) -> ScenarioResult {
        ScenarioResult {
            name: name.into(),
            contract: "POST /videos <JSON> | answers \"video\"".into(),
            outcome,
            detail: detail.into(),
            duration: Duration::from_millis(1250),
        }
    }

    fn summary() -> Summary {
        Summary {
            endpoint: "http://127.0.0.1:8080/v1".into(),
            profile: "quick".into(),
            shim_version: "0.1.0".into(),
            started: 1_777_777_777,
            elapsed: Duration::from_millis(23_456),
            results: vec![
                result("create.json", Outcome::Pass, "video_1 queued"),
                result(
                    "error.bad_size",
                    Outcome::Fail,
                    "expected HTTP 400, got 200: {\"a\":1} <&>",
                ),
                result("headers.rate_limit", Outcome::Skip, "no 429 seen"),
            ],
            generations: 4,
            video_seconds: 16,
            requests: 57,
        }
    }

    #[test]
    fn console() {
        let s = summary();
        assert_eq!(console_line(&s.results[0]), "PASS create.json (1.2 s): video_1 queued");
        assert!(console_line(&s.results[1]).starts_with("FAIL error.bad_size (1.2 s): expected HTTP 400"));
        assert_eq!(closing_line(&s), "1 passed, 1 failed, 1 skipped");
        assert_eq!(
            cost_line(&s),
            "generations requested: 4 (16 s of video); 57 requests in 23.5 s"
        );
        let mut none_skipped = s.clone();
        none_skipped.results.pop();
        assert_eq!(closing_line(&none_skipped), "1 passed, 1 failed");
    }

    #[test]
    fn junit_is_escaped_and_counts() {
        let x = junit(&summary());
        assert!(x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites "));
        assert!(x.contains("tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\""));
        assert!(x.contains("timestamp=\"2026-05-03T03:09:37\""));
        assert!(x.contains("<property name=\"generations\" value=\"4\"/>"));
        assert!(x.contains("<testcase name=\"create.json\" classname=\"conformance.create\" time=\"1.250\">"));
        assert!(x.contains(
            "<failure message=\"expected HTTP 400, got 200: {&quot;a&quot;:1} &lt;&amp;&gt;\" type=\"contract\">"
        ));
        assert!(x.contains("<skipped message=\"no 429 seen\"/>"));
        assert!(x.contains("POST /videos &lt;JSON&gt; | answers &quot;video&quot;"));
        assert!(!x.contains("<&>"));
        assert_eq!(x.matches("<testcase ").count(), x.matches("</testcase>").count());
        assert!(x.ends_with("</testsuite>\n</testsuites>\n"));
        assert_eq!(xml_escape("a\u{1}b"), "a b");
    }

    #[test]
    fn markdown_table() {
        let m = markdown(&summary());
        assert!(m.contains("| Endpoint | `http://127.0.0.1:8080/v1` |"));
        assert!(m.contains("| Date | 2026-05-03 03:09:37 UTC |"));
        assert!(m.contains("| Shim version | 0.1.0 |"));
        assert!(m.contains("| Results | 1 passed, 1 failed, 1 skipped |"));
        assert!(m.contains("| Generations used | 4 (16 s of video) |"));
        assert!(m.contains("| `create.json` | POST /videos <JSON> \\| answers \"video\" | pass | video_1 queued |"));
        assert!(m.contains("| `error.bad_size` | "));
        assert!(m.contains("| **FAIL** |"));
        let rows = m.lines().filter(|l| l.starts_with("| `")).count();
        assert_eq!(rows, 3);
    }

    #[test]
    fn dates() {
        assert_eq!(iso_datetime(0), "1970-01-01T00:00:00");
        assert_eq!(iso_datetime(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(iso_datetime(1_777_777_777), "2026-05-03T03:09:37");
    }
}
