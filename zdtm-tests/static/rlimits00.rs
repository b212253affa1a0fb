//! rlimits00: resource limits survive.
//!
//! Lowers the soft limit of NOFILE, STACK, CORE, NPROC, MEMLOCK, MSGQUEUE,
//! SIGPENDING, DATA, FSIZE, CPU, LOCKS and RTTIME, and also the hard limit
//! of several of them (only lowering: an unprivileged or namespaced task
//! cannot raise a hard limit back). The values are chosen to differ from
//! the usual defaults. After restore `getrlimit` must return exactly the
//! same soft and hard value for all sixteen resources.

use zdtmtst::{check_eq, fail, Checker};

const RESOURCES: &[(&str, libc::__rlimit_resource_t)] = &[
    ("CPU", libc::RLIMIT_CPU),
    ("FSIZE", libc::RLIMIT_FSIZE),
    ("DATA", libc::RLIMIT_DATA),
    ("STACK", libc::RLIMIT_STACK),
    ("CORE", libc::RLIMIT_CORE),
    ("RSS", libc::RLIMIT_RSS),
    ("NPROC", libc::RLIMIT_NPROC),
    ("NOFILE", libc::RLIMIT_NOFILE),
    ("MEMLOCK", libc::RLIMIT_MEMLOCK),
    ("AS", libc::RLIMIT_AS),
    ("LOCKS", libc::RLIMIT_LOCKS),
    ("SIGPENDING", libc::RLIMIT_SIGPENDING),
    ("MSGQUEUE", libc::RLIMIT_MSGQUEUE),
    ("NICE", libc::RLIMIT_NICE),
    ("RTPRIO", libc::RLIMIT_RTPRIO),
    ("RTTIME", libc::RLIMIT_RTTIME),
];

/// (resource, wanted soft, wanted hard or None to keep the hard limit).
fn wanted() -> Vec<(libc::__rlimit_resource_t, u64, Option<u64>)> {
    vec![
        (libc::RLIMIT_NOFILE, 777, Some(1500)),
        (libc::RLIMIT_STACK, 6 << 20, None),
        (libc::RLIMIT_CORE, 12 << 12, Some(1 << 30)),
        (libc::RLIMIT_NPROC, 3001, Some(4001)),
        (libc::RLIMIT_MEMLOCK, 3 << 20, None),
        (libc::RLIMIT_MSGQUEUE, 409_600, Some(600_000)),
        (libc::RLIMIT_SIGPENDING, 1234, None),
        (libc::RLIMIT_DATA, 7 << 30, Some(9 << 30)),
        (libc::RLIMIT_FSIZE, 1 << 40, None),
        (libc::RLIMIT_CPU, 1_000_003, Some(2_000_003)),
        (libc::RLIMIT_LOCKS, 4321, None),
        (libc::RLIMIT_RTTIME, 5_000_000, Some(6_000_000)),
    ]
}

fn get(res: libc::__rlimit_resource_t) -> std::io::Result<(u64, u64)> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a writable rlimit.
    if unsafe { libc::getrlimit(res, &mut rl) } != 0 {
        return Err(zdtmtst::last_err());
    }
    Ok((rl.rlim_cur, rl.rlim_max))
}

fn set(res: libc::__rlimit_resource_t, soft: u64, hard: u64) -> std::io::Result<()> {
    let rl = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `rl` is a valid rlimit.
    if unsafe { libc::setrlimit(res, &rl) } != 0 {
        return Err(zdtmtst::last_err());
    }
    Ok(())
}

fn name(res: libc::__rlimit_resource_t) -> &'static str {
    RESOURCES.iter().find(|r| r.1 == res).map_or("?", |r| r.0)
}

fn main() {
    zdtmtst::start();
    for (res, soft, hard) in wanted() {
        let (_, cur_hard) =
            get(res).unwrap_or_else(|e| fail(format!("getrlimit {}: {e}", name(res))));
        // Never raise: clamp to what the hard limit allows.
        let hard = hard.map_or(cur_hard, |h| h.min(cur_hard));
        let soft = soft.min(hard);
        set(res, soft, hard)
            .unwrap_or_else(|e| fail(format!("setrlimit {} {soft}/{hard}: {e}", name(res))));
    }
    let before: Vec<(u64, u64)> = RESOURCES
        .iter()
        .map(|&(n, r)| get(r).unwrap_or_else(|e| fail(format!("getrlimit {n}: {e}"))))
        .collect();

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    for (&(n, r), b) in RESOURCES.iter().zip(&before) {
        if let Some(now) = c.ok(&format!("getrlimit {n}"), get(r)) {
            check_eq!(c, now, *b, "RLIMIT_{n} (soft, hard)");
        }
    }
    c.finish();
}
