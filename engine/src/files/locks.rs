//! File locks, as `/proc/PID/fdinfo/N` lists them (`lock:` lines, Linux 4.1).
//!
//! flock(2) and OFD locks (`F_OFD_SETLK`, Linux 3.15) belong to the open file description:
//! crust takes them again on the description it opens at restore, which then travels to the
//! task. POSIX record locks (`F_SETLK`) belong to the process: the restored task takes them
//! itself through a remote `fcntl` during take-over, after the last close of a descriptor it
//! will not keep (closing any fd of a file drops the process's POSIX locks on it).
//!
//! Leases (`F_SETLEASE`, Linux 2.4) belong to the description too and show in its fdinfo as
//! `LEASE` lines: the first task holding the description takes the lease again through a
//! remote `fcntl` during take-over, so that it is recorded as the lease's holder and is the
//! one signalled when the lease is broken. A lease being broken at dump (`BREAKING`, or an `UNLCK` target) is
//! refused: the process that breaks it waits on the dumped task.
//!
//! Like CRIU, dumping a task that holds locks needs `--file-locks`, and so does taking them
//! again at restore: without it (CRIU's `prepare_file_locks` returns early) the locks in the
//! images are left out, with a warning. They are taken again only if nobody else took the
//! file meanwhile.

use std::os::fd::OwnedFd;

use images::pb::{file_entry, file_lock, FdinfoEntry, FileEntry, FileLock};
use parasite::Tracee;

use crate::error::RestoreError;
use crate::remote::Queue;

/// Locks of one descriptor: those of its description, and the task's POSIX ones.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Held {
    pub desc: Vec<FileLock>,
    pub posix: Vec<FileLock>,
}

/// Parses the `lock:` lines of an fdinfo, e.g.
/// `lock:\t1: POSIX  ADVISORY  WRITE 11641 fe:00:10011451 5 14`. A lease, or a line that does
/// not parse, is an error saying why.
pub(crate) fn parse(text: &str) -> Result<Held, String> {
    let mut held = Held::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("lock:") else {
            continue;
        };
        let w: Vec<&str> = rest.split_whitespace().collect();
        let bad = || format!("cannot read its lock {:?}", rest.trim());
        if w.len() < 8 {
            return Err(bad());
        }
        let kind = match w[1] {
            "FLOCK" => file_lock::Kind::Flock,
            "OFDLCK" => file_lock::Kind::Ofd,
            "POSIX" => file_lock::Kind::Posix,
            "LEASE" => file_lock::Kind::Lease,
            other => return Err(format!("holds a {other} lock, which crust cannot restore")),
        };
        let breaking = kind == file_lock::Kind::Lease && (w[2] != "ACTIVE" || w[3] == "UNLCK");
        if breaking {
            return Err(format!(
                "holds a lease being broken ({} {}): dump it once the lease is settled",
                w[2], w[3]
            ));
        }
        let write = match w[3] {
            "WRITE" => true,
            "READ" => false,
            _ => return Err(bad()),
        };
        if kind == file_lock::Kind::Lease {
            held.desc.push(FileLock {
                kind: kind as i32,
                write,
                start: 0,
                len: 0,
            });
            continue;
        }
        let start: u64 = w[6].parse().map_err(|_| bad())?;
        let len = if w[7] == "EOF" {
            0
        } else {
            let end: u64 = w[7].parse().map_err(|_| bad())?;
            end.checked_sub(start).ok_or_else(bad)? + 1
        };
        let lock = FileLock {
            kind: kind as i32,
            write,
            start,
            len,
        };
        if kind == file_lock::Kind::Posix {
            held.posix.push(lock);
        } else {
            held.desc.push(lock);
        }
    }
    Ok(held)
}

/// Takes the flock and OFD locks of a description on `fd`, crust's copy of it (not its
/// lease: see [`plan`]).
pub(crate) fn restore_on_description(
    fd: &OwnedFd,
    path: &str,
    locks: &[FileLock],
) -> Result<(), RestoreError> {
    for l in locks {
        let err = |source| RestoreError::File {
            path: format!("{path} (taking its lock back)"),
            source,
        };
        match l.kind() {
            file_lock::Kind::Flock => {
                let op = if l.write {
                    libc::LOCK_EX
                } else {
                    libc::LOCK_SH
                };
                crate::sys::fileops::flock(fd, op | libc::LOCK_NB).map_err(err)?;
            }
            file_lock::Kind::Ofd => {
                crate::sys::fileops::ofd_setlk(fd, l.write, l.start as i64, l.len as i64)
                    .map_err(err)?;
            }
            // Leases are taken by the task itself ([`restore_posix`]): F_SETLEASE records
            // the caller as the lease's pid and as the owner its break signal goes to.
            file_lock::Kind::Lease | file_lock::Kind::Posix => {}
        }
    }
    Ok(())
}

/// The locks of `path` are left out: the restore was not given `--file-locks`.
pub(crate) fn warn_skipped(path: &str) {
    crate::warn!("{path}: its locks are not taken again (restore without --file-locks)");
}

