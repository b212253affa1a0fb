//! chardev00: the memory character devices stay open with their flags.
//!
//! Opens /dev/null (write-only, appending), /dev/zero (read-write), /dev/full,
//! /dev/random (nonblocking) and /dev/urandom (read-only, close-on-exec).
//! After restore each must be the same device (`st_rdev`) with the same
//! flags and behave like it: null swallows, zero reads zeros, full refuses
//! writes with ENOSPC, the random ones give bytes.

use std::path::Path;

use zdtmtst::files::open;
use zdtmtst::{check, check_eq, fail, fd, Checker};

fn main() {
    zdtmtst::start();
    let devs = [
        ("/dev/null", libc::O_WRONLY | libc::O_APPEND),
        ("/dev/zero", libc::O_RDWR),
        ("/dev/full", libc::O_RDWR),
        ("/dev/random", libc::O_RDONLY | libc::O_NONBLOCK),
        ("/dev/urandom", libc::O_RDONLY | libc::O_CLOEXEC),
    ];
    let fds: Vec<(i32, u64, i32, i32)> = devs
        .iter()
        .map(|&(p, fl)| {
            let f = open(Path::new(p), fl, 0).unwrap_or_else(|e| fail(format!("{p}: {e}")));
            let st = fd::fstat(f).unwrap_or_else(|e| fail(e));
            let a = fd::fcntl(f, libc::F_GETFL, 0).unwrap_or_else(|e| fail(e));
            let b = fd::fcntl(f, libc::F_GETFD, 0).unwrap_or_else(|e| fail(e));
            (f, st.st_rdev, a, b)
        })
        .collect();

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    for (&(p, _), &(f, rdev, fl, fdfl)) in devs.iter().zip(&fds) {
        if let Some(st) = c.ok(&format!("{p}: fstat"), fd::fstat(f)) {
            check_eq!(c, st.st_rdev, rdev, "{p}: fd {f}: device");
        }
        check_eq!(
            c,
            fd::fcntl(f, libc::F_GETFL, 0).unwrap_or(-1),
            fl,
            "{p}: F_GETFL"
        );
        check_eq!(
            c,
            fd::fcntl(f, libc::F_GETFD, 0).unwrap_or(-1),
            fdfl,
            "{p}: F_GETFD"
        );
    }
    check_eq!(
        c,
        fd::write(fds[0].0, b"gone").ok(),
        Some(4),
        "/dev/null write"
    );
    check_eq!(
        c,
        fd::read(fds[1].0, 16).ok(),
        Some(vec![0u8; 16]),
        "/dev/zero read"
    );
    let w = fd::write(fds[2].0, b"x");
    check!(
        c,
        matches!(&w, Err(e) if e.raw_os_error() == Some(libc::ENOSPC)),
        "/dev/full write: {w:?}"
    );
    for i in [3, 4] {
        let r = fd::read(fds[i].0, 16);
        check!(
            c,
            matches!(&r, Ok(b) if b.len() == 16),
            "{} read: {r:?}",
            devs[i].0
        );
    }
    c.finish();
}
