//! zombie00: unreaped children keep their exit statuses and exit signals.
//!
//! The root forks children that end in different ways and does not reap
//! them before the dump:
//!
//! - `exit3`, `exit0`, `exit255`: `_exit` with that code;
//! - `kill9`: killed by SIGKILL; `usr2`: killed by SIGUSR2 (default action,
//!   no core dump);
//! - `quiet`: created by raw `clone3` with exit signal 0 (its parent gets no
//!   signal, and only `__WCLONE`/`__WALL` waits see it), `_exit(7)`.
//!
//! and one live child, `waker`, created by `clone3` with exit signal SIGUSR1
//! and blocked in `read(2)`, while the root blocks SIGUSR1.
//!
//! After restore, for each zombie: `/proc/PID/stat` shows state Z, the
//! root as parent, the exit signal and the wait status; a wait of the wrong
//! kind (`__WCLONE` for an ordinary child, none for a clone child) does not
//! see it; `waitid(WNOWAIT)` reports the right `si_code`, `si_status` and
//! `si_pid`; `waitpid` reaps it with the exact status. Then SIGUSR1 must
//! not be pending; the waker is told to exit with 5, and SIGUSR1 must then
//! arrive, with `CLD_EXITED`, the waker's pid and status 5, exactly once;
//! the waker reaps with status 5, and no other child is left.

use std::time::Duration;

use zdtmtst::sig::{self, bit, SigInfo};
use zdtmtst::tree::{self, Spawn};
use zdtmtst::{check, check_eq, fail, Checker};

/// One child that is a zombie at dump time.
struct Zombie {
    name: &'static str,
    pid: i32,
    /// Its wait status.
    status: i32,
    exit_signal: i32,
}

impl Zombie {
    fn clone_child(&self) -> bool {
        self.exit_signal != libc::SIGCHLD
    }

    /// `si_code` and `si_status` of its `waitid` report.
    fn siginfo(&self) -> (i32, i32) {
        if libc::WIFSIGNALED(self.status) {
            (libc::CLD_KILLED, libc::WTERMSIG(self.status))
        } else {
            (libc::CLD_EXITED, libc::WEXITSTATUS(self.status))
        }
    }
}

/// `waitid(P_PID, pid, info, flags)`.
fn waitid(pid: i32, flags: libc::c_int) -> std::io::Result<SigInfo> {
    let mut info = SigInfo::default();
    loop {
        // SAFETY: `info` is a 128-byte siginfo the kernel fills in.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                (&mut info as *mut SigInfo).cast::<libc::siginfo_t>(),
                flags,
            )
        };
        if r == 0 {
            return Ok(info);
        }
        let e = zdtmtst::last_err();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

fn die_by(sig: libc::c_int) -> i32 {
    // The child inherited the root's mask: let the signal through.
    let _ = sig::unblock(bit(sig));
    let _ = tree::kill(tree::getpid(), sig);
    // Not reached for a signal whose default action ends the process.
    99
}

fn make_zombies() -> Vec<Zombie> {
    type Body = fn() -> i32;
    let plan: [(&str, Spawn, Body, i32); 6] = [
        ("exit3", Spawn::Fork, || 3, 3 << 8),
        ("exit0", Spawn::Fork, || 0, 0),
        ("exit255", Spawn::Fork, || 255, 255 << 8),
        (
            "kill9",
            Spawn::Fork,
            || die_by(libc::SIGKILL),
            libc::SIGKILL,
        ),
        ("usr2", Spawn::Fork, || die_by(libc::SIGUSR2), libc::SIGUSR2),
        (
            "quiet",
            Spawn::Clone3 {
                exit_signal: 0,
                set_tid: None,
            },
            || 7,
            7 << 8,
        ),
    ];
    plan.into_iter()
        .map(|(name, how, body, status)| {
            let pid = tree::fork_then(how, body)
                .unwrap_or_else(|e| fail(format!("creating {name}: {e}")));
            let exit_signal = match how {
                Spawn::Fork => libc::SIGCHLD,
                Spawn::Clone3 { exit_signal, .. } => exit_signal,
            };
            Zombie {
                name,
                pid,
                status,
                exit_signal,
            }
        })
        .collect()
}

/// Checks one zombie from outside and then reaps it.
fn check_zombie(c: &mut Checker, z: &Zombie, root: i32) {
    let (name, pid) = (z.name, z.pid);
    if let Some(ids) = c.ok(&format!("{name}: /proc/{pid}/stat"), tree::stat_ids(pid)) {
        check_eq!(c, ids.state, 'Z', "{name} (pid {pid}): state");
        check_eq!(c, ids.ppid, root, "{name} (pid {pid}): parent");
        check_eq!(
            c,
            ids.exit_signal,
            z.exit_signal,
            "{name} (pid {pid}): exit signal"
        );
        check!(
            c,
            ids.exit_code == z.status,
            "{name} (pid {pid}): exit code in stat: {}, expected {}",
            tree::describe_status(ids.exit_code),
            tree::describe_status(z.status)
        );
    }
    // The other kind of wait must not see it.
    let wrong = if z.clone_child() { 0 } else { libc::__WCLONE };
    let mut st = 0;
    // SAFETY: `st` is a writable int.
    let r = unsafe { libc::waitpid(pid, &mut st, wrong | libc::WNOHANG) };
    let e = zdtmtst::last_err();
    check!(
        c,
        r == -1 && e.raw_os_error() == Some(libc::ECHILD),
        "{name} (pid {pid}): waitpid with flags {wrong:#x} returned {r} ({e}), expected ECHILD for a {} child",
        if z.clone_child() { "clone" } else { "non-clone" }
    );
    let right = if z.clone_child() { libc::__WCLONE } else { 0 };
    if let Some(info) = c.ok(
        &format!("{name} (pid {pid}): waitid(WNOWAIT)"),
        waitid(pid, libc::WEXITED | libc::WNOWAIT | libc::WNOHANG | right),
    ) {
        let (code, status) = z.siginfo();
        check_eq!(
            c,
            (info.signo, info.code, info.pid, info.status()),
            (libc::SIGCHLD, code, pid, status),
            "{name}: waitid siginfo (signo, code, pid, status)"
        );
    }
    match tree::wait_pid(pid, right | libc::WNOHANG) {
        Ok(st) => check!(
            c,
            st == z.status,
            "{name} (pid {pid}): reaped with {}, expected {}",
            tree::describe_status(st),
            tree::describe_status(z.status)
        ),
        Err(e) => check!(c, false, "{name} (pid {pid}): waitpid: {e}"),
    };
}

