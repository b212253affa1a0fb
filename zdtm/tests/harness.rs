//! The harness's own tests: the trial state machine driven by a fake engine (a
//! shell script written at test time that implements just enough of the engine
//! command line) on `zdtm-selftest`, a protocol program that misbehaves on demand.
//! Every way a test or an engine can go wrong must come out as a failure at the
//! right step, leave no process behind, and keep what is needed to debug it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use zdtm::descriptor::{Descriptor, Flavor};
use zdtm::discover::{Program, TestCase};
use zdtm::driver::Driver;
use zdtm::trial::{run_trial, KeepImg, RunConfig, Step, TrialResult, Verdict};

const SELFTEST: &str = env!("CARGO_BIN_EXE_zdtm-selftest");
const LAUNCHER: &str = env!("CARGO_BIN_EXE_cargo-zdtm");

/// Trials that recreate a pid through ns_last_pid must not race each other.
static PID_GAME: Mutex<()> = Mutex::new(());

/// How the fake engine's dump behaves.
#[derive(Clone, Copy)]
enum Dump {
    /// Succeeds; kills the task unless --leave-running; saves what `Restore::Exec` needs.
    Ok,
    /// Fails, task untouched.
    Fail,
    /// Fails after killing the task.
    FailKilling,
    /// Never returns.
    Hang,
    /// Claims success but leaves the task running without --leave-running.
    NoKill,
    /// Succeeds but leaves a blocked SIGUSR1 pending in the task.
    Perturb,
}

/// How the fake engine's restore behaves.
#[derive(Clone, Copy)]
enum Restore {
    Fail,
    /// Starts something else and reports its pid.
    WrongPid,
    /// Execs the saved command line again under the saved pid (ns_last_pid).
    Exec,
}

struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new(dump: Dump, restore: Restore, features: &[&str]) -> Fake {
        Self::named("engine", dump, restore, features)
    }

    fn named(name: &str, dump: Dump, restore: Restore, features: &[&str]) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls");
        let dump_body = match dump {
            Dump::Ok => r#"save; [ -n "$leave" ] || kill -9 "$pid"; exit 0"#,
            Dump::Fail => r#"echo "fake: dump failed on purpose" >&2; exit 1"#,
            Dump::FailKilling => {
                r#"kill -9 "$pid"; echo "fake: dump failed and killed" >&2; exit 1"#
            }
            Dump::Hang => "sleep 1000; exit 0",
            Dump::NoKill => "exit 0",
            Dump::Perturb => r#"kill -USR1 "$pid"; exit 0"#,
        };
        let restore_body = match restore {
            Restore::Fail => r#"echo "fake: restore failed on purpose" >&2; exit 1"#,
            Restore::WrongPid => {
                r#"sleep 60 </dev/null >/dev/null 2>&1 & echo $! > "$pidfile"; exit 0"#
            }
            Restore::Exec => {
                r#"want=$(cat "$dir/pid"); cd "$(cat "$dir/cwd")"
exe=$(cat "$dir/exe"); in=$(cat "$dir/fd0"); out=$(cat "$dir/fd1"); err=$(cat "$dir/fd2")
mapfile -d '' argv < "$dir/cmdline"
for try in $(seq 100); do
  echo $((want - 1)) > /proc/sys/kernel/ns_last_pid
  # A background job of a script ignores SIGINT and SIGQUIT; the original did not.
  setsid env --default-signal=INT,QUIT "${argv[@]}" <"$in" >"$out" 2>"$err" &
  got=$!
  if [ "$got" = "$want" ]; then
    # Like a real restore, return only once the task runs the program again.
    for i in $(seq 500); do
      [ "$(readlink /proc/$got/exe)" = "$exe" ] && grep -q '^State:.*sleeping' /proc/$got/status && break
      sleep 0.01
    done
    echo "$got" > "$pidfile"; exit 0
  fi
  kill -9 "$got"; wait "$got" 2>/dev/null
done
echo "fake: could not get pid $want back" >&2; exit 1"#
            }
        };
        let script = format!(
            r#"#!/bin/bash
echo "$* CRUST_FAULT=${{CRUST_FAULT-}}" >> {calls}
# Like a real engine, hand the test nothing of what this script inherited.
for fd in /proc/$$/fd/*; do
  fd=${{fd##*/}}
  [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null
done
cmd=$1; shift
pid= dir= log= leave= pidfile=
while [ $# -gt 0 ]; do
  case "$1" in
    -t) pid=$2; shift;;
    -D) dir=$2; shift;;
    -o) log=$2; shift;;
    --pidfile) pidfile=$2; shift;;
    --leave-running) leave=1;;
    --feature) feature=$2; shift;;
  esac
  shift
