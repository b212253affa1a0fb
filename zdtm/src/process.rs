//! Processes the harness owns: waiting with deadlines, killing whole trees,
//! reaping what gets re-parented to us.
//!
//! The harness is a child subreaper (`PR_SET_CHILD_SUBREAPER`, 3.4): a task
//! restored by `ENGINE restore -d` is forked by the engine, which then exits, so
//! the task is re-parented to us and we can wait for it like for the original.
//! We only ever wait for specific pids, never `waitpid(-1)`: trials run in
//! parallel threads and each must reap only its own processes.

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Makes this process a child subreaper, so orphans of our tests come back to us.
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Sleeps with a growing step: short waits stay fast, long ones stay cheap.
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_millis(1))
    }
}

impl Backoff {
    /// Sleeps one step (never past `deadline`) and grows the step up to 20 ms.
    pub fn sleep(&mut self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        std::thread::sleep(self.0.min(left));
        self.0 = (self.0 * 2).min(Duration::from_millis(20));
    }
}

/// Waits for a child started with `std::process::Command` until `deadline`.
/// `Ok(None)` means the deadline passed first.
pub fn wait_child(child: &mut Child, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
    let mut backoff = Backoff::default();
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        backoff.sleep(deadline);
    }
}

/// How a waited-for pid ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "killed by {sig}"),
                Err(_) => write!(f, "killed by signal {s}"),
            },
        }
    }
}

impl From<ExitStatus> for Exit {
    fn from(st: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (st.code(), st.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(s)) => Exit::Signal(s),
            (None, None) => Exit::Code(-1),
        }
    }
}

/// Waits for `pid`, a child of ours (possibly by re-parenting), until `deadline`.
/// `Ok(None)`: still running at the deadline. `Err(ECHILD)`: not our child.
pub fn wait_pid(pid: i32, deadline: Instant) -> nix::Result<Option<Exit>> {
    let mut backoff = Backoff::default();
    loop {
        match waitpid(
            Pid::from_raw(pid),
            Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
        )? {
            WaitStatus::Exited(_, code) => return Ok(Some(Exit::Code(code))),
            WaitStatus::Signaled(_, sig, _) => return Ok(Some(Exit::Signal(sig as i32))),
            _ => {}
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        backoff.sleep(deadline);
    }
}

/// Whether the stat text names a live (not zombie, not dead) task.
fn live_stat(stat: &str) -> bool {
    match stat.rfind(')') {
        Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
        None => false,
    }
}

/// Whether `pid` exists and is not a zombie. A process whose leader thread has exited while
/// other threads run on shows the leader's `Z`: it is alive while any thread is.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) if live_stat(&stat) => true,
        Ok(_) => std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                std::fs::read_to_string(e.path().join("stat")).is_ok_and(|s| live_stat(&s))
            })
        }),
        Err(_) => false,
    }
}

/// Start time of `pid` (clock ticks since boot, field 22 of `/proc/PID/stat`):
/// with the pid it identifies a process across pid reuse.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest[0] is field 3 (state), so field 22 is rest[19].
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A process identified across pid reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ident {
    pub pid: i32,
    pub start: u64,
}

impl Ident {
    /// The process now running as `pid`, if any.
    pub fn of(pid: i32) -> Option<Ident> {
        start_time(pid).map(|start| Ident { pid, start })
    }

    /// Whether `pid` still names this very process (and it is not a zombie).
    pub fn is_alive(&self) -> bool {
        start_time(self.pid) == Some(self.start) && alive(self.pid)
    }
}

/// Parent of `pid`, if it exists.
pub fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    engine::inspect::parse_stat(&stat).ok().map(|s| s.ppid)
}

/// Direct children of `pid` (all threads), from `/proc/PID/task/*/children`.
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path().join("children");
        if let Ok(text) = std::fs::read_to_string(&p) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|t| t.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// `pid` and all its descendants.
pub fn tree(pid: i32) -> BTreeSet<i32> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        if Path::new(&format!("/proc/{p}")).exists() && seen.insert(p) {
            stack.extend(children(p));
        }
    }
    seen
}

