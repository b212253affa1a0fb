//! One trial: one test program in one flavor, through checkpoint and restore.
//!
//! ```text
//! start ─ inspect "before" ─┬─ [pre-dump × --pre] ─ dump ─ reap ─ round-trip ─ restore ─ compare ─┬─ verdict
//!                            └──────────────────── repeated --iters times ─────────────────────────┘
//! ```
//!
//! Every step is bounded by the descriptor's timeout, counted from the start of
//! the trial. Whatever happens, the cleanup kills what is left of the test tree
//! (identified by pid *and* start time, so a reused pid is never hit) and reaps it.
//! A failure produces a complete bug report (see [`TrialResult::report`]).

use crate::descriptor::{Feature, Flag, Flavor};
use crate::discover::{Program, TestCase};
use crate::driver::{quote_argv, Driver, Run};
use crate::process::{self, Exit, Ident};
use engine::inspect::{self, TreeState};
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// When to keep the image directories of a trial.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KeepImg {
    Always,
    #[default]
    Failed,
    Never,
}

/// Everything a trial needs from the run.
#[derive(Debug)]
pub struct RunConfig {
    pub driver: Driver,
    /// The executable providing the hidden `__launch` subcommand.
    pub launcher: PathBuf,
    /// Where the test binaries are (`target/release`).
    pub bin_dir: PathBuf,
    /// `zdtm-results/`
    pub results_dir: PathBuf,
    pub iters: u32,
    pub norst: bool,
    pub pre: u32,
    pub snaps: bool,
    pub page_server: bool,
    pub lazy_pages: bool,
    pub require_all: bool,
    pub keep_img: KeepImg,
    /// Whether the harness runs as root (`suid` tests need it).
    pub is_root: bool,
}

/// The steps of a trial, as named in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Start,
    PreDump,
    Dump,
    Restore,
    Compare,
    Verdict,
    Cleanup,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Start => "start",
            Step::PreDump => "pre-dump",
            Step::Dump => "dump",
            Step::Restore => "restore",
            Step::Compare => "compare",
            Step::Verdict => "verdict",
            Step::Cleanup => "cleanup",
        })
    }
}

/// Why a trial failed.
#[derive(Debug, Clone)]
pub struct Failure {
    pub step: Step,
    /// 1-based iteration, when the failure happened inside one.
    pub iteration: Option<u32>,
    pub reason: String,
    /// The engine run that failed, if the step ran one.
    pub run: Option<Box<Run>>,
}

impl Failure {
    fn new(step: Step, reason: impl Into<String>) -> Self {
        Failure {
            step,
            iteration: None,
            reason: reason.into(),
            run: None,
        }
    }

    fn with_run(mut self, run: Run) -> Self {
        self.run = Some(Box::new(run));
        self
    }
}

/// How a trial ended.
#[derive(Debug, Clone)]
pub enum Verdict {
    Passed,
    Ignored(String),
    Failed(Failure),
}

/// The result of one trial.
#[derive(Debug, Clone)]
pub struct TrialResult {
    /// `static/env00/h`
    pub name: String,
    pub verdict: Verdict,
    /// The bug report of a failed trial; empty otherwise.
    pub report: String,
    pub duration: Duration,
    /// Results directory of the trial.
    pub dir: PathBuf,
    /// Expected events worth telling (an expected failure, allowed differences).
    pub notes: Vec<String>,
}

/// `static/env00/h`
pub fn trial_name(test: &TestCase, flavor: Flavor) -> String {
    format!("{}/{}", test.name, flavor)
}

/// Runs one trial to its verdict. Never panics on a misbehaving test or engine.
pub fn run_trial(cfg: &RunConfig, test: &TestCase, flavor: Flavor) -> TrialResult {
    let started = Instant::now();
    let name = trial_name(test, flavor);
    let dir = cfg.results_dir.join(&test.name).join(flavor.as_str());
    let mut result = TrialResult {
        name: name.clone(),
        verdict: Verdict::Passed,
        report: String::new(),
        duration: Duration::ZERO,
        dir: dir.clone(),
        notes: Vec::new(),
    };
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        result.verdict = Verdict::Failed(Failure::new(
            Step::Start,
            format!("cannot create results directory {}: {e}", dir.display()),
        ));
        result.report = format!(
            "{name}: cannot create results directory {}: {e}",
            dir.display()
        );
        result.duration = started.elapsed();
        return result;
    }

    match requirements(cfg, test, flavor) {
        Ok(None) => {}
        Ok(Some(reason)) => {
            result.verdict = Verdict::Ignored(reason);
        }
        Err(f) => {
            result.report = format!(
                "{name}: FAILED at step `{}`\n  {}\nresults: {}\n",
                f.step,
                f.reason,
                dir.display()
            );
            result.verdict = Verdict::Failed(f);
        }
    }
    if !matches!(result.verdict, Verdict::Passed) {
        result.duration = started.elapsed();
        write_verdict(&result);
        return result;
    }

    let mut trial = match Trial::new(cfg, test, flavor, name, dir) {
        Ok(t) => t,
        Err(f) => {
            result.report = format!(
                "{}: FAILED at step `{}`\n  {}\n",
                result.name, f.step, f.reason
            );
            result.verdict = Verdict::Failed(f);
            result.duration = started.elapsed();
            write_verdict(&result);
            return result;
        }
    };
    let outcome = trial.execute();
    let cleanup = trial.cleanup();
    let outcome = match (outcome, cleanup) {
        (Err(f), Err(c)) => {
            trial.notes.push(format!("cleanup: {}", c.reason));
            Err(f)
        }
        (Err(f), Ok(())) => Err(f),
        (Ok(()), Err(f)) => Err(f),
        (Ok(()), Ok(())) => Ok(()),
    };
    match outcome {
        Ok(()) => result.verdict = Verdict::Passed,
        Err(mut f) => {
            if f.iteration.is_none() {
                f.iteration = trial.iteration;
            }
            result.report = trial.report(&f);
            result.verdict = Verdict::Failed(f);
        }
    }
    result.notes = std::mem::take(&mut trial.notes);
    let keep = match cfg.keep_img {
        KeepImg::Always => true,
        KeepImg::Never => false,
        KeepImg::Failed => matches!(result.verdict, Verdict::Failed(_)),
    };
    if !keep {
        trial.drop_images();
    }
    result.duration = started.elapsed();
    write_verdict(&result);
    result
}