done
save() {{
  echo "$pid" > "$dir/pid"
  readlink "/proc/$pid/cwd" > "$dir/cwd"
  readlink "/proc/$pid/exe" > "$dir/exe"
  cp "/proc/$pid/cmdline" "$dir/cmdline"
  for f in 0 1 2; do readlink "/proc/$pid/fd/$f" > "$dir/fd$f"; done
}}
case "$cmd" in
  check)
    for f in {features}; do [ "$f" = "$feature" ] && exit 0; done
    exit 1;;
  dump|pre-dump)
    [ "$cmd" = pre-dump ] && leave=1
    [ -n "$log" ] && echo "fake $cmd of $pid" > "$dir/$log"
    {dump_body};;
  page-server|lazy-pages)
    [ -n "$log" ] && echo "fake $cmd" > "$dir/$log"
    sleep 0.3 </dev/null >/dev/null 2>&1 &
    echo $! > "$pidfile"; exit 0;;
  restore)
    [ -n "$log" ] && echo "fake restore" > "$dir/$log"
    {restore_body};;
esac
exit 1
"#,
            calls = calls.display(),
            features = features.join(" "),
        );
        let path = dir.path().join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Fake { dir }
    }

    fn path(&self) -> PathBuf {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().unwrap() != "calls")
            .unwrap()
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("calls")).unwrap_or_default()
    }
}

struct Setup {
    /// Owns the results directory for the trials of a test.
    _results: tempfile::TempDir,
    cfg: RunConfig,
}

fn setup(fake: &Fake, tweak: impl FnOnce(&mut RunConfig)) -> Setup {
    zdtm::process::become_subreaper().unwrap();
    let results = tempfile::tempdir().unwrap();
    let mut cfg = RunConfig {
        driver: Driver::new(fake.path(), false, None),
        launcher: LAUNCHER.into(),
        bin_dir: PathBuf::from("/nonexistent"),
        results_dir: results.path().to_path_buf(),
        iters: 1,
        norst: false,
        pre: 0,
        snaps: false,
        page_server: false,
        lazy_pages: false,
        require_all: false,
        keep_img: KeepImg::Failed,
        is_root: true,
    };
    tweak(&mut cfg);
    Setup {
        _results: results,
        cfg,
    }
}

fn selftest(yaml: &str) -> TestCase {
    let text = format!("description: selftest\ngroup: misc\nexec: {SELFTEST}\n{yaml}");
    let descriptor = Descriptor::parse(Path::new("selftest.yaml"), &text).unwrap();
    TestCase {
        name: "static/selftest".into(),
        stem: "selftest".into(),
        program: Program::Exec(descriptor.exec.clone().unwrap()),
        descriptor,
        descriptor_path: None,
    }
}

fn run(s: &Setup, yaml: &str, flavor: Flavor) -> TrialResult {
    run_trial(&s.cfg, &selftest(yaml), flavor)
}

/// The step and reason of a failed trial (panics with the report otherwise).
fn failed(r: &TrialResult) -> (Step, String) {
    match &r.verdict {
        Verdict::Failed(f) => (f.step, f.reason.clone()),
        other => panic!(
            "{}: expected a failure, got {other:?}\n{}",
            r.name, r.report
        ),
    }
}

