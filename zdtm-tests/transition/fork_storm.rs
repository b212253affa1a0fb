//! fork_storm: a process that forks and reaps short-lived children without
//! a pause keeps doing so across dumps.
//!
//! The root forks a child, waits for it, checks how it ended, and starts
//! over, all the time, also while it is being dumped: a dump may catch it
//! inside `fork`, with a child that has not run yet, is running, or has
//! exited and is waiting to be reaped. Child number `n` checks that its
//! parent is the root and then ends one of eight ways: `_exit` with
//! `n % 200 + 1`, `_exit(0)`, or death by SIGUSR2. The root checks that
//! `waitpid` returns the child it forked with exactly the status that
//! child was meant to end with.
//!
//! On SIGTERM the root notes how many children it has reaped, runs 200
//! more rounds to show forking still works after the last restore, and
//! fails if any status was unexpected, any fork or wait failed, or the
//! count did not grow after the pidfile was written.

use zdtmtst::tree::{self, Spawn};
use zdtmtst::{check, Checker};

/// Rounds run after SIGTERM.
const AFTER: u64 = 200;
/// Failures kept verbatim.
const KEEP: usize = 8;

/// The status child `n` ends with.
fn planned(n: u64) -> i32 {
    match n % 8 {
        6 => libc::SIGUSR2,
        7 => 0,
        _ => ((n % 200 + 1) as i32) << 8,
    }
}

struct Storm {
    root: i32,
    count: u64,
    failures: Vec<String>,
    failed: u64,
}

impl Storm {
    fn fail(&mut self, msg: String) {
        self.failed += 1;
        if self.failures.len() < KEEP {
            self.failures.push(msg);
        }
    }

    fn round(&mut self) {
        let n = self.count;
        let root = self.root;
        let want = planned(n);
        let child = tree::fork_then(Spawn::Fork, move || {
            if tree::getppid() != root {
                return 250;
            }
            if libc::WIFSIGNALED(want) {
                let _ = tree::kill(tree::getpid(), libc::WTERMSIG(want));
            }
            libc::WEXITSTATUS(want)
        });
        let pid = match child {
            Ok(p) => p,
            Err(e) => return self.fail(format!("fork number {n}: {e}")),
        };
        match tree::wait_pid(pid, 0) {
            Ok(st) if st == want => {}
            Ok(st) => self.fail(format!(
                "child {n} (pid {pid}): {}, expected {}",
                tree::describe_status(st),
                tree::describe_status(want)
            )),
            Err(e) => self.fail(format!("waitpid for child {n} (pid {pid}): {e}")),
        }
        self.count += 1;
    }
}

fn main() {
    zdtmtst::start();
    let mut s = Storm {
        root: tree::getpid(),
        count: 0,
        failures: Vec::new(),
        failed: 0,
    };
    while s.count < 100 {
        s.round();
    }
    let at_ready = s.count;
    zdtmtst::ready();
    while !zdtmtst::sigterm_received() {
        s.round();
    }
    let at_term = s.count;
    while s.count < at_term + AFTER {
        s.round();
    }

    let mut c = Checker::new();
    check!(
        c,
        at_term > at_ready,
        "no child was forked between the pidfile and SIGTERM ({at_ready} before, {at_term} after)"
    );
    check!(
        c,
        s.failed == 0,
        "{} of {} rounds went wrong: {}",
        s.failed,
        s.count,
        s.failures.join("; ")
    );
    let left = tree::own_children();
    check!(
        c,
        matches!(&left, Ok(k) if k.is_empty()),
        "children left after the storm: {left:?}"
    );
    c.finish();
}