fn write_verdict(r: &TrialResult) {
    let mut text = match &r.verdict {
        Verdict::Passed => String::from("PASS\n"),
        Verdict::Ignored(reason) => format!("IGNORED: {reason}\n"),
        Verdict::Failed(f) => format!(
            "FAIL at {}: {}\n\n{}",
            f.step,
            first_line(&f.reason),
            r.report
        ),
    };
    // A failure's report already lists the notes.
    if !matches!(r.verdict, Verdict::Failed(_)) {
        for n in &r.notes {
            let _ = writeln!(text, "note: {n}");
        }
    }
    let _ = std::fs::write(r.dir.join("verdict.txt"), text);
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// `Ok(Some(reason))`: ignore the trial. `Err`: a missing requirement under --require-all.
fn requirements(
    cfg: &RunConfig,
    test: &TestCase,
    flavor: Flavor,
) -> Result<Option<String>, Failure> {
    let d = &test.descriptor;
    if d.has(Flag::Reqrst) && (cfg.norst || cfg.snaps) {
        let mode = if cfg.norst { "--norst" } else { "--snaps" };
        return Ok(Some(format!(
            "needs a restore after every dump (reqrst) and {mode} was given"
        )));
    }
    let missing = |reason: String| {
        if cfg.require_all {
            Err(Failure::new(
                Step::Start,
                format!("{reason} (--require-all)"),
            ))
        } else {
            Ok(Some(reason))
        }
    };
    if d.has(Flag::Suid) && !cfg.is_root {
        return missing(String::from("needs root (suid)"));
    }
    let mut needed: Vec<Feature> = Vec::new();
    match flavor {
        Flavor::Host => {}
        Flavor::Ns => needed.push(Feature::NsFlavor),
        Flavor::Uns => needed.push(Feature::UnsFlavor),
    }
    if cfg.pre > 0 {
        needed.push(Feature::PreDump);
    }
    if cfg.snaps {
        needed.push(Feature::Snapshots);
    }
    if cfg.page_server {
        needed.push(Feature::PageServer);
    }
    if cfg.lazy_pages {
        needed.push(Feature::LazyPages);
    }
    needed.extend(d.features.iter().copied());
    for f in needed {
        match cfg.driver.has_feature(f.as_str()) {
            Ok(true) => {}
            Ok(false) => return missing(format!("engine lacks {f}")),
            Err(e) => {
                return Err(Failure::new(
                    Step::Start,
                    format!("cannot ask the engine about feature {f}: {}", chain(&e)),
                ))
            }
        }
    }
    Ok(None)
}

/// An error with its causes on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let _ = write!(s, ": {c}");
        cur = c.source();
    }
    s
}

/// How the dump of one iteration went.
enum Dumped {
    /// The engine failed at this step (a pre-dump or the dump); the task should still be
    /// running.
    Failed(Run, Step),
    /// Dumped with --leave-running.
    LeftRunning,
    /// Dumped, the task was killed and reaped.
    Killed,
}

struct Trial<'a> {
    cfg: &'a RunConfig,
    test: &'a TestCase,
    flavor: Flavor,
    name: String,
    dir: PathBuf,
    work: tempfile::TempDir,
    deadline: Instant,
    timeout: Duration,
    program: Vec<OsString>,
    pidfile: PathBuf,
    outfile: PathBuf,
    /// The test's root pid.
    pid: i32,
    /// The launcher we spawned, while not reaped. In `h` it *is* the test.
    launcher: Option<Child>,
    /// Processes of the test tree, as last seen.
    known: BTreeSet<Ident>,
    /// Background engine daemons (page server, lazy pages).
    daemons: Vec<(String, Ident)>,
    runs: Vec<Run>,
    iteration: Option<u32>,
    notes: Vec<String>,
    outfile_text: Option<String>,
    /// Runs the engine without the `--fault` (the restore after a faulted one).
    fault_off: bool,
}