fn main() {
    zdtmtst::start();
    let root = tree::getpid();
    if let Err(e) = sig::block(bit(libc::SIGUSR1)) {
        fail(format!("blocking SIGUSR1: {e}"));
    }
    let zombies = make_zombies();
    let mut waker = tree::member(
        "waker",
        Spawn::Clone3 {
            exit_signal: libc::SIGUSR1,
            set_tid: None,
        },
        &[],
        move |up| {
            if up.ready().is_err() {
                return 1;
            }
            match tree::serve(&up, || {
                let mut c = Checker::new();
                check_eq!(c, tree::getppid(), root, "waker: getppid");
                c
            }) {
                0 => 5,
                code => code,
            }
        },
    )
    .unwrap_or_else(|e| fail(format!("clone3 of the waker: {e}")));
    if let Err(e) = waker.await_ready(tree::ANSWER_TIMEOUT) {
        fail(tree::chain(&e));
    }
    for z in &zombies {
        match waitid(z.pid, libc::WEXITED | libc::WNOWAIT | libc::__WALL) {
            Ok(info) if (info.code, info.status()) == z.siginfo() => {}
            Ok(info) => fail(format!("{} ended unexpectedly: {info:?}", z.name)),
            Err(e) => fail(format!("waitid for {}: {e}", z.name)),
        }
    }
    if !tree::wait_in_syscall(waker.pid, libc::SYS_read, tree::ANSWER_TIMEOUT) {
        fail("the waker did not block in read(2)");
    }
    match sig::pending() {
        Ok(p) if p & bit(libc::SIGUSR1) == 0 => {}
        Ok(p) => fail(format!("SIGUSR1 pending before the waker exited: {p:#x}")),
        Err(e) => fail(format!("rt_sigpending: {e}")),
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    for z in &zombies {
        check_zombie(&mut c, z, root);
    }
    if let Some(ids) = c.ok("waker's stat", tree::stat_ids(waker.pid)) {
        check_eq!(c, ids.state, 'S', "waker (pid {}): state", waker.pid);
        check_eq!(
            c,
            ids.exit_signal,
            libc::SIGUSR1,
            "waker (pid {}): exit signal",
            waker.pid
        );
    }
    if let Some(p) = c.ok("rt_sigpending", sig::pending()) {
        check!(
            c,
            p & bit(libc::SIGUSR1) == 0,
            "SIGUSR1 pending while the waker still lives (pending {p:#x})"
        );
    }
    tree::check_all(std::slice::from_ref(&waker), &mut c);
    if let Err(e) = waker.order(tree::ORDER_EXIT) {
        c.fail(tree::chain(&e));
    }
    match sig::timedwait(bit(libc::SIGUSR1), Duration::from_secs(10)) {
        Ok(Some(info)) => {
            check_eq!(
                c,
                (info.signo, info.code, info.pid, info.status()),
                (libc::SIGUSR1, libc::CLD_EXITED, waker.pid, 5),
                "waker's exit signal siginfo (signo, code, pid, status)"
            );
        }
        Ok(None) => c.fail("no SIGUSR1 within 10 s of the waker's exit"),
        Err(e) => c.fail(format!("rt_sigtimedwait(SIGUSR1): {e}")),
    }
    match sig::timedwait(bit(libc::SIGUSR1), Duration::ZERO) {
        Ok(None) => {}
        Ok(Some(info)) => c.fail(format!("a second SIGUSR1 was pending: {info:?}")),
        Err(e) => c.fail(format!("rt_sigtimedwait(SIGUSR1): {e}")),
    }
    match tree::wait_pid(waker.pid, libc::__WCLONE) {
        Ok(st) => check!(
            c,
            st == 5 << 8,
            "waker (pid {}): {}, expected exit status 5",
            waker.pid,
            tree::describe_status(st)
        ),
        Err(e) => check!(c, false, "waitpid(waker {}, __WCLONE): {e}", waker.pid),
    };
    waker.close();
    let mut st = 0;
    // SAFETY: `st` is a writable int.
    let r = unsafe { libc::waitpid(-1, &mut st, libc::__WALL | libc::WNOHANG) };
    let e = zdtmtst::last_err();
    check!(
        c,
        r == -1 && e.raw_os_error() == Some(libc::ECHILD),
        "waitpid(-1, __WALL) after reaping everything returned {r} ({}), expected ECHILD",
        if r > 0 {
            tree::describe_status(st)
        } else {
            e.to_string()
        }
    );
    c.finish();
}
