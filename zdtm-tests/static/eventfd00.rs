//! eventfd00: eventfds keep their counter, semaphore mode and flags.
//!
//! A plain eventfd with counter 0x1_0000_0005 (above 32 bits), a nonblocking
//! one in semaphore mode with counter 3, and an empty nonblocking one. After
//! restore the counters, flags and `eventfd-semaphore` must be unchanged: the
//! plain one reads its whole counter at once, the semaphore yields 1 three
//! times then EAGAIN, the empty one gives EAGAIN.

use zdtmtst::files::fdinfo_field;
use zdtmtst::{check, check_eq, fail, fd, Checker};

fn efd(init: u32, flags: i32) -> std::io::Result<i32> {
    // SAFETY: integers only.
    let f = unsafe { libc::eventfd(init, flags) };
    if f < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(f)
}

fn read_u64(f: i32) -> std::io::Result<u64> {
    let b = fd::read(f, 8)?;
    Ok(u64::from_ne_bytes(
        b.try_into()
            .map_err(|_| std::io::Error::other("short read"))?,
    ))
}

fn main() {
    zdtmtst::start();
    let setup = || -> std::io::Result<[i32; 3]> {
        let a = efd(5, 0)?;
        fd::write(a, &0x1_0000_0000u64.to_ne_bytes())?;
        let b = efd(3, libc::EFD_SEMAPHORE | libc::EFD_NONBLOCK)?;
        let e = efd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?;
        Ok([a, b, e])
    };
    let fds = setup().unwrap_or_else(|e| fail(format!("setup: {e}")));
    let flags: Vec<(i32, i32)> = fds
        .iter()
        .map(|&f| {
            (
                fd::fcntl(f, libc::F_GETFL, 0).unwrap_or_else(|e| fail(e)),
                fd::fcntl(f, libc::F_GETFD, 0).unwrap_or_else(|e| fail(e)),
            )
        })
        .collect();

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    for (&f, &(fl, fdfl)) in fds.iter().zip(&flags) {
        check_eq!(
            c,
            fd::fcntl(f, libc::F_GETFL, 0).unwrap_or(-1),
            fl,
            "fd {f}: F_GETFL"
        );
        check_eq!(
            c,
            fd::fcntl(f, libc::F_GETFD, 0).unwrap_or(-1),
            fdfl,
            "fd {f}: F_GETFD"
        );
        if let Some(l) = c.ok("readlink", fd::link(f)) {
            check_eq!(
                c,
                l.to_string_lossy(),
                "anon_inode:[eventfd]",
                "fd {f}: link"
            );
        }
    }
    if let Some(s) = c.ok("fdinfo", fdinfo_field(fds[1], "eventfd-semaphore")) {
        check_eq!(
            c,
            s.as_deref(),
            Some("1"),
            "semaphore eventfd: eventfd-semaphore"
        );
    }
    if let Some(v) = c.ok("read plain", read_u64(fds[0])) {
        check_eq!(c, v, 0x1_0000_0005, "plain eventfd counter");
    }
    for i in 0..3 {
        if let Some(v) = c.ok(&format!("semaphore read {i}"), read_u64(fds[1])) {
            check_eq!(c, v, 1, "semaphore eventfd read {i}");
        }
    }
    let r = fd::read(fds[1], 8);
    check!(
        c,
        matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EAGAIN)),
        "semaphore eventfd after 3 reads: {r:?}, expected EAGAIN"
    );
    let r = fd::read(fds[2], 8);
    check!(
        c,
        matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EAGAIN)),
        "empty eventfd: {r:?}, expected EAGAIN"
    );
    c.finish();
}
