//! prctl00: per-process attributes set with prctl survive.
//!
//! Sets `PR_SET_NO_NEW_PRIVS` (irreversible), `PR_SET_CHILD_SUBREAPER`,
//! `PR_SET_THP_DISABLE`, `PR_SET_KEEPCAPS` and a non-default
//! `PR_SET_TIMERSLACK`. After restore each `PR_GET_*` must return the same
//! value, and `NoNewPrivs` and `THP_enabled` in `/proc/self/status` must
//! agree.

use zdtmtst::{check_eq, fail, proc, Checker};

const SLACK_NS: libc::c_ulong = 123_457;

fn get(opt: libc::c_int) -> std::io::Result<libc::c_int> {
    // SAFETY: these PR_GET_* options take no pointer and return the value.
    let r = unsafe { libc::prctl(opt, 0, 0, 0, 0) };
    if r < 0 {
        return Err(zdtmtst::last_err());
    }
    Ok(r)
}

fn main() {
    zdtmtst::start();
    let sets: [(&str, libc::c_int, libc::c_ulong); 5] = [
        ("PR_SET_NO_NEW_PRIVS", libc::PR_SET_NO_NEW_PRIVS, 1),
        ("PR_SET_CHILD_SUBREAPER", libc::PR_SET_CHILD_SUBREAPER, 1),
        ("PR_SET_THP_DISABLE", libc::PR_SET_THP_DISABLE, 1),
        ("PR_SET_TIMERSLACK", libc::PR_SET_TIMERSLACK, SLACK_NS),
        ("PR_SET_KEEPCAPS", libc::PR_SET_KEEPCAPS, 1),
    ];
    for (name, opt, v) in sets {
        // SAFETY: these options take an integer argument only.
        if unsafe {
            libc::prctl(
                opt,
                v,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        } != 0
        {
            fail(format!("{name}({v}): {}", zdtmtst::last_err()));
        }
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(v) = c.ok("PR_GET_NO_NEW_PRIVS", get(libc::PR_GET_NO_NEW_PRIVS)) {
        check_eq!(c, v, 1, "PR_GET_NO_NEW_PRIVS");
    }
    let mut reaper: libc::c_int = -1;
    // SAFETY: PR_GET_CHILD_SUBREAPER stores one int at the pointer.
    if unsafe {
        libc::prctl(
            libc::PR_GET_CHILD_SUBREAPER,
            &mut reaper as *mut libc::c_int,
        )
    } != 0
    {
        c.fail(format!("PR_GET_CHILD_SUBREAPER: {}", zdtmtst::last_err()));
    } else {
        check_eq!(c, reaper, 1, "PR_GET_CHILD_SUBREAPER");
    }
    if let Some(v) = c.ok("PR_GET_THP_DISABLE", get(libc::PR_GET_THP_DISABLE)) {
        check_eq!(c, v, 1, "PR_GET_THP_DISABLE");
    }
    if let Some(v) = c.ok("PR_GET_TIMERSLACK", get(libc::PR_GET_TIMERSLACK)) {
        check_eq!(c, v as libc::c_ulong, SLACK_NS, "PR_GET_TIMERSLACK (ns)");
    }
    if let Some(v) = c.ok("PR_GET_KEEPCAPS", get(libc::PR_GET_KEEPCAPS)) {
        check_eq!(c, v, 1, "PR_GET_KEEPCAPS");
    }
    if let Some(v) = c.ok("reading NoNewPrivs", proc::status_field("NoNewPrivs")) {
        check_eq!(c, v, "1", "NoNewPrivs in /proc/self/status");
    }
    if let Some(v) = c.ok("reading THP_enabled", proc::status_field("THP_enabled")) {
        check_eq!(c, v, "0", "THP_enabled in /proc/self/status");
    }
    c.finish();
}
