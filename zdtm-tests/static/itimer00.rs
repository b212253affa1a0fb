//! itimer00: interval timers survive.
//!
//! Arms `ITIMER_REAL`, `ITIMER_VIRTUAL` and `ITIMER_PROF` with long values
//! and odd intervals (they never fire during the test). After restore each
//! interval must be exact, and each remaining value must be no more than it
//! was before the dump and no less than that minus the time that passed
//! (wall time for the real timer, with a second of slack): a timer reset to
//! its interval, disarmed or restarted from its initial value fails.

use std::time::Instant;

use zdtmtst::{check, fail, Checker};

/// Seconds and microseconds.
type Tv = (i64, i64);

/// (name, which, interval, initial value).
const TIMERS: &[(&str, libc::c_int, Tv, Tv)] = &[
    (
        "ITIMER_REAL",
        libc::ITIMER_REAL,
        (1000, 123_000),
        (2000, 456_000),
    ),
    (
        "ITIMER_VIRTUAL",
        libc::ITIMER_VIRTUAL,
        (500, 7_000),
        (600, 0),
    ),
    (
        "ITIMER_PROF",
        libc::ITIMER_PROF,
        (700, 999_000),
        (800, 1_000),
    ),
];

fn us(tv: libc::timeval) -> i64 {
    tv.tv_sec * 1_000_000 + tv.tv_usec
}

fn tv((s, u): Tv) -> libc::timeval {
    libc::timeval {
        tv_sec: s,
        tv_usec: u,
    }
}

fn get(which: libc::c_int) -> std::io::Result<(i64, i64)> {
    let mut it = libc::itimerval {
        it_interval: tv((0, 0)),
        it_value: tv((0, 0)),
    };
    // SAFETY: `it` is a writable itimerval.
    if unsafe { libc::getitimer(which, &mut it) } != 0 {
        return Err(zdtmtst::last_err());
    }
    Ok((us(it.it_interval), us(it.it_value)))
}

fn main() {
    zdtmtst::start();
    for &(name, which, interval, value) in TIMERS {
        let it = libc::itimerval {
            it_interval: tv(interval),
            it_value: tv(value),
        };
        // SAFETY: `it` is a valid itimerval; the old value is not wanted.
        if unsafe { libc::setitimer(which, &it, std::ptr::null_mut()) } != 0 {
            fail(format!("setitimer {name}: {}", zdtmtst::last_err()));
        }
    }
    let before: Vec<(i64, i64)> = TIMERS
        .iter()
        .map(|t| get(t.1).unwrap_or_else(|e| fail(e)))
        .collect();
    let t0 = Instant::now();

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let elapsed = t0.elapsed().as_micros() as i64;
    let mut c = Checker::new();
    for (&(name, which, interval, _), &(_, val0)) in TIMERS.iter().zip(&before) {
        let Some((iv, val)) = c.ok(&format!("getitimer {name}"), get(which)) else {
            continue;
        };
        let want_iv = interval.0 * 1_000_000 + interval.1;
        check!(
            c,
            iv == want_iv,
            "{name}: interval {iv} us, expected {want_iv} us"
        );
        let slack = if which == libc::ITIMER_REAL {
            elapsed + 1_000_000
        } else {
            // CPU-time timers: this task uses far less than this.
            10_000_000
        };
        check!(
            c,
            val <= val0 && val >= val0 - slack && val > 0,
            "{name}: remaining {val} us; before the dump {val0} us, {elapsed} us ago"
        );
    }
    c.finish();
}