/// Stops and kills `pid` and every descendant, then reaps whatever of them is
/// (or becomes, by re-parenting) our child, waiting at most `grace`. Returns the
/// pids it killed. The tree is frozen with SIGSTOP first, re-scanning until no
/// new task appears, so a forking test cannot escape.
pub fn kill_tree(pid: i32, grace: Duration) -> BTreeSet<i32> {
    let mut all = BTreeSet::new();
    for _ in 0..50 {
        let now = tree(pid);
        let new: Vec<i32> = now.difference(&all).copied().collect();
        if new.is_empty() {
            break;
        }
        for p in &new {
            let _ = kill(Pid::from_raw(*p), Signal::SIGSTOP);
        }
        all.extend(new);
    }
    for p in &all {
        let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
    }
    reap_gone(&all, Instant::now() + grace);
    all
}

/// Waits until every pid in `pids` is gone, reaping those that are our children.
/// Returns the pids still present at the deadline.
pub fn reap_gone(pids: &BTreeSet<i32>, deadline: Instant) -> Vec<i32> {
    let mut pending: Vec<i32> = pids.iter().copied().collect();
    let mut backoff = Backoff::default();
    loop {
        pending.retain(|&p| {
            match waitpid(
                Pid::from_raw(p),
                Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
            ) {
                Ok(WaitStatus::StillAlive) => true,
                Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => false,
                Ok(_) => true,
                // Not our child (yet): gone for good, or about to be re-parented to us.
                Err(Errno::ECHILD) => Path::new(&format!("/proc/{p}")).exists(),
                Err(_) => false,
            }
        });
        if pending.is_empty() || Instant::now() >= deadline {
            return pending;
        }
        backoff.sleep(deadline);
    }
}

/// Reaps every zombie child left (orphans of tests re-parented to us). Only for
/// the end of a run, when no trial is waiting for its own children any more.
pub fn reap_orphans() {
    while let Ok(st) = waitpid(
        None::<Pid>,
        Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
    ) {
        if st == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Sends `sig` to `pid`; a vanished pid is not an error.
pub fn signal(pid: i32, sig: Signal) -> nix::Result<()> {
    match kill(Pid::from_raw(pid), sig) {
        Err(Errno::ESRCH) => Ok(()),
        r => r,
    }
}

/// The last `n` lines of a file, or a note saying why there are none.
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            if lines.is_empty() {
                return String::from("(empty)");
            }
            let start = lines.len().saturating_sub(n);
            let mut out = String::new();
            if start > 0 {
                out.push_str(&format!("[... {start} earlier lines]\n"));
            }
            out.push_str(&lines[start..].join("\n"));
            out
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::from("(not written)"),
        Err(e) => format!("(unreadable: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn kill_tree_takes_descendants() {
        become_subreaper().unwrap();
        let mut child = Command::new("sh")
            .args(["-c", "sleep 100 & sleep 100 & wait"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(5);
        while tree(pid).len() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let before = tree(pid);
        assert_eq!(before.len(), 3, "{before:?}");
        let killed = kill_tree(pid, Duration::from_secs(5));
        assert_eq!(killed, before);
        for p in &before {
            assert!(!alive(*p), "{p} still alive");
        }
        // The root was reaped by kill_tree already.
        assert!(child.try_wait().is_err() || !alive(pid));
    }

    #[test]
    fn wait_pid_times_out_then_reaps() {
        let mut child = Command::new("sleep").arg("0.3").spawn().unwrap();
        let pid = child.id() as i32;
        assert_eq!(
            wait_pid(pid, Instant::now() + Duration::from_millis(20)),
            Ok(None)
        );
        assert_eq!(
            wait_pid(pid, Instant::now() + Duration::from_secs(5)),
            Ok(Some(Exit::Code(0)))
        );
        assert_eq!(wait_pid(pid, Instant::now()), Err(Errno::ECHILD));
        // std's own wait now finds nothing to reap either.
        assert!(child.wait().is_err());
    }

    #[test]
    fn ident_survives_only_while_the_process_does() {
        let mut child = Command::new("sleep").arg("10").spawn().unwrap();
        let id = Ident::of(child.id() as i32).unwrap();
        assert!(id.is_alive());
        assert_eq!(Ident::of(child.id() as i32), Some(id));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!id.is_alive());
    }

    #[test]
    fn exit_display() {
        assert_eq!(Exit::Signal(9).to_string(), "killed by SIGKILL");
        assert_eq!(Exit::Code(3).to_string(), "exit code 3");
    }

    #[test]
    fn tail_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        assert_eq!(tail(&p, 2), "(not written)");
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&p, 2), "[... 1 earlier lines]\nb\nc");
        std::fs::write(&p, "").unwrap();
        assert_eq!(tail(&p, 2), "(empty)");
    }
}
