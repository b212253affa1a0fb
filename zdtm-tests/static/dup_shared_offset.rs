//! dup_shared_offset: descriptors sharing one open file description stay
//! shared.
//!
//! Opens a file as fd A, `dup(A)` to B and `dup2(A, 100)`, sets
//! `FD_CLOEXEC` on 100 only and `O_APPEND` through B, and opens the same
//! file again independently as fd D with its own offset. After restore
//! A, B and 100 must show the same offset and status flags and differ only
//! in `FD_CLOEXEC`; moving the offset or changing `O_NONBLOCK` through one
//! must be visible through the others but not through D; and
//! `kcmp(KCMP_FILE)` must agree (where the kernel has kcmp).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

use zdtmtst::{check, check_eq, fail, Checker};

const HIGH_FD: libc::c_int = 100;
/// `KCMP_FILE` from linux/kcmp.h.
const KCMP_FILE: libc::c_int = 0;

fn lseek(fd: libc::c_int, off: i64, whence: libc::c_int) -> std::io::Result<i64> {
    // SAFETY: lseek on an fd has no memory-safety preconditions.
    let r = unsafe { libc::lseek(fd, off, whence) };
    if r < 0 {
        return Err(zdtmtst::last_err());
    }
    Ok(r)
}

fn fcntl(fd: libc::c_int, cmd: libc::c_int, arg: libc::c_int) -> std::io::Result<libc::c_int> {
    // SAFETY: the commands used take an integer argument, no pointer.
    let r = unsafe { libc::fcntl(fd, cmd, arg) };
    if r < 0 {
        return Err(zdtmtst::last_err());
    }
    Ok(r)
}

/// kcmp(KCMP_FILE): `Some(true)` if both fds refer to one open file
/// description, `None` if the kernel lacks kcmp.
fn same_file(a: libc::c_int, b: libc::c_int) -> std::io::Result<Option<bool>> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    // SAFETY: kcmp with KCMP_FILE takes two fd numbers, no pointers.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_FILE, a, b) };
    match r {
        0 => Ok(Some(true)),
        1..=3 => Ok(Some(false)),
        _ => {
            let e = zdtmtst::last_err();
            if e.raw_os_error() == Some(libc::ENOSYS) || e.raw_os_error() == Some(libc::EPERM) {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

fn main() {
    zdtmtst::start();
    let path = zdtmtst::temp_path("dup_shared_offset");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap_or_else(|e| fail(e));
    zdtmtst::remove_at_exit(&path);
    let cpath = CString::new(path.as_os_str().as_bytes()).unwrap_or_else(|e| fail(e));
    let open = || {
        // SAFETY: `cpath` is a valid NUL-terminated path.
        let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDWR) };
        if fd < 0 {
            fail(format!("open {}: {}", path.display(), zdtmtst::last_err()));
        }
        fd
    };
    let a = open();
    // SAFETY: dup/dup2 of an fd we own; 100 is not in use in this program.
    let (b, h) = unsafe { (libc::dup(a), libc::dup2(a, HIGH_FD)) };
    if b < 0 || h != HIGH_FD {
        fail(format!("dup/dup2: {}", zdtmtst::last_err()));
    }
    let d = open();
    let setup = || -> std::io::Result<()> {
        fcntl(HIGH_FD, libc::F_SETFD, libc::FD_CLOEXEC)?;
        let fl = fcntl(b, libc::F_GETFL, 0)?;
        fcntl(b, libc::F_SETFL, fl | libc::O_APPEND)?;
        lseek(a, 123, libc::SEEK_SET)?;
        lseek(d, 7, libc::SEEK_SET)?;
        Ok(())
    };
    setup().unwrap_or_else(|e| fail(format!("setup: {e}")));
    let shared = [("A", a), ("B", b), ("dup2'ed", HIGH_FD)];

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    let pos = |fd| lseek(fd, 0, libc::SEEK_CUR);
    for (name, fd) in shared {
        if let Some(p) = c.ok(&format!("fd {fd} ({name}): lseek"), pos(fd)) {
            check_eq!(c, p, 123, "fd {fd} ({name}): offset");
        }
        if let Some(fl) = c.ok(&format!("fd {fd}: F_GETFL"), fcntl(fd, libc::F_GETFL, 0)) {
            check_eq!(
                c,
                fl & !zdtmtst::O_LARGEFILE_KERNEL,
                libc::O_RDWR | libc::O_APPEND,
                "fd {fd} ({name}): F_GETFL"
            );
        }
        let cloexec = if fd == HIGH_FD { libc::FD_CLOEXEC } else { 0 };
        if let Some(fl) = c.ok(&format!("fd {fd}: F_GETFD"), fcntl(fd, libc::F_GETFD, 0)) {
            check_eq!(c, fl, cloexec, "fd {fd} ({name}): F_GETFD");
        }
    }
    if let Some(p) = c.ok("fd D: lseek", pos(d)) {
        check_eq!(c, p, 7, "fd {d} (independent open): offset");
    }
    if let Some(fl) = c.ok("fd D: F_GETFL", fcntl(d, libc::F_GETFL, 0)) {
        check_eq!(
            c,
            fl & !zdtmtst::O_LARGEFILE_KERNEL,
            libc::O_RDWR,
            "fd {d} (independent): F_GETFL"
        );
    }
    for (name, fd) in shared.iter().skip(1) {
        if let Some(Some(same)) = c.ok("kcmp", same_file(a, *fd)) {
            check!(
                c,
                same,
                "kcmp: fd {a} and fd {fd} ({name}) are different files"
            );
        }
    }
    if let Some(Some(same)) = c.ok("kcmp", same_file(a, d)) {
        check!(c, !same, "kcmp: fd {a} and independent fd {d} are one file");
    }

    // Changes through one descriptor show through its duplicates only.
    if c.ok("lseek via dup2'ed fd", lseek(HIGH_FD, 456, libc::SEEK_SET))
        .is_some()
    {
        for (name, fd) in shared {
            if let Some(p) = c.ok("lseek", pos(fd)) {
                check_eq!(
                    c,
                    p,
                    456,
                    "fd {fd} ({name}): offset after seeking fd {HIGH_FD}"
                );
            }
        }
        if let Some(p) = c.ok("lseek", pos(d)) {
            check_eq!(
                c,
                p,
                7,
                "independent fd {d}: offset after seeking fd {HIGH_FD}"
            );
        }
    }
    if c.ok(
        "F_SETFL via A",
        fcntl(a, libc::F_SETFL, libc::O_APPEND | libc::O_NONBLOCK),
    )
    .is_some()
    {
        for (name, fd) in shared {
            if let Some(fl) = c.ok("F_GETFL", fcntl(fd, libc::F_GETFL, 0)) {
                check!(
                    c,
                    fl & libc::O_NONBLOCK != 0,
                    "fd {fd} ({name}): O_NONBLOCK set through fd {a} is not visible"
                );
            }
        }
        if let Some(fl) = c.ok("F_GETFL", fcntl(d, libc::F_GETFL, 0)) {
            check!(
                c,
                fl & libc::O_NONBLOCK == 0,
                "independent fd {d} got O_NONBLOCK"
            );
        }
    }
    c.finish();
}
