//! The front end: options, building what the trials need, choosing trials, and
//! running them on libtest-mimic (which parses, filters, prints and runs them on
//! its thread pool like `cargo test` does).

use crate::descriptor::{Flag, Flavor, Group};
use crate::discover::{self, Entry, TestCase};
use crate::driver::Driver;
use crate::report::{self, Progress, Record};
use crate::schedule::Scheduler;
use crate::trial::{self, KeepImg, RunConfig, Verdict};
use anyhow::{bail, Context, Result};
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// `cargo zdtm run` options (also what `cargo test` passes to the suite).
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "cargo zdtm run",
    about = "Run zdtm test programs through checkpoint and restore",
    disable_version_flag = true
)]
pub struct RunArgs {
    /// Run trials whose name contains one of these strings (`static/env00`, `/ns`, `sig`).
    #[arg(value_name = "FILTER")]
    pub filters: Vec<String>,
    /// Filters and --skip match whole trial names.
    #[arg(long)]
    pub exact: bool,
    /// List the trials instead of running them.
    #[arg(long)]
    pub list: bool,
    /// Run only ignored trials (noauto tests).
    #[arg(long)]
    pub ignored: bool,
    /// Run ignored trials too.
    #[arg(long)]
    pub include_ignored: bool,
    /// One character per trial.
    #[arg(short, long)]
    pub quiet: bool,
    /// Trials run in parallel (default: number of CPUs).
    #[arg(
        short = 'j',
        long = "test-threads",
        visible_alias = "jobs",
        value_name = "N"
    )]
    pub jobs: Option<usize>,
    /// Skip trials whose name contains FILTER (repeatable).
    #[arg(long, value_name = "FILTER")]
    pub skip: Vec<String>,
    #[arg(long, value_enum)]
    pub color: Option<libtest_mimic::ColorSetting>,
    #[arg(long, value_enum)]
    pub format: Option<libtest_mimic::FormatSetting>,
    /// Write the test runner's output to this file.
    #[arg(long)]
    pub logfile: Option<String>,
    #[arg(long, hide = true)]
    pub nocapture: bool,
    #[arg(long, hide = true)]
    pub show_output: bool,
    #[arg(short = 'Z', hide = true)]
    pub unstable: Option<String>,
    #[arg(long, hide = true)]
    pub test: bool,
    #[arg(long, hide = true)]
    pub bench: bool,

    /// Dump/restore cycles per trial (default 1; 3 under `cargo test`).
    #[arg(long, value_name = "N")]
    pub iters: Option<u32>,
    /// Dump with --leave-running and never restore.
    #[arg(long)]
    pub norst: bool,
    /// Pre-dumps before each dump.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub pre: u32,
    /// Incremental snapshots: every iteration but the last dumps with --leave-running.
    #[arg(long)]
    pub snaps: bool,
    /// Send pages through an engine page server.
    #[arg(long)]
    pub page_server: bool,
    /// Restore with lazy pages served by an engine lazy-pages daemon.
    #[arg(long)]
    pub lazy_pages: bool,
    /// Inject the engine fault NAME (CRUST_FAULT=NAME); a dump failure is then allowed.
    #[arg(long, value_name = "NAME")]
    pub fault: Option<String>,
    /// Engine binary to test (default: crust, built from this workspace).
    #[arg(long, value_name = "PATH")]
    pub engine: Option<PathBuf>,
    /// A missing requirement (feature, flavor, root) fails the trial instead of ignoring it.
    #[arg(long)]
    pub require_all: bool,
    /// When to keep image directories.
    #[arg(long, value_enum, default_value = "failed")]
    pub keep_img: KeepImg,
    /// Write a JUnit XML report.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Only these flavors (h, ns, uns; repeatable or comma separated).
    #[arg(long = "flavor", value_delimiter = ',', value_name = "FLAVOR")]
    pub flavors: Vec<Flavor>,
    /// Results directory (default: zdtm-results/ at the workspace root).
    #[arg(long, value_name = "DIR")]
    pub results_dir: Option<PathBuf>,
    /// Directory holding static/ and transition/ (default: zdtm-tests/ at the workspace root).
    #[arg(long, value_name = "DIR")]
    pub tests_dir: Option<PathBuf>,
    /// Directory of the test binaries (default: the release target directory).
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Do not run `cargo build` first.
    #[arg(long)]
    pub no_build: bool,
}

/// What differs between `cargo zdtm` and the `cargo test` suite.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// `--iters` when not given.
    pub iters: u32,
    /// The executable with the hidden `__launch` subcommand (`cargo-zdtm`).
    pub launcher: PathBuf,
}