fn assert_passed(r: &TrialResult) {
    assert!(
        matches!(r.verdict, Verdict::Passed),
        "{}: {:?}\n{}",
        r.name,
        r.verdict,
        r.report
    );
}

/// The test's root pid, from the "before" inspection.
fn root_pid(r: &TrialResult) -> i32 {
    let json = std::fs::read_to_string(r.dir.join("inspect-before.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["root"].as_i64().unwrap() as i32
}

fn assert_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while zdtm::process::alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!zdtm::process::alive(pid), "pid {pid} survived the trial");
}

#[test]
fn norst_pass_dumps_with_leave_running() {
    let fake = Fake::new(Dump::Ok, Restore::Fail, &[]);
    let s = setup(&fake, |c| {
        c.norst = true;
        c.iters = 2;
    });
    let r = run(&s, "", Flavor::Host);
    assert_passed(&r);
    let calls = fake.calls();
    assert_eq!(calls.matches("dump -t").count(), 2, "{calls}");
    assert!(calls.contains("-o dump.log -v4 --leave-running"), "{calls}");
    assert!(!calls.contains("restore"), "{calls}");
    assert_eq!(
        std::fs::read_to_string(r.dir.join("verdict.txt")).unwrap(),
        "PASS\n"
    );
    assert_eq!(
        std::fs::read_to_string(r.dir.join("test.out")).unwrap(),
        "PASS\n"
    );
    // Logs moved beside the image directories; images of a passed trial dropped.
    assert!(r.dir.join("iter-2/dump.log").exists());
    assert!(!r.dir.join("iter-2/dump").exists());
    assert_gone(root_pid(&r));
}

#[test]
fn fail_verdict_is_a_failure_with_the_outfile() {
    let fake = Fake::new(Dump::Ok, Restore::Fail, &[]);
    let s = setup(&fake, |c| c.norst = true);
    let r = run(&s, "args: [--mode=fail]", Flavor::Host);
    let (step, reason) = failed(&r);
    assert_eq!(step, Step::Verdict);
    assert!(reason.contains("FAIL: asked to fail"), "{reason}");
    assert!(
        r.report.contains("test outfile: FAIL: asked to fail"),
        "{}",
        r.report
    );
    assert!(
        r.report.contains("FAILED at step `verdict`"),
        "{}",
        r.report
    );
    // Images of a failed trial are kept.
    assert!(r.dir.join("iter-1/dump").is_dir());
}

#[test]
fn pass_with_a_bad_exit_code_fails() {
    let fake = Fake::new(Dump::Ok, Restore::Fail, &[]);
    let s = setup(&fake, |c| c.norst = true);
    let (step, reason) = failed(&run(&s, "args: [--mode=wrong-exit]", Flavor::Host));
    assert_eq!(step, Step::Verdict);
    assert!(reason.contains("exit code 2"), "{reason}");
    let (step, reason) = failed(&run(&s, "args: [--mode=no-outfile]", Flavor::Host));
    assert_eq!(step, Step::Verdict);
    assert!(reason.contains("no outfile"), "{reason}");
}

