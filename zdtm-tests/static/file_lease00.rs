//! file_lease00: read and write leases survive (dumped with --file-locks).
//!
//! File R is opened read-only with a read lease, file W read-write with a
//! write lease (`F_SETLEASE`). SIGIO, the lease-break signal, is blocked.
//! After restore `F_GETLEASE` must return the same lease types, fdinfo must
//! show them as `LEASE ACTIVE` held by this process, a forked child must be
//! able to open R for reading (a read lease allows readers) and be refused
//! with `EWOULDBLOCK` opening W without blocking (the write lease is in
//! force); that refusal starts a lease break, whose SIGIO must reach this
//! process, the one holding the lease.

use std::path::Path;
use std::time::{Duration, Instant};

use zdtmtst::files::{locks, open};
use zdtmtst::{check, check_eq, fail, fd, sig, Checker};

/// Runs `f` in a forked child and returns its exit code.
fn in_child(f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only makes system calls and leaves with _exit.
    match unsafe { libc::fork() } {
        0 => zdtmtst::tree::exit_now(f()),
        -1 => -1,
        pid => zdtmtst::tree::wait_pid(pid, 0).map_or(-1, |st| {
            if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                -1
            }
        }),
    }
}

/// 0: opened; 1: refused with EWOULDBLOCK; 2: another error.
fn try_open(path: &Path, flags: i32) -> i32 {
    match open(path, flags | libc::O_NONBLOCK, 0) {
        Ok(_) => 0,
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => 1,
        Err(_) => 2,
    }
}

fn main() {
    zdtmtst::start();
    let r_path = zdtmtst::temp_path("file_lease00.r");
    let w_path = zdtmtst::temp_path("file_lease00.w");
    zdtmtst::remove_at_exit(&r_path);
    zdtmtst::remove_at_exit(&w_path);
    let setup = || -> std::io::Result<(i32, i32)> {
        std::fs::write(&r_path, b"read lease\n")?;
        std::fs::write(&w_path, b"write lease\n")?;
        sig::block(sig::bit(libc::SIGIO))?;
        let r = open(&r_path, libc::O_RDONLY, 0)?;
        let w = open(&w_path, libc::O_RDWR, 0)?;
        fd::fcntl(r, libc::F_SETLEASE, libc::F_RDLCK)?;
        fd::fcntl(w, libc::F_SETLEASE, libc::F_WRLCK)?;
        Ok((r, w))
    };
    let (r, w) = setup().unwrap_or_else(|e| fail(format!("setup: {e}")));

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    let me = std::process::id() as i32;
    for (f, ty, name) in [(r, libc::F_RDLCK, "READ"), (w, libc::F_WRLCK, "WRITE")] {
        if let Some(now) = c.ok("F_GETLEASE", fd::fcntl(f, libc::F_GETLEASE, 0)) {
            check_eq!(c, now, ty, "F_GETLEASE of fd {f}");
        }
        if let Some(l) = c.ok("fdinfo", locks(f)) {
            let leases: Vec<_> = l.iter().filter(|l| l.0 == "LEASE").collect();
            check!(
                c,
                leases.len() == 1 && leases[0].1 == name && leases[0].2 == me,
                "fd {f}: fdinfo leases {leases:?}, expected one {name} lease of pid {me}"
            );
        }
    }
    let pending = sig::pending().unwrap_or(0);
    check!(
        c,
        pending & sig::bit(libc::SIGIO) == 0,
        "SIGIO pending before any break"
    );
    let rp = r_path.clone();
    check_eq!(
        c,
        in_child(|| try_open(&rp, libc::O_RDONLY)),
        0,
        "a reader opening R"
    );
    let wp = w_path.clone();
    check_eq!(
        c,
        in_child(|| try_open(&wp, libc::O_RDONLY)),
        1,
        "a reader opening W (0 opened, 1 EWOULDBLOCK, 2 other error)"
    );
    let t0 = Instant::now();
    while sig::pending().unwrap_or(0) & sig::bit(libc::SIGIO) == 0
        && t0.elapsed() < Duration::from_secs(2)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    check!(
        c,
        sig::pending().unwrap_or(0) & sig::bit(libc::SIGIO) != 0,
        "no SIGIO for the broken write lease: its break is signalled elsewhere"
    );
    c.finish();
}