/// Workspace locations from `cargo metadata`.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub root: PathBuf,
    pub target: PathBuf,
}

fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// `cargo metadata --format-version 1 --no-deps`: workspace root and target directory.
pub fn workspace() -> Result<Workspace> {
    let out = Command::new(cargo())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata printed no JSON")?;
    let get = |k: &str| -> Result<PathBuf> {
        v.get(k)
            .and_then(|x| x.as_str())
            .map(PathBuf::from)
            .with_context(|| format!("cargo metadata has no {k}"))
    };
    Ok(Workspace {
        root: get("workspace_root")?,
        target: get("target_directory")?,
    })
}

/// `$CARGO build --release -p zdtm-tests [-p engine] --bins`.
fn build(ws: &Workspace, with_engine: bool) -> Result<()> {
    let mut cmd = Command::new(cargo());
    cmd.current_dir(&ws.root)
        .args(["build", "--release", "-p", "zdtm-tests"]);
    if with_engine {
        cmd.args(["-p", "engine"]);
    }
    cmd.arg("--bins");
    let st = cmd.status().context("cannot run cargo build")?;
    if !st.success() {
        bail!("building the engine and the test programs failed ({st})");
    }
    Ok(())
}

/// One trial before it runs.
#[derive(Debug, Clone)]
pub struct Spec {
    /// `static/env00/h`, or `static/broken` for a descriptor that failed to load.
    pub name: String,
    pub group: Group,
    pub flavor: Option<Flavor>,
    pub test: Option<Arc<TestCase>>,
    /// Why the descriptor is unusable (the trial then fails with this).
    pub broken: Option<String>,
}

impl Spec {
    fn has(&self, flag: Flag) -> bool {
        self.test.as_ref().is_some_and(|t| t.descriptor.has(flag))
    }
}

/// Every trial of the discovered tests: each test in each of its flavors.
pub fn specs(entries: Vec<Entry>) -> Vec<Spec> {
    let mut out = Vec::new();
    for e in entries {
        match e {
            Entry::Broken { name, error } => out.push(Spec {
                name,
                group: Group::Misc,
                flavor: None,
                test: None,
                broken: Some(trial::chain(&error)),
            }),
            Entry::Test(t) => {
                let t: Arc<TestCase> = Arc::from(t);
                for &f in Flavor::ALL {
                    if t.descriptor.runs_in(f) {
                        out.push(Spec {
                            name: trial::trial_name(&t, f),
                            group: t.descriptor.group,
                            flavor: Some(f),
                            test: Some(t.clone()),
                            broken: None,
                        });
                    }
                }
            }
        }
    }
    out
}

fn matches(name: &str, filter: &str, exact: bool) -> bool {
    if exact {
        name == filter
    } else {
        name.contains(filter)
    }
}

/// Applies filters, `--skip` and `--flavor`. Returns the selected trials with
/// their "ignored" flag: `noauto` tests are ignored unless a filter names the
/// trial or the test exactly.
pub fn select(specs: Vec<Spec>, args: &RunArgs) -> Vec<(Spec, bool)> {
    specs
        .into_iter()
        .filter(|s| {
            args.filters.is_empty() || args.filters.iter().any(|f| matches(&s.name, f, args.exact))
        })
        .filter(|s| !args.skip.iter().any(|f| matches(&s.name, f, args.exact)))
        .filter(|s| match s.flavor {
            Some(f) => args.flavors.is_empty() || args.flavors.contains(&f),
            None => true,
        })
        .map(|s| {
            let named = args
                .filters
                .iter()
                .any(|f| f == &s.name || s.test.as_ref().is_some_and(|t| f == &t.name));
            let ignored = s.has(Flag::Noauto) && !named;
            (s, ignored)
        })
        .collect()
}

/// Shared by all trials of a run.
struct Shared {
    cfg: RunConfig,
    sched: Scheduler,
    progress: Arc<Progress>,
    records: Mutex<Vec<Record>>,
}

