//! sigaction00: signal dispositions survive, and still work.
//!
//! Installs handlers with various combinations of `SA_SIGINFO`,
//! `SA_RESTART`, `SA_NODEFER`, `SA_RESETHAND`, `SA_ONSTACK`,
//! `SA_NOCLDSTOP` and `sa_mask` sets, and `SIG_IGN` with flags. Before the
//! dump it records the kernel's view (`rt_sigaction`: handler, flags,
//! restorer, mask) of every signal 1..=64 but SIGKILL and SIGSTOP. After
//! restore every field of every signal must be identical. Then some signals
//! are sent to self and the handlers must run with the right siginfo
//! (`si_code`, `si_value`, `si_pid`) and the right mask in effect, and the
//! `SA_RESETHAND` ones must be back to `SIG_DFL`.

use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};

use zdtmtst::sig::{self, bit, rtmin, KSigaction};
use zdtmtst::{check, check_eq, fail, Checker};

static COUNT: AtomicUsize = AtomicUsize::new(0);
static LAST_SIG: AtomicI32 = AtomicI32::new(0);
static LAST_CODE: AtomicI32 = AtomicI32::new(0);
static LAST_VALUE: AtomicUsize = AtomicUsize::new(0);
static LAST_PID: AtomicI32 = AtomicI32::new(0);
static LAST_MASK: AtomicU64 = AtomicU64::new(0);

fn record(sig: libc::c_int) {
    LAST_SIG.store(sig, Ordering::SeqCst);
    LAST_MASK.store(sig::mask().unwrap_or(u64::MAX), Ordering::SeqCst);
    COUNT.fetch_add(1, Ordering::SeqCst);
}

extern "C" fn on_plain(sig: libc::c_int) {
    LAST_CODE.store(0, Ordering::SeqCst);
    record(sig);
}

extern "C" fn on_info(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers;
    // si_value and si_pid are meaningful for SI_QUEUE and are only read.
    unsafe {
        LAST_CODE.store((*info).si_code, Ordering::SeqCst);
        LAST_VALUE.store((*info).si_value().sival_ptr as usize, Ordering::SeqCst);
        LAST_PID.store((*info).si_pid(), Ordering::SeqCst);
    }
    record(sig);
}

fn plain() -> libc::sighandler_t {
    on_plain as *const () as libc::sighandler_t
}

fn info() -> libc::sighandler_t {
    on_info as *const () as libc::sighandler_t
}

fn sigqueue(sig: libc::c_int, value: usize) -> std::io::Result<()> {
    let v = libc::sigval {
        sival_ptr: value as *mut libc::c_void,
    };
    // SAFETY: getpid and sigqueue to self take no pointers beyond `v`,
    // passed by value.
    let r = unsafe { libc::sigqueue(libc::getpid(), sig, v) };
    if r != 0 {
        return Err(zdtmtst::last_err());
    }
    Ok(())
}

fn raise(sig: libc::c_int) -> std::io::Result<()> {
    // SAFETY: raise has no memory-safety preconditions.
    if unsafe { libc::raise(sig) } != 0 {
        return Err(zdtmtst::last_err());
    }
    Ok(())
}

