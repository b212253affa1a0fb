//! sigmask00: the blocked-signal mask survives.
//!
//! Blocks a set of standard and real-time signals, including 32 and 33
//! (which glibc hides from its own `sigprocmask`), with the raw
//! `rt_sigprocmask`, and waits in `pause()`, so the mask the engine sees is
//! the task's real one. After restore `rt_sigprocmask` and `SigBlk` in
//! `/proc/self/status` must show exactly the same set. (`sigmask_suspend`
//! covers a task waiting in `sigsuspend` with a temporary mask.)

use zdtmtst::sig::{self, rtmin};
use zdtmtst::{check_eq, fail, proc, Checker};

fn main() {
    zdtmtst::start();
    let blocked = [
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGPIPE,
        libc::SIGALRM,
        libc::SIGCHLD,
        libc::SIGWINCH,
        32,
        33,
        rtmin(0),
        rtmin(7),
        libc::SIGRTMAX() - 1,
        libc::SIGRTMAX(),
    ];
    let expected = sig::set_of(&blocked);
    sig::set_mask(expected).unwrap_or_else(|e| fail(format!("rt_sigprocmask: {e}")));
    let got = sig::mask().unwrap_or_else(|e| fail(e));
    if got != expected {
        fail(format!("mask {got:#018x} after setting {expected:#018x}"));
    }

    zdtmtst::ready();
    while !zdtmtst::sigterm_received() {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }

    let mut c = Checker::new();
    if let Some(m) = c.ok("rt_sigprocmask", sig::mask()) {
        check_eq!(
            c,
            format!("{m:#018x} {:?}", sig::members(m)),
            format!("{expected:#018x} {:?}", sig::members(expected)),
            "blocked mask"
        );
    }
    if let Some(m) = c.ok("reading SigBlk", proc::status_hex("SigBlk")) {
        check_eq!(
            c,
            format!("{m:#018x}"),
            format!("{expected:#018x}"),
            "SigBlk in /proc/self/status"
        );
    }
    c.finish();
}