impl<'a> Trial<'a> {
    fn new(
        cfg: &'a RunConfig,
        test: &'a TestCase,
        flavor: Flavor,
        name: String,
        dir: PathBuf,
    ) -> Result<Self, Failure> {
        let work = tempfile::Builder::new()
            .prefix(&format!("zdtm-{}-{}-", test.stem, flavor))
            .tempdir()
            .map_err(|e| {
                Failure::new(Step::Start, format!("cannot create a work directory: {e}"))
            })?;
        let timeout = Duration::from_secs(test.descriptor.timeout);
        let pidfile = work.path().join("test.pid");
        let outfile = work.path().join("test.out");
        let exe = match &test.program {
            Program::Bin(bin) => cfg.bin_dir.join(bin),
            Program::Exec(p) => p.clone(),
        };
        let mut program = vec![
            exe.into_os_string(),
            OsString::from(format!("--pidfile={}", pidfile.display())),
            OsString::from(format!("--outfile={}", outfile.display())),
        ];
        program.extend(test.descriptor.args.iter().map(OsString::from));
        Ok(Trial {
            cfg,
            test,
            flavor,
            name,
            dir,
            work,
            deadline: Instant::now() + timeout,
            timeout,
            program,
            pidfile,
            outfile,
            pid: 0,
            launcher: None,
            known: BTreeSet::new(),
            daemons: Vec::new(),
            runs: Vec::new(),
            iteration: None,
            notes: Vec::new(),
            outfile_text: None,
            fault_off: false,
        })
    }

    fn timed_out(&self, what: &str) -> String {
        format!(
            "timed out after {}s (descriptor timeout) {what}",
            self.timeout.as_secs()
        )
    }

    fn execute(&mut self) -> Result<(), Failure> {
        self.start()?;
        let before = self.inspect_settled(Step::Start, "before")?;
        let crfail = self.test.descriptor.has(Flag::Crfail);
        let mut prev: Option<PathBuf> = None;
        for it in 1..=self.cfg.iters.max(1) {
            self.iteration = Some(it);
            let last = it == self.cfg.iters.max(1);
            match self.checkpoint(it, last, &mut prev)? {
                Dumped::Failed(run, step) => {
                    let what = if step == Step::PreDump {
                        "pre-dump"
                    } else {
                        "dump"
                    };
                    if crfail || self.cfg.driver.fault.is_some() {
                        let why = if crfail {
                            "expected (crfail)"
                        } else {
                            "allowed under --fault"
                        };
                        self.notes.push(format!(
                            "iteration {it}: {what} failed ({}), {why}",
                            run.status()
                        ));
                        self.check_unharmed(&before)?;
                        return self.verdict();
                    }
                    return Err(
                        Failure::new(step, format!("the engine failed to {what}")).with_run(run)
                    );
                }
                Dumped::LeftRunning => {
                    self.compare(&before, Step::Compare, &format!("after-dump-{it}"))?;
                    continue;
                }
                Dumped::Killed => {}
            }
            let faulted = self.cfg.driver.fault.is_some() && !crfail;
            let images = if faulted {
                Some(self.image_digest(it)?)
            } else {
                None
            };
            let mut failed = self.restore(it)?;
            if let (Some(run), Some(digest)) = (failed.as_ref(), images) {
                // A restore that fails on the injected fault must leave the images as they
                // were and nothing of the tree behind; the restore without it must then pass.
                self.notes.push(format!(
                    "iteration {it}: restore failed ({}), allowed under --fault",
                    run.status()
                ));
                let run = run.clone();
                if self.image_digest(it)? != digest {
                    return Err(Failure::new(
                        Step::Restore,
                        "the images changed in the restore that failed on the injected fault",
                    )
                    .with_run(run));
                }
                // Every task the images name: the engine must have removed all it created.
                let mut tree = BTreeSet::from([self.pid]);
                if let Ok(inv) = images::ImageDir::open(&self.img_dir(it, "dump"))
                    .and_then(|d| d.read_inventory())
                {
                    tree.extend(inv.pids);
                }
                let left = process::reap_gone(&tree, self.deadline);
                if !left.is_empty() {
                    return Err(Failure::new(
                        Step::Restore,
                        format!(
                            "tasks {left:?} of the tree are still there after the restore that failed on the injected fault"
                        ),
                    )
                    .with_run(run));
                }
                self.fault_off = true;
                let again = self.restore(it);
                self.fault_off = false;
                failed = again?;
            }
            if let Some(run) = failed {
                if crfail {
                    self.notes.push(format!(
                        "iteration {it}: restore failed ({}), expected (crfail)",
                        run.status()
                    ));
                    return Ok(());
                }
                return Err(
                    Failure::new(Step::Restore, "the engine failed to restore").with_run(run)
                );
            }
            self.compare(&before, Step::Compare, &format!("after-{it}"))?;
        }
        if crfail {
            return Err(Failure::new(
                Step::Verdict,
                "crfail: dump or restore was expected to fail, but both succeeded",
            ));
        }
        self.verdict()?;
        // A lazy-pages daemon has served everything once the test is gone.
        self.finish_daemons(Step::Cleanup)
    }

