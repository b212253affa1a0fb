//! What a run tells people: the progress line, the summary table by group and
//! the JUnit file for CI.

use crate::descriptor::Group;
use crate::trial::{TrialResult, Verdict};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A finished trial with what the summary needs.
#[derive(Debug, Clone)]
pub struct Record {
    pub group: Group,
    pub result: TrialResult,
}

/// Trials running and done, for the progress line.
///
/// The line lives on stderr while libtest prints results on stdout. To keep them
/// apart, a finishing trial clears the line *before* libtest prints its result
/// (the trial's thread finishes before libtest learns the outcome), and the line
/// stays away for a moment after that. Painting and clearing hold the same lock.
#[derive(Default)]
pub struct Progress {
    total: usize,
    done: AtomicUsize,
    running: Mutex<HashMap<String, Instant>>,
    screen: Mutex<Screen>,
}

#[derive(Default)]
struct Screen {
    shown: bool,
    quiet_until: Option<Instant>,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        Progress {
            total,
            ..Default::default()
        }
    }

    pub fn started(&self, name: &str) {
        self.lock_running().insert(name.to_string(), Instant::now());
    }

    pub fn finished(&self, name: &str) {
        self.lock_running().remove(name);
        self.done.fetch_add(1, Ordering::SeqCst);
        let mut screen = self.lock_screen();
        if screen.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
            screen.shown = false;
        }
        screen.quiet_until = Some(Instant::now() + Duration::from_millis(300));
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_screen(&self) -> std::sync::MutexGuard<'_, Screen> {
        self.screen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `[3/40] running 2, slowest static/maps00/h (12s)`
    pub fn line(&self) -> String {
        let running = self.lock_running();
        let mut s = format!(
            "[{}/{}] running {}",
            self.done.load(Ordering::SeqCst),
            self.total,
            running.len()
        );
        if let Some((name, since)) = running.iter().min_by_key(|(_, t)| **t) {
            let _ = write!(s, ", slowest {name} ({}s)", since.elapsed().as_secs());
        }
        s
    }

    /// Redraws the line on stderr until `stop` is set. The first draw waits a
    /// second: quick runs need no progress line.
    pub fn spawn_painter(self: &Arc<Self>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        let me = self.clone();
        me.lock_screen().quiet_until = Some(Instant::now() + Duration::from_secs(1));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let line = me.line();
                let mut screen = me.lock_screen();
                if screen.quiet_until.is_none_or(|t| Instant::now() >= t) {
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[K{line}");
                    let _ = err.flush();
                    screen.shown = true;
                }
                drop(screen);
                std::thread::sleep(Duration::from_millis(200));
            }
            let mut screen = me.lock_screen();
            if screen.shown {
                let _ = write!(std::io::stderr(), "\r\x1b[K");
                screen.shown = false;
            }
        })
    }
}

#[derive(Default)]
struct Row {
    passed: usize,
    failed: usize,
    ignored: usize,
    time: Duration,
}