#[test]
fn missing_pidfile_times_out_at_start() {
    let fake = Fake::new(Dump::Ok, Restore::Fail, &[]);
    let s = setup(&fake, |_| {});
    let started = Instant::now();
    let r = run(
        &s,
        "args: [--mode=no-pidfile, --children=2]\ntimeout: 1",
        Flavor::Host,
    );
    let (step, reason) = failed(&r);
    assert_eq!(step, Step::Start);
    assert!(reason.contains("timed out after 1s"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        fake.calls().is_empty(),
        "no engine call expected: {}",
        fake.calls()
    );
}

#[test]
fn early_death_reports_stderr() {
    let fake = Fake::new(Dump::Ok, Restore::Fail, &[]);
    let s = setup(&fake, |_| {});
    let r = run(&s, "args: [--mode=die-early]", Flavor::Host);
    let (step, reason) = failed(&r);
    assert_eq!(step, Step::Start);
    assert!(
        reason.contains("exit code 3") && reason.contains("before writing its pidfile"),
        "{reason}"
    );
    assert!(
        r.report.contains("dying before ready, as asked"),
        "{}",
        r.report
    );
}

#[test]
fn pidfile_must_name_the_test() {
    let fake = Fake::new(Dump::Ok, Restore::Fail, &[]);
    let s = setup(&fake, |_| {});
    let (step, reason) = failed(&run(&s, "args: [--mode=pidfile-lie]", Flavor::Host));
    assert_eq!(step, Step::Start);
    assert!(reason.contains("must not fork away"), "{reason}");
}

#[test]
fn missing_program_says_where_it_looked() {
    let fake = Fake::new(Dump::Ok, Restore::Fail, &[]);
    let s = setup(&fake, |_| {});
    let mut t = selftest("");
    t.program = Program::Bin("no_such_test".into());
    let r = run_trial(&s.cfg, &t, Flavor::Host);
    let (step, reason) = failed(&r);
    assert_eq!(step, Step::Start);
    assert!(
        reason.contains("/nonexistent/no_such_test not found"),
        "{reason}"
    );
    assert!(reason.contains("[[bin]]"), "{reason}");
}

#[test]
fn ignoring_sigterm_times_out_at_verdict_and_the_tree_is_killed() {
    let fake = Fake::new(Dump::Ok, Restore::Fail, &[]);
    let s = setup(&fake, |c| c.norst = true);
    let r = run(
        &s,
        "args: [--mode=ignore-term, --children=2]\ntimeout: 2",
        Flavor::Host,
    );
    let (step, reason) = failed(&r);
    assert_eq!(step, Step::Verdict);
    assert!(
        reason.contains("timed out") && reason.contains("SIGTERM"),
        "{reason}"
    );
    let json = std::fs::read_to_string(r.dir.join("inspect-before.json")).unwrap();
    let tree: engine::inspect::TreeState = serde_json::from_str(&json).unwrap();
    assert_eq!(tree.tasks.len(), 3, "root and two children");
    for t in &tree.tasks {
        assert_gone(t.pid);
    }
}

#[test]
fn dump_failure_reports_the_command_and_its_output() {
    let fake = Fake::new(Dump::Fail, Restore::Fail, &[]);
    let s = setup(&fake, |_| {});
    let r = run(&s, "", Flavor::Host);
    let (step, _) = failed(&r);
    assert_eq!(step, Step::Dump);
    let pid = root_pid(&r);
    assert!(
        r.report.contains(&format!("dump -t {pid} -D ")),
        "{}",
        r.report
    );
    assert!(r.report.contains("status: exit code 1"), "{}", r.report);
    assert!(
        r.report.contains("fake: dump failed on purpose"),
        "{}",
        r.report
    );
    assert!(
        r.report.contains("fake dump of"),
        "engine log: {}",
        r.report
    );
    assert!(r.report.contains("(iteration 1 of 1)"), "{}", r.report);
    assert_gone(pid);
}

#[test]
fn expected_dump_failure_passes_under_crfail_and_fault() {
    let fake = Fake::new(Dump::Fail, Restore::Fail, &[]);
    let s = setup(&fake, |_| {});
    let r = run(&s, "flags: [crfail]", Flavor::Host);
    assert_passed(&r);
    assert!(
        r.notes.iter().any(|n| n.contains("expected (crfail)")),
        "{:?}",
        r.notes
    );

    let fake = Fake::new(Dump::Fail, Restore::Fail, &[]);
    let s = setup(&fake, |c| {
        c.driver = Driver::new(fake.path(), false, Some("dump-late".into()))
    });
    let r = run(&s, "", Flavor::Host);
    assert_passed(&r);
    let calls = fake.calls();
    assert!(calls.lines().any(|l| l.starts_with("dump")), "{calls}");
    assert!(
        calls
            .lines()
            .filter(|l| l.starts_with("dump"))
            .all(|l| l.ends_with("CRUST_FAULT=dump-late")),
        "{calls}"
    );
}

#[test]
fn failed_dump_must_leave_the_task_running() {
    let fake = Fake::new(Dump::FailKilling, Restore::Fail, &[]);
    let s = setup(&fake, |c| {
        c.driver = Driver::new(fake.path(), false, Some("x".into()))
    });
    let (step, reason) = failed(&run(&s, "", Flavor::Host));
    assert_eq!(step, Step::Dump);
    assert!(reason.contains("did not survive"), "{reason}");
}

#[test]
fn crfail_that_succeeds_fails() {
    let fake = Fake::new(Dump::Ok, Restore::Fail, &[]);
    let s = setup(&fake, |c| c.norst = true);
    let (step, reason) = failed(&run(&s, "flags: [crfail]", Flavor::Host));
    assert_eq!(step, Step::Verdict);
    assert!(reason.contains("expected to fail"), "{reason}");
}

#[test]
fn hanging_dump_is_killed_at_the_deadline() {
    let fake = Fake::new(Dump::Hang, Restore::Fail, &[]);
    let s = setup(&fake, |_| {});
    let started = Instant::now();
    let r = run(&s, "timeout: 2", Flavor::Host);
    let (step, reason) = failed(&r);
    assert_eq!(step, Step::Dump);
    assert!(reason.contains("timed out after 2s"), "{reason}");
    assert!(
        r.report.contains("killed at the trial deadline"),
        "{}",
        r.report
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_gone(root_pid(&r));
}

#[test]
fn dump_that_does_not_kill_is_caught() {
    let fake = Fake::new(Dump::NoKill, Restore::Fail, &[]);
    let s = setup(&fake, |_| {});
    let r = run(&s, "timeout: 2", Flavor::Host);
    let (step, reason) = failed(&r);
    assert_eq!(step, Step::Dump);
    assert!(reason.contains("did not exit"), "{reason}");
    assert_gone(root_pid(&r));
}

#[test]
fn restore_failure_and_wrong_pid() {
    let fake = Fake::new(Dump::Ok, Restore::Fail, &[]);
    let s = setup(&fake, |_| {});
    let r = run(&s, "", Flavor::Host);
    let (step, _) = failed(&r);
    assert_eq!(step, Step::Restore);
    assert!(
        r.report.contains("fake: restore failed on purpose"),
        "{}",
        r.report
    );
    assert!(r.report.contains("restore -D "), "{}", r.report);
    assert!(r.report.contains(" -d --pidfile "), "{}", r.report);

    // A crfail test whose restore fails passes.
    assert_passed(&run(&s, "flags: [crfail]", Flavor::Host));

    let fake = Fake::new(Dump::Ok, Restore::WrongPid, &[]);
    let s = setup(&fake, |_| {});
    let r = run(&s, "", Flavor::Host);
    let (step, reason) = failed(&r);
    assert_eq!(step, Step::Restore);
    assert!(reason.contains("differs from the original pid"), "{reason}");
    let impostor: i32 = reason
        .split_whitespace()
        .nth(2)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{reason}"));
    assert_gone(impostor);
}

#[test]
fn full_cycle_through_a_restore() {
    let _game = PID_GAME.lock().unwrap_or_else(|e| e.into_inner());
    let fake = Fake::new(Dump::Ok, Restore::Exec, &[]);
    let s = setup(&fake, |c| c.iters = 2);
    // A re-executed program has a new address-space layout; everything else must match.
    let r = run(
        &s,
        "allow_diff: [{field: vmas, reason: re-executed by the fake engine}]",
        Flavor::Host,
    );
    assert_passed(&r);
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("re-executed by the fake engine")),
        "{:?}",
        r.notes
    );
    assert!(r.dir.join("inspect-after-2.json").exists());
    let calls = fake.calls();
    assert_eq!(calls.matches("restore -D").count(), 2, "{calls}");

    // Without the allowance the compare step reports the differing VMAs.
    let r = run(&s, "", Flavor::Host);
    let (step, reason) = failed(&r);
    assert_eq!(step, Step::Compare);
    assert!(reason.contains("[vmas"), "{reason}");
    assert!(reason.contains("pid "), "{reason}");
    assert_gone(root_pid(&r));
}