    fn start(&mut self) -> Result<(), Failure> {
        let exe = PathBuf::from(&self.program[0]);
        if !exe.exists() {
            let hint = match &self.test.program {
                Program::Bin(b) => format!(
                    " (is `{b}` a [[bin]] of zdtm-tests, and was it built in {}?)",
                    self.cfg.bin_dir.display()
                ),
                Program::Exec(_) => String::from(" (the descriptor's `exec` path)"),
            };
            return Err(Failure::new(
                Step::Start,
                format!("test program {} not found{hint}", exe.display()),
            ));
        }
        let stdout = self.output_file("test.stdout")?;
        let stderr = self.output_file("test.stderr")?;
        let pid_out = (self.flavor != Flavor::Host).then(|| self.work.path().join("ns.pid"));
        let mut cmd = crate::launch::command_line(
            &self.cfg.launcher,
            self.flavor,
            pid_out.as_deref(),
            &self.program,
        );
        cmd.current_dir(self.work.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .env_remove(crate::driver::FAULT_ENV);
        let child = spawn_retrying(&mut cmd).map_err(|e| {
            Failure::new(
                Step::Start,
                format!(
                    "cannot run the launcher {}: {e}",
                    self.cfg.launcher.display()
                ),
            )
        })?;
        let launcher_pid = child.id() as i32;
        self.launcher = Some(child);

        // Wait for the pidfile (and, in a namespace, for the outside pid).
        let mut backoff = process::Backoff::default();
        let (said, outer) = loop {
            let said = read_pid(&self.pidfile);
            let outer = match &pid_out {
                None => Some(launcher_pid),
                Some(p) => read_pid(p),
            };
            if let (Some(s), Some(o)) = (said, outer) {
                break (s, o);
            }
            if let Some(child) = self.launcher.as_mut() {
                if let Ok(Some(st)) = child.try_wait() {
                    self.launcher = None;
                    return Err(Failure::new(
                        Step::Start,
                        format!(
                            "the test exited ({}) before writing its pidfile",
                            Exit::from(st)
                        ),
                    ));
                }
            }
            if Instant::now() >= self.deadline {
                let what = match std::fs::read_to_string(&self.pidfile) {
                    Ok(text) => format!("waiting for a pid in the pidfile (it holds {text:?})"),
                    Err(_) => String::from("waiting for the pidfile"),
                };
                return Err(Failure::new(Step::Start, self.timed_out(&what)));
            }
            backoff.sleep(self.deadline);
        };
        let expected = if self.flavor == Flavor::Host {
            outer
        } else {
            1
        };
        self.pid = outer;
        self.remember(outer);
        if said != expected {
            return Err(Failure::new(
                Step::Start,
                format!(
                    "the pidfile says {said} but the test is pid {expected}: a test must not fork away"
                ),
            ));
        }
        Ok(())
    }

    fn output_file(&self, name: &str) -> Result<std::fs::File, Failure> {
        let p = self.dir.join(name);
        std::fs::File::create(&p)
            .map_err(|e| Failure::new(Step::Start, format!("cannot create {}: {e}", p.display())))
    }

    fn remember(&mut self, pid: i32) {
        if let Some(id) = Ident::of(pid) {
            self.known.insert(id);
        }
    }

    fn inspect(&mut self, step: Step, label: &str) -> Result<TreeState, Failure> {
        let mut state = inspect::inspect(self.pid).map_err(|e| {
            Failure::new(step, format!("cannot inspect the test tree: {}", chain(&e)))
        })?;
        // The test's stdout and stderr are the harness's log files: a test may print
        // diagnostics at any time, so their offsets are not state to compare.
        let logs = [self.dir.join("test.stdout"), self.dir.join("test.stderr")];
        for t in &mut state.tasks {
            for fd in &mut t.fds {
                if logs.iter().any(|l| Path::new(&fd.target) == l) {
                    fd.pos = 0;
                }
            }
        }
        for t in &state.tasks {
            self.remember(t.pid);
        }
        if let Ok(json) = serde_json::to_string_pretty(&state) {
            let _ = std::fs::write(self.dir.join(format!("inspect-{label}.json")), json);
        }
        Ok(state)
    }

    /// How long a tree may take to settle: a task that was just started or
    /// restored inside a restartable system call shows transient state (its
    /// signal mask, say, around `rt_sigsuspend`) until it is back in the call.
    const SETTLE: Duration = Duration::from_millis(500);

    /// The "before" state: inspected until two readings in a row agree (or
    /// [`Self::SETTLE`] has passed), so a test still finishing its way into
    /// its wait does not make a transient state the reference.
    fn inspect_settled(&mut self, step: Step, label: &str) -> Result<TreeState, Failure> {
        let until = (Instant::now() + Self::SETTLE).min(self.deadline);
        let mut prev = self.inspect(step, label)?;
        let mut backoff = process::Backoff::default();
        while Instant::now() < until {
            backoff.sleep(until);
            let next = self.inspect(step, label)?;
            if next == prev {
                return Ok(next);
            }
            prev = next;
        }
        Ok(prev)
    }

    /// Differences between `before` and `after` not allowed by the descriptor;
    /// allowed ones go to the notes when `note` is set.
    fn unexpected(&mut self, before: &TreeState, after: &TreeState, note: bool) -> Vec<String> {
        let allowed = &self.test.descriptor.allow_diff;
        let mut bad = Vec::new();
        for d in inspect::diff_fields(before, after) {
            match allowed
                .iter()
                .find(|a| inspect::field_covers(&a.field, &d.field))
            {
                Some(a) if note => self
                    .notes
                    .push(format!("allowed difference ({}): {d}", a.reason)),
                Some(_) => {}
                None => bad.push(format!("[{}] {d}", d.field)),
            }
        }
        bad
    }

    /// Inspects the tree and compares it with `before`. A difference is read
    /// again until it persists for [`Self::SETTLE`]: only lasting differences fail.
    fn compare(&mut self, before: &TreeState, step: Step, label: &str) -> Result<(), Failure> {
        let until = (Instant::now() + Self::SETTLE).min(self.deadline);
        let mut backoff = process::Backoff::default();
        let mut after = self.inspect(step, label)?;
        while !self.unexpected(before, &after, false).is_empty() && Instant::now() < until {
            backoff.sleep(until);
            after = self.inspect(step, label)?;
        }
        let bad = self.unexpected(before, &after, true);
        if bad.is_empty() {
            return Ok(());
        }
        Err(Failure::new(
            step,
            format!(
                "the tree differs from before the dump ({label}):\n{}",
                bad.join("\n")
            ),
        ))
    }

    /// A digest of the image files of iteration `it` (names and contents; logs left out).
    fn image_digest(&self, it: u32) -> Result<u64, Failure> {
        use std::hash::Hasher;
        let dir = self.img_dir(it, "dump");
        let fail = |e: std::io::Error| {
            Failure::new(
                Step::Restore,
                format!("reading the images in {}: {e}", dir.display()),
            )
        };
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(fail)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_none_or(|x| x != "log"))
            .collect();
        names.sort();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for p in names {
            h.write(p.as_os_str().as_encoded_bytes());
            if p.is_file() {
                h.write(&std::fs::read(&p).map_err(fail)?);
            }
        }
        Ok(h.finish())
    }

