//! nanosleep00: a task sleeping in nanosleep(2) sleeps at least as long as
//! it asked.
//!
//! The task sleeps 50 ms at a time in a loop, as real programs do: on
//! `EINTR` it sleeps again for the remaining time the kernel reported. Each
//! completed sleep is measured with `CLOCK_MONOTONIC` and must have lasted
//! at least the time asked, whatever the dumps and restores in between. An
//! error other than `EINTR`, or a remaining time that is not a valid
//! duration no longer than the one asked, is a failure. After SIGTERM one
//! more full sleep must work too.

use std::time::Duration;

use zdtmtst::{check, fail, Checker};

const SLEEP: Duration = Duration::from_millis(50);

fn monotonic() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        fail(format!("clock_gettime: {}", zdtmtst::last_err()));
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn to_ts(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// Sleeps `SLEEP` in full, resuming after EINTR, unless `stop_on_term` and
/// SIGTERM arrives. Returns whether the sleep completed.
fn sleep_full(c: &mut Checker, stop_on_term: bool) -> bool {
    let start = monotonic();
    let mut req = to_ts(SLEEP);
    loop {
        let mut rem = libc::timespec {
            tv_sec: -1,
            tv_nsec: -1,
        };
        // SAFETY: `req` and `rem` are valid timespecs.
        let r = unsafe { libc::nanosleep(&req, &mut rem) };
        if r == 0 {
            break;
        }
        let err = zdtmtst::last_err();
        if err.raw_os_error() != Some(libc::EINTR) {
            c.fail(format!("nanosleep: {err}"));
            return false;
        }
        if stop_on_term && zdtmtst::sigterm_received() {
            return false;
        }
        let valid = rem.tv_sec >= 0
            && (0..1_000_000_000).contains(&rem.tv_nsec)
            && (rem.tv_sec, rem.tv_nsec) <= (req.tv_sec, req.tv_nsec);
        if !check!(
            c,
            valid,
            "nanosleep EINTR with remaining time {}s {}ns, asked {}s {}ns",
            rem.tv_sec,
            rem.tv_nsec,
            req.tv_sec,
            req.tv_nsec
        ) {
            return false;
        }
        eprintln!(
            "nanosleep00: EINTR, {}s {}ns remaining",
            rem.tv_sec, rem.tv_nsec
        );
        req = rem;
    }
    let slept = monotonic().saturating_sub(start);
    check!(
        c,
        slept >= SLEEP,
        "a {SLEEP:?} sleep ended after {slept:?} (CLOCK_MONOTONIC)"
    )
}

fn main() {
    zdtmtst::start();
    let mut c = Checker::new();
    zdtmtst::ready();
    let mut done = 0u64;
    while !zdtmtst::sigterm_received() {
        if !c.passed() {
            // Report only when asked, as the protocol wants.
            zdtmtst::wait_for_sigterm();
            break;
        }
        if sleep_full(&mut c, true) {
            done += 1;
        }
    }
    eprintln!("nanosleep00: {done} sleeps completed before SIGTERM");
    if c.passed() {
        sleep_full(&mut c, false);
    }
    c.finish();
}