#[test]
fn output_written_between_inspections_is_not_a_difference() {
    let fake = Fake::new(Dump::Ok, Restore::Fail, &[]);
    let s = setup(&fake, |c| {
        c.norst = true;
        c.iters = 3;
    });
    let r = run(&s, "args: [--chatter]", Flavor::Host);
    assert_passed(&r);
    let out = std::fs::read_to_string(r.dir.join("test.stdout")).unwrap();
    assert!(out.contains("chatter on stdout"), "{out}");
}

#[test]
fn snapshots_leave_running_then_dump_for_real() {
    let _game = PID_GAME.lock().unwrap_or_else(|e| e.into_inner());
    let fake = Fake::new(Dump::Ok, Restore::Exec, &["snapshots"]);
    let s = setup(&fake, |c| {
        c.snaps = true;
        c.iters = 3;
    });
    let r = run(
        &s,
        "allow_diff: [{field: vmas, reason: re-executed by the fake engine}]",
        Flavor::Host,
    );
    assert_passed(&r);
    let calls = fake.calls();
    let lines: Vec<&str> = calls.lines().filter(|l| !l.starts_with("check")).collect();
    assert_eq!(lines.len(), 4, "{calls}");
    assert!(
        lines[0].contains("--leave-running --track-mem") && !lines[0].contains("prev"),
        "{calls}"
    );
    assert!(
        lines[1].contains("--leave-running --track-mem --prev-images-dir ../../iter-1/dump"),
        "{calls}"
    );
    assert!(!lines[2].contains("--leave-running"), "{calls}");
    assert!(
        lines[2].contains("--track-mem --prev-images-dir ../../iter-2/dump"),
        "{calls}"
    );
    assert!(
        lines[3].starts_with("restore -D") && lines[3].contains("iter-3/dump"),
        "{calls}"
    );
}