    fn img_dir(&self, it: u32, leaf: &str) -> PathBuf {
        self.dir.join(format!("iter-{it}")).join(leaf)
    }

    /// Runs the engine. `log` is the `-o` log the command writes (inside its image
    /// directory): it is moved beside the directory afterwards, so the image
    /// directory holds images only and the round-trip check sees nothing else.
    fn engine(
        &mut self,
        step: Step,
        what: &str,
        args: Vec<OsString>,
        out: PathBuf,
        log: Option<(PathBuf, PathBuf)>,
    ) -> Result<Run, Failure> {
        let driver = &self.cfg.driver;
        let fault = if self.fault_off {
            None
        } else {
            driver.fault.as_deref()
        };
        let mut run = driver
            .run_with_fault(
                what,
                &args,
                self.work.path(),
                &out,
                None,
                self.deadline,
                fault,
            )
            .map_err(|e| Failure::new(step, chain(&e)))?;
        if let Some((inside, beside)) = log {
            run.log = Some(match std::fs::rename(&inside, &beside) {
                Ok(()) => beside,
                Err(_) => inside,
            });
        }
        self.runs.push(run.clone());
        if run.exit.is_none() {
            return Err(Failure::new(step, self.timed_out(&format!("in {what}"))).with_run(run));
        }
        Ok(run)
    }

    /// Pre-dumps (if any) and the dump of iteration `it`.
    fn checkpoint(
        &mut self,
        it: u32,
        last: bool,
        prev: &mut Option<PathBuf>,
    ) -> Result<Dumped, Failure> {
        for k in 1..=self.cfg.pre {
            let dir = self.img_dir(it, &format!("pre-{k}"));
            mkdir(&dir, Step::PreDump)?;
            let mut args = crate::os_args!["pre-dump", "-t", self.pid.to_string(), "-D", &dir];
            args.extend(crate::os_args!["-o", "pre-dump.log", "-v4", "--track-mem"]);
            if let Some(p) = prev.as_ref() {
                args.extend(crate::os_args!["--prev-images-dir", relative(&dir, p)]);
            }
            let out = self.img_dir(it, &format!("pre-{k}.out"));
            let log = (
                dir.join("pre-dump.log"),
                self.img_dir(it, &format!("pre-{k}.log")),
            );
            let run = self.engine(Step::PreDump, "pre-dump", args, out, Some(log))?;
            if !run.success() {
                return Ok(Dumped::Failed(run, Step::PreDump));
            }
            self.roundtrip(&dir, Step::PreDump)?;
            *prev = Some(dir);
        }

        let leave_running = self.cfg.norst || (self.cfg.snaps && !last);
        let dir = self.img_dir(it, "dump");
        mkdir(&dir, Step::Dump)?;
        let mut args = crate::os_args![
            "dump",
            "-t",
            self.pid.to_string(),
            "-D",
            &dir,
            "-o",
            "dump.log",
            "-v4"
        ];
        if leave_running {
            args.push("--leave-running".into());
        }
        if self.cfg.snaps || self.cfg.pre > 0 {
            args.push("--track-mem".into());
        }
        if let Some(p) = prev.as_ref() {
            args.extend(crate::os_args!["--prev-images-dir", relative(&dir, p)]);
        }
        let page_server = if self.cfg.page_server {
            let port =
                free_port().map_err(|e| Failure::new(Step::Dump, format!("no free port: {e}")))?;
            self.start_daemon(
                Step::Dump,
                "page-server",
                crate::os_args!["page-server", "-D", &dir, "--port", port.to_string()],
                &dir,
                it,
            )?;
            args.extend(crate::os_args![
                "--page-server",
                "--address",
                "127.0.0.1",
                "--port",
                port.to_string()
            ]);
            true
        } else {
            false
        };
        args.extend(self.test.descriptor.dump_opts.iter().map(OsString::from));
        let out = self.img_dir(it, "dump.out");
        let log = (dir.join("dump.log"), self.img_dir(it, "dump.log"));
        let run = self.engine(Step::Dump, "dump", args, out, Some(log))?;
        if page_server {
            self.finish_daemons(Step::Dump)?;
        }
        if !run.success() {
            return Ok(Dumped::Failed(run, Step::Dump));
        }
        *prev = self.cfg.snaps.then(|| dir.clone());
        if leave_running {
            if !process::alive(self.pid) {
                return Err(Failure::new(
                    Step::Dump,
                    format!(
                        "dump with --leave-running succeeded but task {} is gone",
                        self.pid
                    ),
                )
                .with_run(run));
            }
            self.roundtrip(&dir, Step::Dump)?;
            return Ok(Dumped::LeftRunning);
        }
        self.reap_dumped(&run, &dir)?;
        self.roundtrip(&dir, Step::Dump)?;
        Ok(Dumped::Killed)
    }