fn main() {
    zdtmtst::start();
    let (rt1, rt2, rt5, rtmax) = (rtmin(1), rtmin(2), rtmin(5), libc::SIGRTMAX());
    let all_rt: u64 = (rtmin(0)..=rtmax).fold(0, |m, s| m | bit(s));
    let setup: &[(libc::c_int, libc::sighandler_t, libc::c_int, u64)] = &[
        (
            libc::SIGUSR1,
            info(),
            libc::SA_SIGINFO | libc::SA_RESTART,
            bit(libc::SIGUSR2) | bit(rt1),
        ),
        (libc::SIGUSR2, plain(), libc::SA_NODEFER, bit(libc::SIGHUP)),
        (libc::SIGHUP, plain(), libc::SA_RESETHAND, 0),
        (
            libc::SIGALRM,
            plain(),
            0,
            bit(libc::SIGINT) | bit(libc::SIGQUIT) | bit(rt5) | bit(rtmax),
        ),
        (rt2, info(), libc::SA_SIGINFO | libc::SA_ONSTACK, 0),
        (
            libc::SIGCHLD,
            plain(),
            libc::SA_NOCLDSTOP | libc::SA_RESTART,
            0,
        ),
        (libc::SIGPIPE, libc::SIG_IGN, 0, 0),
        (
            libc::SIGWINCH,
            libc::SIG_IGN,
            libc::SA_RESTART,
            bit(libc::SIGUSR1),
        ),
        (
            rtmax,
            info(),
            libc::SA_SIGINFO | libc::SA_NODEFER | libc::SA_RESETHAND | libc::SA_RESTART,
            all_rt,
        ),
    ];
    for &(s, h, f, m) in setup {
        sig::set_action(s, h, f, m).unwrap_or_else(|e| fail(format!("sigaction({s}): {e}")));
    }
    let signals: Vec<libc::c_int> = (1..=64)
        .filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP)
        .collect();
    let read_all = || -> Result<Vec<KSigaction>, String> {
        signals
            .iter()
            .map(|&s| sig::get_action(s).map_err(|e| format!("rt_sigaction({s}): {e}")))
            .collect()
    };
    let before = read_all().unwrap_or_else(|e| fail(e));
    // Sanity of the setup: what the kernel holds is what was asked.
    for &(s, h, f, m) in setup {
        let a = before[signals.iter().position(|&x| x == s).unwrap_or(0)];
        if a.handler != h || a.flags & f as u32 as u64 != f as u32 as u64 || a.mask != m {
            fail(format!("signal {s}: kernel holds {a:x?} after setup"));
        }
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    let Some(after) = c.ok("reading dispositions", read_all()) else {
        c.finish();
    };
    for ((s, b), a) in signals.iter().zip(&before).zip(&after) {
        check_eq!(c, a.handler, b.handler, "signal {s}: handler");
        check_eq!(c, a.flags, b.flags, "signal {s}: sa_flags");
        check_eq!(c, a.restorer, b.restorer, "signal {s}: sa_restorer");
        check_eq!(c, a.mask, b.mask, "signal {s}: sa_mask");
    }
    if !c.passed() {
        // Sending signals to wrong dispositions may kill the process.
        c.finish();
    }

    let me = std::process::id() as i32;
    let mask0 = sig::mask().unwrap_or(0);
    let deliver =
        |c: &mut Checker, what: &str, s: libc::c_int, send: &dyn Fn() -> std::io::Result<()>| {
            let n = COUNT.load(Ordering::SeqCst);
            if c.ok(what, send()).is_none() {
                return false;
            }
            let ran = COUNT.load(Ordering::SeqCst) == n + 1 && LAST_SIG.load(Ordering::SeqCst) == s;
            check!(
                c,
                ran,
                "{what}: handler for signal {s} did not run exactly once"
            )
        };

    if deliver(&mut c, "sigqueue(SIGUSR1)", libc::SIGUSR1, &|| {
        sigqueue(libc::SIGUSR1, 4242)
    }) {
        check_eq!(
            c,
            LAST_CODE.load(Ordering::SeqCst),
            libc::SI_QUEUE,
            "SIGUSR1 si_code"
        );
        check_eq!(
            c,
            LAST_VALUE.load(Ordering::SeqCst),
            4242,
            "SIGUSR1 si_value"
        );
        check_eq!(c, LAST_PID.load(Ordering::SeqCst), me, "SIGUSR1 si_pid");
        check_eq!(
            c,
            LAST_MASK.load(Ordering::SeqCst),
            mask0 | bit(libc::SIGUSR1) | bit(libc::SIGUSR2) | bit(rt1),
            "mask inside the SIGUSR1 handler"
        );
    }
    if deliver(&mut c, "raise(SIGUSR2)", libc::SIGUSR2, &|| {
        raise(libc::SIGUSR2)
    }) {
        check_eq!(
            c,
            LAST_MASK.load(Ordering::SeqCst),
            mask0 | bit(libc::SIGHUP),
            "mask inside the SIGUSR2 (SA_NODEFER) handler"
        );
    }
    if deliver(&mut c, "raise(SIGHUP)", libc::SIGHUP, &|| {
        raise(libc::SIGHUP)
    }) {
        if let Some(a) = c.ok("rt_sigaction(SIGHUP)", sig::get_action(libc::SIGHUP)) {
            check_eq!(
                c,
                a.handler,
                libc::SIG_DFL,
                "SIGHUP handler after SA_RESETHAND delivery"
            );
        }
    }
    if deliver(&mut c, "sigqueue(SIGRTMAX)", rtmax, &|| sigqueue(rtmax, 77)) {
        check_eq!(
            c,
            LAST_CODE.load(Ordering::SeqCst),
            libc::SI_QUEUE,
            "SIGRTMAX si_code"
        );
        check_eq!(
            c,
            LAST_VALUE.load(Ordering::SeqCst),
            77,
            "SIGRTMAX si_value"
        );
        check_eq!(
            c,
            LAST_MASK.load(Ordering::SeqCst),
            mask0 | all_rt,
            "mask inside the SIGRTMAX handler (sa_mask of every RT signal)"
        );
        if let Some(a) = c.ok("rt_sigaction(SIGRTMAX)", sig::get_action(rtmax)) {
            check_eq!(
                c,
                a.handler,
                libc::SIG_DFL,
                "SIGRTMAX handler after SA_RESETHAND delivery"
            );
        }
    }
    if deliver(&mut c, "raise(SIGALRM)", libc::SIGALRM, &|| {
        raise(libc::SIGALRM)
    }) {
        check_eq!(
            c,
            LAST_MASK.load(Ordering::SeqCst),
            mask0
                | bit(libc::SIGALRM)
                | bit(libc::SIGINT)
                | bit(libc::SIGQUIT)
                | bit(rt5)
                | bit(rtmax),
            "mask inside the SIGALRM handler"
        );
    }
    check_eq!(
        c,
        sig::mask().unwrap_or(u64::MAX),
        mask0,
        "mask after the handlers returned"
    );
    c.finish();
}
