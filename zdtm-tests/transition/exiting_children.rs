//! exiting_children: children exiting at random moments, also while the
//! tree is being dumped, are reaped with exactly the statuses they exit
//! with.
//!
//! The root keeps six children alive. Child number `n` sleeps a
//! pseudo-random 0 to 250 ms (`clock_nanosleep`, restarted with the time
//! left when a dump interrupts it), then ends with `_exit(n % 120 + 1)`,
//! or, every fifth, by SIGUSR2. The root sleeps in `waitpid(-1)`; each
//! child it reaps must be one it forked and still waits for, ended the way
//! it was planned; then a new child takes its place. A dump thus catches
//! children asleep, running, exiting, or already zombies of the frozen
//! root, and the root may itself be inside `waitpid`.
//!
//! On SIGTERM the root stops forking, reaps the children left (they all
//! end within the sleep bound), and fails on any unexpected pid or status,
//! a failed fork or wait, or a child not reaped within ten seconds (so
//! every child alive when the pidfile was written, restored by every
//! dump since, must have ended as planned).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use zdtmtst::tree::{self, Spawn};
use zdtmtst::{check, pattern, Checker};

const POOL: usize = 6;
const MAX_SLEEP_MS: u64 = 250;
const KEEP: usize = 8;

/// How child `n` ends: its wait status, and how long it sleeps first.
fn planned(n: u64) -> (i32, Duration) {
    let status = if n % 5 == 4 {
        libc::SIGUSR2
    } else {
        ((n % 120 + 1) as i32) << 8
    };
    let ms = pattern::word(n as usize, 0xe817) % (MAX_SLEEP_MS + 1);
    (status, Duration::from_millis(ms))
}

struct Pool {
    root: i32,
    next: u64,
    live: BTreeMap<i32, (u64, i32)>,
    reaped: u64,
    failures: Vec<String>,
    failed: u64,
}

impl Pool {
    fn fail(&mut self, msg: String) {
        self.failed += 1;
        if self.failures.len() < KEEP {
            self.failures.push(msg);
        }
    }

    fn spawn(&mut self) {
        let n = self.next;
        self.next += 1;
        let (status, nap) = planned(n);
        let root = self.root;
        let child = tree::fork_then(Spawn::Fork, move || {
            std::thread::sleep(nap);
            if tree::getppid() != root {
                return 250;
            }
            if libc::WIFSIGNALED(status) {
                let _ = tree::kill(tree::getpid(), libc::WTERMSIG(status));
            }
            libc::WEXITSTATUS(status)
        });
        match child {
            Ok(pid) => {
                self.live.insert(pid, (n, status));
            }
            Err(e) => self.fail(format!("fork of child {n}: {e}")),
        }
    }

    /// One `waitpid(-1)`; false when it was interrupted.
    fn reap_one(&mut self) -> bool {
        let mut st = 0;
        // SAFETY: `st` is a writable int.
        let pid = unsafe { libc::waitpid(-1, &mut st, 0) };
        if pid < 0 {
            let e = zdtmtst::last_err();
            if e.raw_os_error() != Some(libc::EINTR) {
                self.fail(format!("waitpid(-1): {e}"));
                std::thread::sleep(Duration::from_millis(10));
            }
            return false;
        }
        match self.live.remove(&pid) {
            Some((_, want)) if want == st => self.reaped += 1,
            Some((n, want)) => self.fail(format!(
                "child {n} (pid {pid}): {}, expected {}",
                tree::describe_status(st),
                tree::describe_status(want)
            )),
            None => self.fail(format!(
                "reaped pid {pid} ({}), which is not a child still expected",
                tree::describe_status(st)
            )),
        }
        true
    }
}

fn main() {
    // No SA_RESTART: SIGTERM ends a waitpid in progress.
    zdtmtst::start_with(0);
    let mut p = Pool {
        root: tree::getpid(),
        next: 0,
        live: BTreeMap::new(),
        reaped: 0,
        failures: Vec::new(),
        failed: 0,
    };
    while p.live.len() < POOL {
        p.spawn();
    }
    let at_ready = p.reaped;
    zdtmtst::ready();
    while !zdtmtst::sigterm_received() {
        if p.reap_one() && !zdtmtst::sigterm_received() {
            p.spawn();
        }
    }
    let at_term = p.reaped;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.live.is_empty() && Instant::now() < deadline {
        p.reap_one();
    }

    let mut c = Checker::new();
    // Every child alive at the pidfile went through the dumps and must
    // have been reaped since, with its planned status.
    check!(
        c,
        p.reaped >= at_ready + POOL as u64,
        "only {} children reaped after the pidfile ({} by SIGTERM), expected at least the {POOL} alive then",
        p.reaped - at_ready,
        at_term - at_ready
    );
    check!(
        c,
        p.failed == 0,
        "{} failures among {} children: {}",
        p.failed,
        p.next,
        p.failures.join("; ")
    );
    check!(c, p.live.is_empty(), "children never reaped: {:?}", p.live);
    c.finish();
}
