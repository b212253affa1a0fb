//! file_locks00: flock, OFD and POSIX locks survive (dumped with --file-locks).
//!
//! File A: an exclusive flock; file A2: a shared flock. File B: a write OFD lock on bytes 0..100 and a read OFD lock from
//! 200 to the end. File C: POSIX locks of this process, write on 10..20 and
//! read from 50 to the end. After restore `/proc/self/fdinfo` must list the
//! same locks on the same descriptors, POSIX ones owned by this pid, and a
//! forked child must find them in force (flock refused, F_OFD_GETLK and
//! F_GETLK reporting the conflict).

use zdtmtst::files::{locks, open, Lock};
use zdtmtst::{check, check_eq, fail, Checker};

fn setlk(fd: i32, cmd: i32, ty: i32, start: i64, len: i64) -> std::io::Result<libc::flock> {
    let mut fl = libc::flock {
        l_type: ty as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: start,
        l_len: len,
        l_pid: 0,
    };
    // SAFETY: `fl` is a valid struct flock for the call.
    if unsafe { libc::fcntl(fd, cmd, &mut fl) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fl)
}

fn flock(fd: i32, op: i32) -> std::io::Result<()> {
    // SAFETY: integers only.
    if unsafe { libc::flock(fd, op) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` in a forked child and returns its exit code (0: all conflicts seen).
fn in_child(f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only makes system calls and leaves with _exit.
    match unsafe { libc::fork() } {
        0 => {
            let code = f();
            // SAFETY: _exit in the forked child.
            unsafe { libc::_exit(code) }
        }
        pid if pid > 0 => {
            let mut st = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut st, 0) };
            if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                99
            }
        }
        _ => 98,
    }
}

fn main() {
    zdtmtst::start();
    let p = |n| {
        let p = zdtmtst::temp_path(n);
        zdtmtst::remove_at_exit(&p);
        p
    };
    let (pa, pb, pc) = (
        p("file_locks00.a"),
        p("file_locks00.b"),
        p("file_locks00.c"),
    );
    let setup = || -> std::io::Result<[i32; 4]> {
        for x in [&pa, &pb, &pc] {
            std::fs::write(x, vec![0u8; 4096])?;
        }
        let a1 = open(&pa, libc::O_RDWR, 0)?;
        let pb2 = zdtmtst::temp_path("file_locks00.a2");
        zdtmtst::remove_at_exit(&pb2);
        std::fs::write(&pb2, b"")?;
        let a2b = open(&pb2, libc::O_RDONLY, 0)?;
        flock(a1, libc::LOCK_EX)?;
        flock(a2b, libc::LOCK_SH)?;
        let b = open(&pb, libc::O_RDWR, 0)?;
        setlk(b, libc::F_OFD_SETLK, libc::F_WRLCK, 0, 100)?;
        setlk(b, libc::F_OFD_SETLK, libc::F_RDLCK, 200, 0)?;
        let cfd = open(&pc, libc::O_RDWR, 0)?;
        setlk(cfd, libc::F_SETLK, libc::F_WRLCK, 10, 10)?;
        setlk(cfd, libc::F_SETLK, libc::F_RDLCK, 50, 0)?;
        Ok([a1, a2b, b, cfd])
    };
    let fds = setup().unwrap_or_else(|e| fail(format!("setup: {e}")));
    let me = std::process::id() as i32;
    let before: Vec<Vec<Lock>> = fds
        .iter()
        .map(|&f| locks(f).unwrap_or_else(|e| fail(e)))
        .collect();
    if before.iter().map(Vec::len).sum::<usize>() != 6 {
        fail(format!("setup: expected 6 locks, fdinfo lists {before:?}"));
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    let me_now = std::process::id() as i32;
    check_eq!(c, me_now, me, "pid");
    for (&f, want) in fds.iter().zip(&before) {
        if let Some(now) = c.ok(&format!("fd {f}: fdinfo"), locks(f)) {
            // flock/OFD locks show the pid of whoever took them: compare the rest.
            let strip = |v: &[Lock]| -> Vec<(String, String, String, String, bool)> {
                v.iter()
                    .map(|l| {
                        (
                            l.0.clone(),
                            l.1.clone(),
                            l.3.clone(),
                            l.4.clone(),
                            l.0 != "POSIX" || l.2 == me,
                        )
                    })
                    .collect()
            };
            check_eq!(c, strip(&now), strip(want), "fd {f}: locks");
        }
    }
    let [a1, a2b, b, cfd] = fds;
    let code = in_child(|| {
        let mut bad = 0;
        // The child shares a1's description, which would let it in: use a new one.
        let _ = a1;
        match open(&pa, libc::O_RDONLY, 0) {
            Ok(x) if flock(x, libc::LOCK_SH | libc::LOCK_NB).is_err() => {}
            _ => bad |= 1,
        }
        let _ = a2b;
        match open(&pb, libc::O_RDWR, 0)
            .and_then(|x| setlk(x, libc::F_OFD_GETLK, libc::F_RDLCK, 50, 1))
        {
            Ok(fl) if fl.l_type == libc::F_WRLCK as i16 => {}
            _ => bad |= 2,
        }
        let _ = b;
        match setlk(cfd, libc::F_GETLK, libc::F_WRLCK, 60, 1) {
            Ok(fl) if fl.l_type == libc::F_RDLCK as i16 && fl.l_pid == me => {}
            _ => bad |= 4,
        }
        bad
    });
    check!(
        c,
        code == 0,
        "a child does not see every lock in force (code {code}: 1 flock, 2 OFD, 4 POSIX)"
    );
    c.finish();
}