/// Restore-side planning of the locks, before anything is created: without `--file-locks`
/// the tasks' POSIX locks are dropped (with a warning; [`super::open_all`] leaves out those
/// of descriptions); with it, each lease is also given to the first descriptor that holds
/// its description, for the task to take it again in [`restore_posix`].
pub(crate) fn plan<'a>(
    files: &[FileEntry],
    file_locks: bool,
    fdinfos: impl Iterator<Item = &'a mut Vec<FdinfoEntry>>,
) {
    let mut leases: std::collections::HashMap<u32, FileLock> = files
        .iter()
        .filter_map(|f| match &f.kind {
            Some(file_entry::Kind::Reg(r)) => r
                .locks
                .iter()
                .find(|l| l.kind() == file_lock::Kind::Lease)
                .map(|l| (f.id, *l)),
            _ => None,
        })
        .collect();
    for fdinfo in fdinfos {
        for e in fdinfo.iter_mut() {
            if !file_locks {
                if !e.posix_locks.is_empty() {
                    warn_skipped(&format!("fd {} (POSIX locks)", e.fd));
                    e.posix_locks.clear();
                }
                continue;
            }
            if let Some(l) = leases.remove(&e.id) {
                e.posix_locks.push(l);
            }
        }
    }
}

/// `struct flock` for x86-64: l_type, l_whence (i16 each), l_start, l_len (i64), l_pid.
fn flock_bytes(l: &FileLock) -> [u8; 32] {
    let mut b = [0u8; 32];
    let ty = if l.write {
        libc::F_WRLCK
    } else {
        libc::F_RDLCK
    } as i16;
    b[0..2].copy_from_slice(&ty.to_ne_bytes());
    b[2..4].copy_from_slice(&(libc::SEEK_SET as i16).to_ne_bytes());
    b[8..16].copy_from_slice(&(l.start as i64).to_ne_bytes());
    b[16..24].copy_from_slice(&(l.len as i64).to_ne_bytes());
    b
}

/// Takes the task's POSIX locks and leases back: `fcntl(fd, F_SETLK, &flock)` and
/// `fcntl(fd, F_SETLEASE, type)`, queued in `q` for the task `t` to run.
pub(crate) fn restore_posix(
    t: &mut Tracee,
    pid: i32,
    q: &mut Queue,
    fdinfo: &[FdinfoEntry],
) -> Result<(), RestoreError> {
    for e in fdinfo {
        for l in &e.posix_locks {
            if l.kind() == file_lock::Kind::Lease {
                let ty = if l.write {
                    libc::F_WRLCK
                } else {
                    libc::F_RDLCK
                };
                q.push(
                    t,
                    pid,
                    libc::SYS_fcntl,
                    [e.fd as u64, libc::F_SETLEASE as u64, ty as u64, 0, 0, 0],
                    || format!("fd {}: lease", e.fd),
                )?;
                continue;
            }
            let at = q.arg(t, pid, &flock_bytes(l))?;
            q.push(
                t,
                pid,
                libc::SYS_fcntl,
                [e.fd as u64, libc::F_SETLK as u64, at, 0, 0, 0],
                || format!("fd {}: POSIX lock {}+{}", e.fd, l.start, l.len),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_lines() {
        let text = "pos:\t0\nflags:\t02100001\nmnt_id:\t27\nino:\t10011451\n\
                    lock:\t1: FLOCK  ADVISORY  WRITE 11641 fe:00:10011451 0 EOF\n\
                    lock:\t2: POSIX  ADVISORY  READ 11641 fe:00:10011451 5 14\n\
                    lock:\t3: OFDLCK ADVISORY  WRITE -1 fe:00:10011451 100 EOF\n";
        let h = parse(text).unwrap();
        assert_eq!(h.desc.len(), 2);
        assert_eq!(h.desc[0].kind(), file_lock::Kind::Flock);
        assert!(h.desc[0].write);
        assert_eq!(h.desc[1].kind(), file_lock::Kind::Ofd);
        assert_eq!((h.desc[1].start, h.desc[1].len), (100, 0));
        assert_eq!(h.posix.len(), 1);
        assert_eq!(
            (h.posix[0].start, h.posix[0].len, h.posix[0].write),
            (5, 10, false)
        );
        let lease = parse("lock:\t1: LEASE  ACTIVE    WRITE 1 fe:00:1 0 EOF\n").unwrap();
        assert_eq!(lease.desc.len(), 1);
        assert_eq!(lease.desc[0].kind(), file_lock::Kind::Lease);
        assert!(lease.desc[0].write && lease.posix.is_empty());
        for breaking in [
            "lock:\t1: LEASE  BREAKING  READ 1 fe:00:1 0 EOF\n",
            "lock:\t1: LEASE  ACTIVE    UNLCK 1 fe:00:1 0 EOF\n",
            "lock:\t1: LEASE  BREAKER   READ 1 fe:00:1 0 EOF\n",
        ] {
            assert!(
                parse(breaking).unwrap_err().contains("being broken"),
                "{breaking}"
            );
        }
        assert!(parse("lock:\t1: DELEG  ACTIVE    READ 1 fe:00:1 0 EOF\n")
            .unwrap_err()
            .contains("DELEG"));
        assert!(parse("lock:\t1: POSIX  ADVISORY  WRITE 1 fe:00:1 9 3\n").is_err());
        assert_eq!(parse("pos:\t0\n").unwrap(), Held::default());
    }

    #[test]
    fn flock_struct_layout() {
        let b = flock_bytes(&FileLock {
            kind: file_lock::Kind::Posix as i32,
            write: true,
            start: 5,
            len: 10,
        });
        assert_eq!(i16::from_ne_bytes([b[0], b[1]]), libc::F_WRLCK as i16);
        assert_eq!(i64::from_ne_bytes(b[8..16].try_into().unwrap()), 5);
        assert_eq!(i64::from_ne_bytes(b[16..24].try_into().unwrap()), 10);
    }
}