    /// After a dump the engine kills the tree; the root is our child, so reap it
    /// (and wait for the rest to go) before restoring, or the pids stay taken.
    fn reap_dumped(&mut self, run: &Run, dir: &std::path::Path) -> Result<(), Failure> {
        let gone = match self.launcher.as_mut() {
            Some(child) => match process::wait_child(child, self.deadline) {
                Ok(Some(_)) => {
                    self.launcher = None;
                    true
                }
                Ok(None) => false,
                Err(e) => {
                    return Err(Failure::new(
                        Step::Dump,
                        format!("waiting for the launcher: {e}"),
                    ))
                }
            },
            None => match process::wait_pid(self.pid, self.deadline) {
                Ok(Some(_)) => true,
                Ok(None) => false,
                Err(nix::errno::Errno::ECHILD) => {
                    // Not our child: it may belong to a namespace launcher; wait for it to vanish.
                    process::reap_gone(&BTreeSet::from([self.pid]), self.deadline).is_empty()
                }
                Err(e) => {
                    return Err(Failure::new(
                        Step::Dump,
                        format!("waitpid({}): {e}", self.pid),
                    ))
                }
            },
        };
        if !gone {
            return Err(Failure::new(
                Step::Dump,
                format!(
                    "dump succeeded but task {} did not exit (the engine must kill the tree without --leave-running); {}",
                    self.pid,
                    self.timed_out("waiting for it")
                ),
            )
            .with_run(run.clone()));
        }
        // Every task of the dumped tree, including zombies and children born after the last
        // inspection: all re-parented to us when the root died, all to be reaped.
        let mut rest: BTreeSet<i32> = self.known.iter().map(|i| i.pid).collect();
        if let Ok(inv) = images::ImageDir::open(dir).and_then(|d| d.read_inventory()) {
            rest.extend(inv.pids);
        }
        let left = process::reap_gone(&rest, self.deadline);
        if !left.is_empty() {
            return Err(Failure::new(
                Step::Dump,
                format!("dump succeeded but tasks {left:?} of the tree are still there"),
            )
            .with_run(run.clone()));
        }
        Ok(())
    }

    /// `images::ImageDir::open(dir)?.verify_roundtrip()`: every image must decode
    /// and re-encode to the same bytes. Only for crust's own images.
    fn roundtrip(&mut self, dir: &Path, step: Step) -> Result<(), Failure> {
        if !self.cfg.driver.is_crust {
            return Ok(());
        }
        let differing = images::ImageDir::open(dir)
            .and_then(|d| d.verify_roundtrip())
            .map_err(|e| {
                Failure::new(
                    step,
                    format!("image round-trip check of {}: {}", dir.display(), chain(&e)),
                )
            })?;
        if differing.is_empty() {
            return Ok(());
        }
        let files: Vec<String> = differing.iter().map(|p| p.display().to_string()).collect();
        Err(Failure::new(
            step,
            format!(
                "image round-trip check: these files do not re-encode to the same bytes:\n{}",
                files.join("\n")
            ),
        ))
    }

    /// Restores iteration `it`. `Ok(Some(run))`: the engine failed.
    fn restore(&mut self, it: u32) -> Result<Option<Run>, Failure> {
        let dir = self.img_dir(it, "dump");
        let rpid = self.work.path().join(format!("restore-{it}.pid"));
        let mut args = crate::os_args![
            "restore",
            "-D",
            &dir,
            "-d",
            "--pidfile",
            &rpid,
            "-o",
            "restore.log",
            "-v4"
        ];
        if self.cfg.lazy_pages {
            self.start_daemon(
                Step::Restore,
                "lazy-pages",
                crate::os_args!["lazy-pages", "-D", &dir],
                &dir,
                it,
            )?;
            args.push("--lazy-pages".into());
        }
        args.extend(self.test.descriptor.restore_opts.iter().map(OsString::from));
        let out = self.img_dir(it, "restore.out");
        let log = (dir.join("restore.log"), self.img_dir(it, "restore.log"));
        let run = self.engine(Step::Restore, "restore", args, out, Some(log))?;
        if !run.success() {
            // Whatever the engine left behind of the tree (re-parented to us when the
            // engine exited) must not outlive the trial.
            if process::parent_of(self.pid) == Some(std::process::id() as i32) {
                self.remember(self.pid);
            }
            return Ok(Some(run));
        }
        let Some(got) = read_pid(&rpid) else {
            return Err(Failure::new(
                Step::Restore,
                format!("restore succeeded but wrote no pid to {}", rpid.display()),
            )
            .with_run(run));
        };
        if got != self.pid {
            // Kill the impostor only if it is ours (re-parented to us).
            if process::parent_of(got) == Some(std::process::id() as i32) {
                self.remember(got);
            }
            return Err(Failure::new(
                Step::Restore,
                format!(
                    "restored pid {got} differs from the original pid {}",
                    self.pid
                ),
            )
            .with_run(run));
        }
        self.remember(self.pid);
        if !process::alive(self.pid) {
            return Err(Failure::new(
                Step::Restore,
                format!("restore succeeded but task {} is not running", self.pid),
            )
            .with_run(run));
        }
        Ok(None)
    }

