//! Pipes: both ends, capacity and the bytes queued in them; pipes leading out of the tree.
//!
//! Queued data is peeked without consuming it: crust opens a second read end through
//! `/proc/PID/fd/N`, `tee(2)`s the queue into a private pipe and `splice(2)`s that into
//! `files-data.img`, so the bytes never pass through crust's memory; restore splices them
//! back into the new pipe.
//!
//! A pipe one of whose ends a process outside the dumped tree holds (found by scanning
//! `/proc/*/fd` once, when the first pipe shows up) cannot be recreated: the outsider would
//! keep the old pipe. Such a dump fails naming the pipe and the holder, unless the pipe is
//! named with `--external pipe[INO]` (CRIU's `--external` syntax); then its queue is left
//! alone (it lives on in the outside end) and restore needs `--inherit-fd fd[N]:pipe:[INO]`:
//! crust's own fd N, an end of the pipe the restored tree is to use.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use images::pb::{PipeData, PipeEnd};

use super::data::{DataReader, DataWriter};
use super::{Desc, RestoreCtx};
use crate::error::{DumpError, RestoreError};
use crate::sys;

/// Parses `pipe[INO]` or `pipe:[INO]` (`--external`).
pub(crate) fn parse_external(spec: &str) -> Result<u64, DumpError> {
    spec.strip_prefix("pipe:[")
        .or_else(|| spec.strip_prefix("pipe["))
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| DumpError::BadOption {
            option: format!("--external {spec}"),
            why: "expected pipe[INO] (the inode /proc/PID/fd shows as pipe:[INO])".into(),
        })
}

/// The inode of `pipe:[INO]`.
pub(crate) fn pipe_ino(target: &str) -> Option<u64> {
    target
        .strip_prefix("pipe:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Who outside the tree holds which pipe, read once from `/proc/*/fd`.
pub(crate) struct Outside {
    tree: HashSet<i32>,
    external: HashSet<u64>,
    holders: Option<HashMap<u64, (i32, i32)>>,
}

impl Outside {
    pub(crate) fn new(tree: HashSet<i32>, external: HashSet<u64>) -> Outside {
        Outside {
            tree,
            external,
            holders: None,
        }
    }

    /// The first process outside the tree (and not crust) holding pipe `ino`, and its fd.
    fn holder(&mut self, ino: u64) -> Option<(i32, i32)> {
        let tree = &self.tree;
        self.holders
            .get_or_insert_with(|| scan_outside(tree))
            .get(&ino)
            .copied()
    }
}

fn scan_outside(tree: &HashSet<i32>) -> HashMap<u64, (i32, i32)> {
    let me = std::process::id() as i32;
    let mut out = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me || tree.contains(&pid) {
            continue;
        }
        // Processes come and go while we look: whatever cannot be read is not holding.
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for f in fds.flatten() {
            let Some(fd) = f.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Some(ino) = std::fs::read_link(f.path())
                .ok()
                .and_then(|t| pipe_ino(&t.to_string_lossy()))
            {
                out.entry(ino).or_insert((pid, fd));
            }
        }
    }
    out
}

/// Saves the queue of the pipe (or fifo) behind `d` into `data`: a private pipe as large as
/// it gets a `tee` of it (the queue is frozen, so one call takes all), and is spliced into the
/// image.
pub(crate) fn save_queue(
    d: &Desc<'_>,
    fifo: bool,
    data: &mut DataWriter,
) -> Result<PipeData, DumpError> {
    let src = sys::open(
        &std::ffi::CString::new(d.link).expect("no NUL in a /proc path"),
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
    )
    .map_err(|e| d.io("open a reader", e))?;
    let size = sys::pipe_size(src.as_raw_fd()).map_err(|e| d.io("F_GETPIPE_SZ", e))?;
    let (peek_r, peek_w) = sys::pipe_cloexec().map_err(|e| d.io("pipe", e))?;
    sys::set_pipe_size(peek_w.as_raw_fd(), size).map_err(|e| d.io("F_SETPIPE_SZ", e))?;
    let queued = match sys::tee(src.as_raw_fd(), peek_w.as_raw_fd(), size as usize) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => 0,
        Err(e) => return Err(d.io("tee", e)),
    };
    drop(peek_w);
    let range = data
        .save_pipe(peek_r.as_raw_fd(), queued)
        .map_err(|e| d.io("splice into files-data.img", e))?;
    Ok(PipeData {
        pipe_ino: d.md.ino(),
        size: size as u32,
        range: Some(range),
        fifo,
        ..Default::default()
    })
}

pub(crate) fn dump(
    d: &Desc<'_>,
    outside: &mut Outside,
    queues: &mut HashSet<(bool, u64)>,
    pipes: &mut Vec<PipeData>,
    data: &mut DataWriter,
) -> Result<PipeEnd, DumpError> {
    let ino = d.md.ino();
    let write_end = d.info.flags & libc::O_ACCMODE as u32 == libc::O_WRONLY as u32;
    let mut end = PipeEnd {
        pipe_ino: ino,
        flags: d.info.flags & !(libc::O_CLOEXEC as u32),
        write_end,
        external: false,
    };
    if let Some((holder, holder_fd)) = outside.holder(ino) {
        if !outside.external.contains(&ino) {
            return Err(DumpError::ExternalPipe {
                pid: d.pid,
                fd: d.fd,
                ino,
                holder,
                holder_fd,
            });
        }
        end.external = true;
        return Ok(end);
    }
    if queues.insert((false, ino)) {
        pipes.push(save_queue(d, false, data)?);
    }
    Ok(end)
}

