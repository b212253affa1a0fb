//! sig_ign: ignored signals stay ignored.
//!
//! Sets `SIG_IGN` for several signals whose default action would kill the
//! process (SIGHUP, SIGINT, SIGUSR1, SIGUSR2, SIGALRM, SIGPIPE, SIGRTMIN+5,
//! SIGRTMAX) and for SIGCHLD. After restore `rt_sigaction` must report
//! `SIG_IGN` for exactly those, the other signals must not be ignored
//! (`SigIgn` of `/proc/self/status` matches exactly), and sending each
//! ignored signal to self must do nothing: no death, nothing pending.

use zdtmtst::sig::{self, bit, rtmin};
use zdtmtst::{check, check_eq, fail, proc, Checker};

fn main() {
    zdtmtst::start();
    let ignored = [
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGPIPE,
        libc::SIGCHLD,
        rtmin(5),
        libc::SIGRTMAX(),
    ];
    for s in ignored {
        sig::set_action(s, libc::SIG_IGN, 0, 0)
            .unwrap_or_else(|e| fail(format!("sigaction({s}, SIG_IGN): {e}")));
    }
    let expected = sig::set_of(&ignored);
    let before = proc::status_hex("SigIgn").unwrap_or_else(|e| fail(e));
    if before & expected != expected {
        fail(format!(
            "SigIgn {before:#018x} lacks {expected:#018x} after setup"
        ));
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(now) = c.ok("reading SigIgn", proc::status_hex("SigIgn")) {
        check_eq!(
            c,
            format!("{now:#018x}"),
            format!("{before:#018x}"),
            "SigIgn"
        );
    }
    let mut all_ignored = true;
    for s in 1..=64 {
        if s == libc::SIGKILL || s == libc::SIGSTOP {
            continue;
        }
        let Some(a) = c.ok(&format!("rt_sigaction({s})"), sig::get_action(s)) else {
            all_ignored = false;
            continue;
        };
        let want_ign = expected & bit(s) != 0;
        if want_ign {
            all_ignored &= check_eq!(c, a.handler, libc::SIG_IGN, "signal {s}: handler");
        } else if before & bit(s) == 0 {
            check!(c, a.handler != libc::SIG_IGN, "signal {s} became ignored");
        }
    }
    // Only send the signals if they are really ignored: a default
    // disposition would kill the process instead of reporting.
    if all_ignored {
        for s in ignored {
            // SAFETY: raise has no memory-safety preconditions; the signal is
            // ignored (checked above).
            if unsafe { libc::raise(s) } != 0 {
                c.fail(format!("raise({s}): {}", zdtmtst::last_err()));
            }
        }
        if let Some(p) = c.ok("rt_sigpending", sig::pending()) {
            check_eq!(c, p & expected, 0, "pending ignored signals");
        }
    }
    c.finish();
}