#[test]
fn compare_catches_a_perturbed_task() {
    let fake = Fake::new(Dump::Perturb, Restore::Fail, &[]);
    let s = setup(&fake, |c| c.norst = true);
    let (step, reason) = failed(&run(&s, "", Flavor::Host));
    assert_eq!(step, Step::Compare);
    assert!(reason.contains("[signals.pending]"), "{reason}");
    assert!(
        reason.contains("ShdPnd 0000000000000000 -> 0000000000000200"),
        "{reason}"
    );
    // ...unless the descriptor allows it.
    let r = run(
        &s,
        "allow_diff: [{field: signals.pending, reason: the engine pokes it}]",
        Flavor::Host,
    );
    assert_passed(&r);
}

#[test]
fn features_ignore_or_fail_under_require_all() {
    let fake = Fake::new(Dump::Ok, Restore::Fail, &["memfd"]);
    let s = setup(&fake, |c| c.norst = true);
    assert_passed(&run(&s, "features: [memfd]", Flavor::Host));
    let r = run(&s, "features: [memfd, timerfd]", Flavor::Host);
    assert!(
        matches!(&r.verdict, Verdict::Ignored(reason) if reason == "engine lacks timerfd"),
        "{:?}",
        r.verdict
    );
    let r = run(&s, "", Flavor::Ns);
    assert!(
        matches!(&r.verdict, Verdict::Ignored(reason) if reason == "engine lacks ns-flavor"),
        "{:?}",
        r.verdict
    );
    let s = setup(&fake, |c| {
        c.norst = true;
        c.pre = 1;
    });
    let r = run(&s, "", Flavor::Host);
    assert!(
        matches!(&r.verdict, Verdict::Ignored(reason) if reason == "engine lacks pre-dump"),
        "{:?}",
        r.verdict
    );
    let s = setup(&fake, |c| {
        c.norst = true;
        c.require_all = true;
    });
    let (step, reason) = failed(&run(&s, "features: [timerfd]", Flavor::Host));
    assert_eq!(step, Step::Start);
    assert!(
        reason.contains("engine lacks timerfd (--require-all)"),
        "{reason}"
    );
    let r = run(&s, "flags: [reqrst]", Flavor::Host);
    assert!(matches!(&r.verdict, Verdict::Ignored(reason) if reason.contains("--norst")));
    let s = setup(&fake, |c| {
        c.norst = true;
        c.is_root = false;
    });
    let r = run(&s, "flags: [suid]", Flavor::Host);
    assert!(matches!(&r.verdict, Verdict::Ignored(reason) if reason.contains("root")));
}