    /// Starts an engine daemon (`--daemon --pidfile`) and remembers its pid.
    fn start_daemon(
        &mut self,
        step: Step,
        what: &str,
        mut args: Vec<OsString>,
        dir: &Path,
        it: u32,
    ) -> Result<(), Failure> {
        let pidfile = self.work.path().join(format!("{what}-{it}.pid"));
        args.extend(crate::os_args![
            "-o",
            format!("{what}.log"),
            "-v4",
            "--daemon",
            "--pidfile",
            &pidfile
        ]);
        let out = self.img_dir(it, &format!("{what}.out"));
        let log = (
            dir.join(format!("{what}.log")),
            self.img_dir(it, &format!("{what}.log")),
        );
        let run = self.engine(step, what, args, out, Some(log))?;
        if !run.success() {
            return Err(
                Failure::new(step, format!("the engine failed to start {what}")).with_run(run),
            );
        }
        let Some(pid) = read_pid(&pidfile) else {
            return Err(Failure::new(step, format!("{what} wrote no pidfile")).with_run(run));
        };
        if let Some(id) = Ident::of(pid) {
            self.daemons.push((what.to_string(), id));
        }
        Ok(())
    }

    /// Waits for the daemons to finish their work and exit.
    fn finish_daemons(&mut self, step: Step) -> Result<(), Failure> {
        for (what, id) in std::mem::take(&mut self.daemons) {
            let left = process::reap_gone(&BTreeSet::from([id.pid]), self.deadline);
            if !left.is_empty() && id.is_alive() {
                let _ = process::signal(id.pid, Signal::SIGKILL);
                return Err(Failure::new(
                    step,
                    format!("{what} (pid {}) did not exit", id.pid),
                ));
            }
        }
        Ok(())
    }