/// Refills a new pipe (or fifo) through its write side `w` with a saved queue.
pub(crate) fn refill(
    q: &PipeData,
    w: &OwnedFd,
    what: &str,
    data: &mut DataReader,
    image: &std::path::Path,
) -> Result<(), RestoreError> {
    let err = |op: &str, source| RestoreError::File {
        path: format!("{what} ({op})"),
        source,
    };
    if q.size > 0 {
        sys::set_pipe_size(w.as_raw_fd(), q.size as i32).map_err(|e| err("F_SETPIPE_SZ", e))?;
    }
    let queued = q.range.as_ref().map_or(q.data.len() as u64, |r| r.len);
    if queued > u64::from(q.size.max(65536)) {
        return Err(RestoreError::BadImage {
            image: image.to_owned(),
            what: format!(
                "{what} holds {queued} bytes, more than its capacity {}",
                q.size
            ),
        });
    }
    match &q.range {
        Some(r) => data.fill_pipe(r, w.as_raw_fd(), what)?,
        None if !q.data.is_empty() => {
            use std::io::Write;
            let mut f = std::fs::File::from(w.try_clone().map_err(|e| err("dup", e))?);
            f.write_all(&q.data).map_err(|e| err("refill", e))?;
        }
        None => {}
    }
    Ok(())
}

/// Creates the pipe `ino` in crust with its capacity and queued data, and returns one
/// descriptor per saved description of it (by file id), with its status flags. An external
/// pipe comes from `--inherit-fd` instead.
pub(crate) fn open(
    ino: u64,
    ends: &[(u32, &PipeEnd)],
    queue: Option<&PipeData>,
    ctx: &RestoreCtx,
    data: &mut DataReader,
    image: &std::path::Path,
) -> Result<Vec<(u32, OwnedFd)>, RestoreError> {
    let what = format!("pipe:[{ino}]");
    let err = |op: &str, source| RestoreError::File {
        path: format!("{what} ({op})"),
        source,
    };
    let inherited = ctx.inherit.get(&what).copied();
    let external = ends.iter().any(|(_, e)| e.external);
    if external && inherited.is_none() {
        return Err(RestoreError::External { what });
    }
    // Which side (if any) is the inherited description itself, whose flags are its owner's.
    let mut kept_side = None;
    let (r, w): (OwnedFd, OwnedFd) = match inherited {
        Some(fd) => {
            // Both sides from crust's fd: the same description for its own access mode, a
            // new description of the same pipe (through /proc) for the other.
            let mode = sys::fileops::fcntl_int(fd, libc::F_GETFL, 0)
                .map_err(|e| err("F_GETFL", e))?
                & libc::O_ACCMODE;
            let dup =
                || sys::fileops::dup_cloexec(fd).map_err(|e| err("dup of the inherited fd", e));
            let other = |m| super::reopen(fd, m | libc::O_NONBLOCK).map_err(|e| err("reopen", e));
            if mode == libc::O_WRONLY {
                kept_side = Some(true);
                (other(libc::O_RDONLY)?, dup()?)
            } else {
                kept_side = Some(false);
                (dup()?, other(libc::O_WRONLY)?)
            }
        }
        None => sys::pipe_cloexec().map_err(|e| err("pipe", e))?,
    };
    if let (Some(q), None) = (queue, inherited) {
        refill(q, &w, &what, data, image)?;
    }
    let mut out = Vec::new();
    let mut first_read = true;
    let mut first_write = true;
    for &(id, end) in ends {
        let first = if end.write_end {
            &mut first_write
        } else {
            &mut first_read
        };
        let base = if end.write_end { &w } else { &r };
        // A second description of the same end: open the pipe again through /proc.
        let kept = *first && kept_side == Some(end.write_end);
        let fd = if *first {
            *first = false;
            base.try_clone().map_err(|e| err("dup", e))?
        } else {
            let mode = if end.write_end {
                libc::O_WRONLY
            } else {
                libc::O_RDONLY
            };
            super::reopen(base.as_raw_fd(), mode | libc::O_NONBLOCK)
                .map_err(|e| err("reopen", e))?
        };
        // An inherited description keeps the flags its owner gave it.
        if !kept {
            sys::set_status_flags(&fd, super::reopen_flags(end.flags) & !libc::O_ACCMODE)
                .map_err(|e| err("F_SETFL", e))?;
        }
        out.push((id, fd));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_specs() {
        assert_eq!(parse_external("pipe[42]").unwrap(), 42);
        assert_eq!(parse_external("pipe:[42]").unwrap(), 42);
        for bad in ["pipe[]", "pipe[x]", "file[1:2]", "pipe:42"] {
            assert!(
                matches!(parse_external(bad), Err(DumpError::BadOption { .. })),
                "{bad}"
            );
        }
        assert_eq!(pipe_ino("pipe:[7]"), Some(7));
        assert_eq!(pipe_ino("/tmp/pipe:[7]"), None);
    }
}