/// The summary table by group, with the wall time of the run.
pub fn summary(records: &[Record], wall: Duration) -> String {
    let mut rows: BTreeMap<&'static str, Row> = BTreeMap::new();
    let mut total = Row::default();
    for r in records {
        let row = rows.entry(r.group.as_str()).or_default();
        for row in [row, &mut total] {
            match r.result.verdict {
                Verdict::Passed => row.passed += 1,
                Verdict::Failed(_) => row.failed += 1,
                Verdict::Ignored(_) => row.ignored += 1,
            }
            row.time += r.result.duration;
        }
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<12} {:>7} {:>7} {:>8} {:>10}",
        "group", "passed", "failed", "ignored", "trial time"
    );
    let line = |s: &mut String, name: &str, r: &Row| {
        let _ = writeln!(
            s,
            "{:<12} {:>7} {:>7} {:>8} {:>9.1}s",
            name,
            r.passed,
            r.failed,
            r.ignored,
            r.time.as_secs_f64()
        );
    };
    for (g, r) in &rows {
        line(&mut s, g, r);
    }
    line(&mut s, "total", &total);
    let _ = writeln!(s, "wall time {:.1}s", wall.as_secs_f64());
    let failed: Vec<&Record> = records
        .iter()
        .filter(|r| matches!(r.result.verdict, Verdict::Failed(_)))
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(s, "failed trials (reports in their results directories):");
        for r in failed {
            if let Verdict::Failed(f) = &r.result.verdict {
                let _ = writeln!(
                    s,
                    "  {} at {}: {}",
                    r.result.name,
                    f.step,
                    f.reason.lines().next().unwrap_or("")
                );
            }
        }
    }
    s
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters at all.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// A JUnit XML document: one testsuite per group, one testcase per trial.
pub fn junit(records: &[Record], wall: Duration) -> String {
    let mut by_group: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in records {
        by_group.entry(r.group.as_str()).or_default().push(r);
    }
    let count = |rs: &[&Record], f: fn(&Verdict) -> bool| {
        rs.iter().filter(|r| f(&r.result.verdict)).count()
    };
    let failed = |v: &Verdict| matches!(v, Verdict::Failed(_));
    let skipped = |v: &Verdict| matches!(v, Verdict::Ignored(_));
    let all: Vec<&Record> = records.iter().collect();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"zdtm\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
        all.len(),
        count(&all, failed),
        count(&all, skipped),
        wall.as_secs_f64()
    );
    for (group, rs) in by_group {
        let time: f64 = rs.iter().map(|r| r.result.duration.as_secs_f64()).sum();
        let _ = writeln!(
            s,
            "  <testsuite name=\"zdtm.{group}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{time:.3}\">",
            rs.len(),
            count(&rs, failed),
            count(&rs, skipped)
        );
        for r in rs {
            let _ = write!(
                s,
                "    <testcase classname=\"zdtm.{group}\" name=\"{}\" time=\"{:.3}\"",
                xml_escape(&r.result.name),
                r.result.duration.as_secs_f64()
            );
            match &r.result.verdict {
                Verdict::Passed => s.push_str("/>\n"),
                Verdict::Ignored(reason) => {
                    let _ = writeln!(
                        s,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        xml_escape(reason)
                    );
                }
                Verdict::Failed(f) => {
                    let _ = writeln!(
                        s,
                        ">\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n    </testcase>",
                        f.step,
                        xml_escape(f.reason.lines().next().unwrap_or("")),
                        xml_escape(&r.result.report)
                    );
                }
            }
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trial::{Failure, Step};
    use std::path::PathBuf;

    fn rec(name: &str, group: Group, verdict: Verdict, secs: u64) -> Record {
        Record {
            group,
            result: TrialResult {
                name: name.into(),
                verdict,
                report: format!("{name}: report <with> & \"quotes\"\n"),
                duration: Duration::from_secs(secs),
                dir: PathBuf::from("/r"),
                notes: vec![],
            },
        }
    }

    fn sample() -> Vec<Record> {
        vec![
            rec("static/a/h", Group::Memory, Verdict::Passed, 1),
            rec(
                "static/b/h",
                Group::Memory,
                Verdict::Failed(Failure {
                    step: Step::Restore,
                    iteration: Some(1),
                    reason: "restored pid 5 differs\nmore".into(),
                    run: None,
                }),
                2,
            ),
            rec(
                "static/c/ns",
                Group::Files,
                Verdict::Ignored("engine lacks ns-flavor".into()),
                0,
            ),
        ]
    }

    #[test]
    fn summary_table_counts_by_group() {
        let s = summary(&sample(), Duration::from_secs(3));
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines[0].starts_with("group"), "{s}");
        assert!(
            lines[1].starts_with("files") && lines[1].contains("      0       0        1"),
            "{s}"
        );
        assert!(
            lines[2].starts_with("memory") && lines[2].contains("      1       1        0"),
            "{s}"
        );
        assert!(
            lines[3].starts_with("total") && lines[3].contains("3.0s"),
            "{s}"
        );
        assert!(s.contains("wall time 3.0s"), "{s}");
        assert!(
            s.contains("static/b/h at restore: restored pid 5 differs"),
            "{s}"
        );
    }

    #[test]
    fn junit_document() {
        let x = junit(&sample(), Duration::from_secs(3));
        assert!(
            x.contains("<testsuites name=\"zdtm\" tests=\"3\" failures=\"1\" skipped=\"1\""),
            "{x}"
        );
        assert!(
            x.contains("<testsuite name=\"zdtm.memory\" tests=\"2\" failures=\"1\" skipped=\"0\""),
            "{x}"
        );
        assert!(
            x.contains("<failure type=\"restore\" message=\"restored pid 5 differs\">"),
            "{x}"
        );
        assert!(
            x.contains("report &lt;with&gt; &amp; &quot;quotes&quot;"),
            "{x}"
        );
        assert!(
            x.contains("<skipped message=\"engine lacks ns-flavor\"/>"),
            "{x}"
        );
        assert_eq!(x.matches("<testcase ").count(), 3);
        assert_eq!(xml_escape("a\u{1}b"), "a\\x01b");
    }

    #[test]
    fn progress_line() {
        let p = Progress::new(4);
        p.started("static/a/h");
        std::thread::sleep(Duration::from_millis(5));
        p.started("static/b/h");
        assert_eq!(p.line(), "[0/4] running 2, slowest static/a/h (0s)");
        p.finished("static/a/h");
        assert_eq!(p.line(), "[1/4] running 1, slowest static/b/h (0s)");
    }
}