/// Runs the suite as `cargo zdtm run` or `cargo test` asked. The exit code is
/// libtest's: failure when any trial failed.
pub fn run(args: RunArgs, defaults: Defaults) -> Result<ExitCode> {
    crate::process::become_subreaper().context("prctl(PR_SET_CHILD_SUBREAPER)")?;
    let need_ws = args.tests_dir.is_none()
        || args.bin_dir.is_none()
        || args.results_dir.is_none()
        || args.engine.is_none()
        || !args.no_build;
    let ws = if need_ws { Some(workspace()?) } else { None };
    let from_ws = |f: fn(&Workspace) -> PathBuf| ws.as_ref().map(f).unwrap_or_default();
    let tests_dir = args
        .tests_dir
        .clone()
        .unwrap_or_else(|| from_ws(|w| w.root.join("zdtm-tests")));
    let bin_dir = args
        .bin_dir
        .clone()
        .unwrap_or_else(|| from_ws(|w| w.target.join("release")));
    let results_dir = args
        .results_dir
        .clone()
        .unwrap_or_else(|| from_ws(|w| w.root.join("zdtm-results")));
    let (engine, is_crust) = match &args.engine {
        Some(p) => (
            std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()),
            p.file_name().is_some_and(|n| n == "crust"),
        ),
        None => (from_ws(|w| w.target.join("release").join("crust")), true),
    };

    let entries = discover::discover(&tests_dir)?;
    let selected = select(specs(entries), &args);

    if !args.no_build && !args.list {
        if let Some(ws) = &ws {
            build(ws, args.engine.is_none())?;
        }
    }

    let cfg = RunConfig {
        driver: Driver::new(engine, is_crust, args.fault.clone()),
        launcher: defaults.launcher.clone(),
        bin_dir,
        results_dir,
        iters: args.iters.unwrap_or(defaults.iters).max(1),
        norst: args.norst,
        pre: args.pre,
        snaps: args.snaps,
        page_server: args.page_server,
        lazy_pages: args.lazy_pages,
        require_all: args.require_all,
        keep_img: args.keep_img,
        is_root: nix::unistd::geteuid().is_root(),
    };
    let ctx = Arc::new(Shared {
        cfg,
        sched: Scheduler::default(),
        progress: Arc::new(Progress::new(selected.len())),
        records: Mutex::new(Vec::new()),
    });

    let trials: Vec<Trial> = selected
        .into_iter()
        .map(|(spec, ignored)| make_trial(ctx.clone(), spec).with_ignored_flag(ignored))
        .collect();

    let lt_args = Arguments {
        include_ignored: args.include_ignored,
        ignored: args.ignored,
        list: args.list,
        exact: args.exact,
        quiet: args.quiet,
        test_threads: args.jobs,
        logfile: args.logfile.clone(),
        color: args.color,
        format: args.format,
        ..Arguments::default()
    };

    use std::io::IsTerminal;
    let json = matches!(args.format, Some(libtest_mimic::FormatSetting::Json));
    let paint = !args.list && !json && std::io::stderr().is_terminal();
    let stop = Arc::new(AtomicBool::new(false));
    let painter = paint.then(|| ctx.progress.spawn_painter(stop.clone()));
    let started = Instant::now();
    let conclusion = libtest_mimic::run(&lt_args, trials);
    let wall = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(p) = painter {
        let _ = p.join();
    }
    crate::process::reap_orphans();

    if !args.list {
        let records = ctx
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !json && !records.is_empty() {
            println!("\n{}", report::summary(&records, wall));
        }
        if let Some(path) = &args.junit {
            std::fs::write(path, report::junit(&records, wall))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(conclusion.exit_code())
}

fn make_trial(ctx: Arc<Shared>, spec: Spec) -> Trial {
    let name = spec.name.clone();
    Trial::ignorable_test(name, move || {
        if let Some(err) = &spec.broken {
            let report = format!("bad descriptor: {err}");
            ctx.records
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Record {
                    group: spec.group,
                    result: trial::TrialResult {
                        name: spec.name.clone(),
                        verdict: Verdict::Failed(trial::Failure {
                            step: trial::Step::Start,
                            iteration: None,
                            reason: report.clone(),
                            run: None,
                        }),
                        report: report.clone(),
                        duration: std::time::Duration::ZERO,
                        dir: ctx.cfg.results_dir.join(&spec.name),
                        notes: Vec::new(),
                    },
                });
            return Err(Failed::from(report));
        }
        let (Some(test), Some(flavor)) = (spec.test.clone(), spec.flavor) else {
            return Err(Failed::from("internal: trial without a test"));
        };
        let ticket = ctx
            .sched
            .admit(test.descriptor.has(Flag::Excl), &test.descriptor.locks);
        ctx.progress.started(&spec.name);
        let result = trial::run_trial(&ctx.cfg, &test, flavor);
        drop(ticket);
        ctx.progress.finished(&spec.name);
        let outcome = match &result.verdict {
            Verdict::Passed => Ok(Completion::Completed),
            Verdict::Ignored(reason) => Ok(Completion::ignored_with(reason)),
            Verdict::Failed(_) => Err(Failed::from(result.report.clone())),
        };
        ctx.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Record {
                group: spec.group,
                result,
            });
        outcome
    })
}