    /// After a failed dump (expected or allowed) the task must be running, unharmed.
    fn check_unharmed(&mut self, before: &TreeState) -> Result<(), Failure> {
        let died = |pid: i32| {
            Failure::new(
                Step::Dump,
                format!(
                    "the dump failed and task {pid} did not survive it: a failed dump must leave the tree running"
                ),
            )
        };
        if !process::alive(self.pid) {
            return Err(died(self.pid));
        }
        match self.compare(before, Step::Dump, "after-failed-dump") {
            Ok(()) => Ok(()),
            Err(f) => {
                // A task killed just before is still exiting: /proc stops making
                // sense before it becomes a zombie. Tell that apart from damage.
                let soon = Instant::now() + Duration::from_millis(500);
                while process::alive(self.pid) && Instant::now() < soon {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if process::alive(self.pid) {
                    Err(f)
                } else {
                    Err(died(self.pid))
                }
            }
        }
    }

    /// SIGTERM, wait for the exit, read the outfile: `PASS` and exit code 0 pass.
    fn verdict(&mut self) -> Result<(), Failure> {
        process::signal(self.pid, Signal::SIGTERM).map_err(|e| {
            Failure::new(Step::Verdict, format!("kill({}, SIGTERM): {e}", self.pid))
        })?;
        let exit = match self.launcher.as_mut() {
            Some(child) => process::wait_child(child, self.deadline)
                .map_err(|e| Failure::new(Step::Verdict, format!("waiting for the test: {e}")))?
                .map(Exit::from),
            None => match process::wait_pid(self.pid, self.deadline) {
                Ok(e) => e,
                Err(nix::errno::Errno::ECHILD) => {
                    return Err(Failure::new(
                        Step::Verdict,
                        format!(
                            "task {} is not a child of the harness: a restored tree must be left to the subreaper",
                            self.pid
                        ),
                    ))
                }
                Err(e) => return Err(Failure::new(Step::Verdict, format!("waitpid({}): {e}", self.pid))),
            },
        };
        let Some(exit) = exit else {
            return Err(Failure::new(
                Step::Verdict,
                self.timed_out("waiting for the test to exit after SIGTERM"),
            ));
        };
        self.launcher = None;
        let text = std::fs::read_to_string(&self.outfile).ok();
        if let Some(t) = &text {
            let _ = std::fs::write(self.dir.join("test.out"), t);
        }
        self.outfile_text = text.clone();
        match text {
            Some(t) if t.trim_end() == "PASS" && exit == Exit::Code(0) => Ok(()),
            Some(t) if t.trim_end() == "PASS" => Err(Failure::new(
                Step::Verdict,
                format!("the test wrote PASS but ended with {exit}"),
            )),
            Some(t) => Err(Failure::new(
                Step::Verdict,
                format!("the test reported: {} ({exit})", t.trim_end()),
            )),
            None => Err(Failure::new(
                Step::Verdict,
                format!("the test wrote no outfile ({exit})"),
            )),
        }
    }

    /// Kills and reaps whatever is left. Errors only if something could not be removed.
    fn cleanup(&mut self) -> Result<(), Failure> {
        let mut left = Vec::new();
        let known: Vec<Ident> = self
            .known
            .iter()
            .copied()
            .chain(self.daemons.iter().map(|(_, id)| *id))
            .collect();
        for id in known {
            if id.is_alive() {
                process::kill_tree(id.pid, Duration::from_secs(5));
                if id.is_alive() {
                    left.push(id.pid);
                }
            }
        }
        if let Some(mut child) = self.launcher.take() {
            if let Ok(None) = child.try_wait() {
                process::kill_tree(child.id() as i32, Duration::from_secs(5));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(Failure::new(
                Step::Cleanup,
                format!("tasks {left:?} could not be killed"),
            ))
        }
    }

    /// Removes the image directories; engine logs and outputs live beside them and stay.
    fn drop_images(&self) {
        let Ok(iters) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for it in iters.flatten() {
            let Ok(entries) = std::fs::read_dir(it.path()) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }

    /// The bug report of a failed trial.
    fn report(&self, f: &Failure) -> String {
        let mut r = String::new();
        let iters = self.cfg.iters.max(1);
        let at = match f.iteration {
            Some(i) => format!(" (iteration {i} of {iters})"),
            None => String::new(),
        };
        let _ = writeln!(r, "{}: FAILED at step `{}`{at}", self.name, f.step);
        for line in f.reason.lines() {
            let _ = writeln!(r, "  {line}");
        }
        if let Some(run) = &f.run {
            let _ = writeln!(r, "failed command:\n  {}", run.command_line());
            let _ = writeln!(r, "  status: {}", run.status());
            section(
                &mut r,
                &format!("engine output ({})", run.output.display()),
                &run.output,
            );
            if let Some(log) = &run.log {
                section(&mut r, &format!("engine log ({})", log.display()), log);
            }
        }
        let _ = writeln!(r, "test program:\n  {}", quote_argv(&self.program));
        let pid = match self.pid {
            0 => String::from("no pid yet"),
            p => format!("pid {p}"),
        };
        let _ = writeln!(
            r,
            "  flavor {}, {pid}, work directory {}",
            self.flavor,
            self.work.path().display()
        );
        section(&mut r, "test stderr", &self.dir.join("test.stderr"));
        let out = match &self.outfile_text {
            Some(t) => t.trim_end().to_string(),
            None => match std::fs::read_to_string(&self.outfile) {
                Ok(t) => t.trim_end().to_string(),
                Err(_) => String::from("(not written)"),
            },
        };
        let _ = writeln!(r, "test outfile: {out}");
        let earlier: Vec<&Run> = self
            .runs
            .iter()
            .filter(|run| f.run.as_ref().is_none_or(|fr| fr.argv != run.argv))
            .collect();
        if !earlier.is_empty() {
            let _ = writeln!(r, "other engine commands:");
            for run in earlier {
                let _ = writeln!(r, "  {run}");
            }
        }
        for n in &self.notes {
            let _ = writeln!(r, "note: {n}");
        }
        let _ = writeln!(
            r,
            "results (logs, images, inspections): {}",
            self.dir.display()
        );
        r
    }
}

fn section(r: &mut String, title: &str, path: &Path) {
    let _ = writeln!(r, "{title}, last lines:");
    for line in process::tail(path, 20).lines() {
        let _ = writeln!(r, "  | {line}");
    }
}

fn mkdir(dir: &Path, step: Step) -> Result<(), Failure> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::new(step, format!("cannot create {}: {e}", dir.display())))
}

/// `--prev-images-dir` is relative to `-D`, like CRIU's.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<_> = from.components().collect();
    let t: Vec<_> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut p = PathBuf::new();
    for _ in common..f.len() {
        p.push("..");
    }
    for c in &t[common..] {
        p.push(c);
    }
    p
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A pid file's content, once it holds a whole positive number.
fn read_pid(path: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    let t = text.trim();
    t.parse().ok().filter(|p: &i32| *p > 0)
}

/// `Command::spawn`, retrying ETXTBSY: a script just written by another thread
/// can be briefly held open for writing by a concurrently forked child.
pub fn spawn_retrying(cmd: &mut Command) -> std::io::Result<Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative(Path::new("/r/t/iter-2/dump"), Path::new("/r/t/iter-1/dump")),
            PathBuf::from("../../iter-1/dump")
        );
        assert_eq!(
            relative(
                Path::new("/r/t/iter-1/pre-2"),
                Path::new("/r/t/iter-1/pre-1")
            ),
            PathBuf::from("../pre-1")
        );
    }

    #[test]
    fn pidfile_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pid");
        assert_eq!(read_pid(&p), None);
        std::fs::write(&p, "").unwrap();
        assert_eq!(read_pid(&p), None);
        std::fs::write(&p, "12").unwrap();
        assert_eq!(read_pid(&p), Some(12));
        std::fs::write(&p, "4242\n").unwrap();
        assert_eq!(read_pid(&p), Some(4242));
        std::fs::write(&p, "-1\n").unwrap();
        assert_eq!(read_pid(&p), None);
    }
}
