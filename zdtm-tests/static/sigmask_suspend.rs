//! sigmask_suspend: a task in sigsuspend(2) gets its real mask back.
//!
//! The task blocks a set of signals plus SIGTERM, then waits in
//! `rt_sigsuspend` with a temporary mask (the set without SIGTERM). While it
//! sleeps the kernel's current mask is the temporary one and the real one is
//! saved aside; whoever dumps the task sees the temporary mask, yet when
//! `sigsuspend` returns (through the SIGTERM handler) the kernel must
//! reinstate the real one. After SIGTERM the mask (via `rt_sigprocmask` and
//! `SigBlk`) must be exactly the set plus SIGTERM, as it was before the
//! call: restoring the temporary mask as the task's mask loses SIGTERM.

use zdtmtst::sig::{self, bit, rtmin};
use zdtmtst::{check_eq, fail, proc, Checker};

fn main() {
    zdtmtst::start();
    let set = sig::set_of(&[libc::SIGUSR2, libc::SIGCHLD, 33, rtmin(2), libc::SIGRTMAX()]);
    let real = set | bit(libc::SIGTERM);
    sig::set_mask(real).unwrap_or_else(|e| fail(format!("rt_sigprocmask: {e}")));

    zdtmtst::ready();
    zdtmtst::suspend_until_sigterm(set);

    let mut c = Checker::new();
    let want = format!("{real:#018x} {:?}", sig::members(real));
    if let Some(m) = c.ok("rt_sigprocmask", sig::mask()) {
        check_eq!(
            c,
            format!("{m:#018x} {:?}", sig::members(m)),
            want,
            "mask after sigsuspend returned"
        );
    }
    if let Some(m) = c.ok("reading SigBlk", proc::status_hex("SigBlk")) {
        check_eq!(
            c,
            format!("{m:#018x}"),
            format!("{real:#018x}"),
            "SigBlk after sigsuspend returned"
        );
    }
    c.finish();
}