/// The default launcher: this executable.
pub fn current_launcher() -> Result<PathBuf> {
    std::env::current_exe().context("cannot find the harness executable")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::Descriptor;
    use crate::discover::Program;
    use clap::Parser;
    use std::path::Path;

    fn test(name: &str, yaml: &str) -> Entry {
        let d = Descriptor::parse(Path::new("x.yaml"), yaml).unwrap();
        Entry::Test(Box::new(TestCase {
            name: name.to_string(),
            stem: name.rsplit('/').next().unwrap().to_string(),
            descriptor: d,
            descriptor_path: None,
            program: Program::Bin("x".into()),
        }))
    }

    fn sample() -> Vec<Spec> {
        specs(vec![
            test("static/env00", "description: d\ngroup: misc\n"),
            test(
                "static/sem",
                "description: d\ngroup: ipc\nflavors: [h, ns]\n",
            ),
            test(
                "static/big",
                "description: d\ngroup: memory\nflags: [noauto, nouns]\n",
            ),
            Entry::Broken {
                name: "static/bad".into(),
                error: crate::descriptor::DescriptorError::Invalid {
                    path: "bad.yaml".into(),
                    message: "broken".into(),
                },
            },
        ])
    }

    fn names(sel: &[(Spec, bool)]) -> Vec<String> {
        sel.iter()
            .map(|(s, ign)| format!("{}{}", s.name, if *ign { " (ignored)" } else { "" }))
            .collect()
    }

    fn args(a: &[&str]) -> RunArgs {
        RunArgs::parse_from(std::iter::once("zdtm").chain(a.iter().copied()))
    }

    #[test]
    fn every_flavor_of_every_test() {
        let all = names(&select(sample(), &args(&[])));
        assert_eq!(
            all,
            [
                "static/env00/h",
                "static/env00/ns",
                "static/env00/uns",
                "static/sem/h",
                "static/sem/ns",
                "static/big/h (ignored)",
                "static/big/ns (ignored)",
                "static/bad",
            ]
        );
    }

    #[test]
    fn substring_exact_skip_and_flavor_filters() {
        assert_eq!(
            names(&select(sample(), &args(&["/uns"]))),
            ["static/env00/uns"]
        );
        assert_eq!(
            names(&select(sample(), &args(&["sem", "env00/h"]))),
            ["static/env00/h", "static/sem/h", "static/sem/ns"]
        );
        assert_eq!(
            names(&select(sample(), &args(&["--exact", "static/sem"]))),
            Vec::<String>::new()
        );
        assert_eq!(
            names(&select(sample(), &args(&["--exact", "static/sem/ns"]))),
            ["static/sem/ns"]
        );
        assert_eq!(
            names(&select(
                sample(),
                &args(&["static/", "--skip", "env00", "--skip=bad"])
            )),
            [
                "static/sem/h",
                "static/sem/ns",
                "static/big/h (ignored)",
                "static/big/ns (ignored)"
            ]
        );
        assert_eq!(
            names(&select(sample(), &args(&["--flavor", "ns,uns", "env00"]))),
            ["static/env00/ns", "static/env00/uns"]
        );
    }

    #[test]
    fn noauto_runs_when_named_exactly() {
        assert_eq!(
            names(&select(sample(), &args(&["static/big"]))),
            ["static/big/h", "static/big/ns"]
        );
        assert_eq!(
            names(&select(sample(), &args(&["static/big/ns"]))),
            ["static/big/ns"]
        );
        assert_eq!(
            names(&select(sample(), &args(&["big"]))),
            ["static/big/h (ignored)", "static/big/ns (ignored)"]
        );
    }

    #[test]
    fn options_parse() {
        let a = args(&[
            "-j",
            "3",
            "--iters",
            "2",
            "--norst",
            "--pre",
            "2",
            "--keep-img",
            "always",
            "--fault",
            "dump-late",
            "--flavor",
            "h",
            "--flavor=ns",
            "-q",
            "--include-ignored",
        ]);
        assert_eq!(a.jobs, Some(3));
        assert_eq!(a.iters, Some(2));
        assert!(a.norst && a.quiet && a.include_ignored);
        assert_eq!(a.pre, 2);
        assert_eq!(a.keep_img, KeepImg::Always);
        assert_eq!(a.fault.as_deref(), Some("dump-late"));
        assert_eq!(a.flavors, vec![Flavor::Host, Flavor::Ns]);
        assert_eq!(args(&["--test-threads=4"]).jobs, Some(4));
        assert_eq!(args(&[]).keep_img, KeepImg::Failed);
        assert!(RunArgs::try_parse_from(["zdtm", "--flavor", "hst"]).is_err());
    }
}