#[test]
fn pre_dumps_chain_into_the_dump() {
    let fake = Fake::new(Dump::Ok, Restore::Fail, &["pre-dump"]);
    let s = setup(&fake, |c| {
        c.norst = true;
        c.pre = 2;
    });
    assert_passed(&run(&s, "", Flavor::Host));
    let calls = fake.calls();
    let lines: Vec<&str> = calls.lines().filter(|l| !l.starts_with("check")).collect();
    assert_eq!(lines.len(), 3, "{calls}");
    assert!(lines[0].starts_with("pre-dump") && !lines[0].contains("--prev-images-dir"));
    assert!(
        lines[1].contains("--track-mem --prev-images-dir ../pre-1"),
        "{calls}"
    );
    assert!(
        lines[2].starts_with("dump") && lines[2].contains("--prev-images-dir ../pre-2"),
        "{calls}"
    );
}

#[test]
fn page_server_daemon_serves_the_dump() {
    let fake = Fake::new(Dump::Ok, Restore::Fail, &["page-server"]);
    let s = setup(&fake, |c| {
        c.norst = true;
        c.page_server = true;
    });
    let r = run(&s, "", Flavor::Host);
    assert_passed(&r);
    let calls = fake.calls();
    let ps = calls
        .lines()
        .find(|l| l.starts_with("page-server"))
        .unwrap_or_else(|| panic!("{calls}"));
    assert!(ps.contains("--daemon --pidfile"), "{calls}");
    let port = ps
        .split("--port ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let dump = calls.lines().find(|l| l.starts_with("dump")).unwrap();
    assert!(
        dump.contains(&format!("--page-server --address 127.0.0.1 --port {port}")),
        "{calls}"
    );
    assert!(r.dir.join("iter-1/page-server.log").exists());
}

#[test]
fn namespace_flavors_run_the_test_as_init() {
    let fake = Fake::new(Dump::Ok, Restore::Fail, &["ns-flavor", "uns-flavor"]);
    let s = setup(&fake, |c| c.norst = true);
    for flavor in [Flavor::Ns, Flavor::Uns] {
        let r = run(&s, "", flavor);
        assert_passed(&r);
        let json = std::fs::read_to_string(r.dir.join("inspect-before.json")).unwrap();
        let tree: engine::inspect::TreeState = serde_json::from_str(&json).unwrap();
        let pid = tree.root;
        assert_ne!(pid, 1);
        let calls = fake.calls();
        assert!(calls.contains(&format!("dump -t {pid} ")), "{calls}");
        assert_eq!(tree.tasks[0].sid, pid, "the init leads its session");
        assert_gone(pid);
    }
}

#[test]
fn namespace_init_that_never_gets_ready_is_killed() {
    let fake = Fake::new(Dump::Ok, Restore::Fail, &["ns-flavor"]);
    let s = setup(&fake, |c| c.norst = true);
    let r = run(&s, "args: [--mode=no-pidfile]\ntimeout: 1", Flavor::Ns);
    let (step, _) = failed(&r);
    assert_eq!(step, Step::Start);
}

#[test]
fn roundtrip_check_runs_for_crust_images() {
    // A fake engine called `crust` gets its images checked; the fake writes a
    // `pid` file and others that are no images.
    let fake = Fake::named("crust", Dump::Ok, Restore::Fail, &[]);
    let s = setup(&fake, |c| {
        c.norst = true;
        c.driver = Driver::new(fake.path(), true, None);
    });
    let (step, reason) = failed(&run(&s, "", Flavor::Host));
    assert_eq!(step, Step::Dump);
    assert!(reason.contains("image round-trip check"), "{reason}");
}

/// The whole front end, as a user runs it: discovery, a broken descriptor,
/// exclusive scheduling, libtest output, the summary, JUnit and the exit code.
#[test]
fn front_end_end_to_end() {
    let fake = Fake::new(Dump::Ok, Restore::Fail, &[]);
    let tests = tempfile::tempdir().unwrap();
    let stat = tests.path().join("static");
    std::fs::create_dir(&stat).unwrap();
    let desc = |name: &str, extra: &str| {
        std::fs::write(
            stat.join(format!("{name}.yaml")),
            format!("description: {name}\ngroup: signals\nexec: {SELFTEST}\nflavors: [h]\n{extra}"),
        )
        .unwrap();
    };
    desc("good", "");
    desc("alone", "flags: [excl]");
    desc("bad", "flagz: [excl]");
    desc("hidden", "flags: [noauto]");
    desc("failing", "args: [--mode=fail]");
    let results = tempfile::tempdir().unwrap();
    let junit = results.path().join("junit.xml");
    let base = |extra: &[&str]| {
        let mut c = std::process::Command::new(LAUNCHER);
        c.arg("run")
            .arg("--tests-dir")
            .arg(tests.path())
            .arg("--engine")
            .arg(fake.path())
            .arg("--results-dir")
            .arg(results.path())
            .args([
                "--bin-dir",
                "/nonexistent",
                "--no-build",
                "--norst",
                "--color",
                "never",
            ])
            .args(extra);
        c.output().unwrap()
    };

    let out = base(&["--list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{list}");
    for t in [
        "static/good/h",
        "static/alone/h",
        "static/bad",
        "static/hidden/h",
    ] {
        assert!(list.contains(&format!("{t}: test")), "{t} not in {list}");
    }

    let out = base(&["-j", "2", "--junit", junit.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(101), "{stdout}");
    let line = |name: &str| -> String {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("test {name} ")))
            .unwrap_or_else(|| panic!("no line for {name} in {stdout}"))
            .to_string()
    };
    assert!(line("static/good/h").ends_with("... ok"), "{stdout}");
    assert!(line("static/alone/h").ends_with("... ok"), "{stdout}");
    assert!(line("static/hidden/h").ends_with("... ignored"), "{stdout}");
    assert!(line("static/bad").ends_with("... FAILED"), "{stdout}");
    assert!(line("static/failing/h").ends_with("... FAILED"), "{stdout}");
    assert!(
        stdout.contains("unknown key `flagz` (did you mean `flags`?"),
        "{stdout}"
    );
    assert!(stdout.contains("FAILED at step `verdict`"), "{stdout}");
    assert!(
        stdout.contains("signals            2       1        0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("misc               0       1        0"),
        "{stdout}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"4\" failures=\"2\""), "{xml}");

    // Named exactly, a noauto test runs; filters select.
    let out = base(&["static/hidden"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("test static/hidden/h ... ok"), "{stdout}");
    assert!(!stdout.contains("static/good"), "{stdout}");
    assert!(stdout.contains("1 passed"), "{stdout}");
}
