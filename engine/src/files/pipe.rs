//! Pipes: both ends, capacity and the bytes queued in them.
//!
//! Queued data is peeked without consuming it: crust opens a second read end through
//! `/proc/PID/fd/N` and `tee(2)`s its contents into a private pipe, then reads that.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use images::pb::{file_entry, FdinfoEntry, FileEntry, PipeData, PipeEnd};

use super::FdOp;
use crate::error::{DumpError, RestoreError};
use crate::proc::FdInfo;
use crate::sys::{self, child};

pub(crate) fn dump(
    pid: i32,
    fd: i32,
    target: &str,
    md: &std::fs::Metadata,
    info: &FdInfo,
) -> Result<(PipeEnd, Option<PipeData>), DumpError> {
    let io = |what: &str, source| DumpError::Io {
        pid,
        path: format!("fd {fd} ({target}): {what}").into(),
        source,
    };
    let write_end = info.flags & libc::O_ACCMODE as u32 == libc::O_WRONLY as u32;
    let end = PipeEnd {
        pipe_ino: md.ino(),
        flags: info.flags & !(libc::O_CLOEXEC as u32),
        write_end,
    };
    let link = format!("/proc/{pid}/fd/{fd}");
    let src = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags_nonblock()
        .open(&link)
        .map_err(|e| io("open a reader", e))?;
    let size = sys::pipe_size(src.as_raw_fd()).map_err(|e| io("F_GETPIPE_SZ", e))?;
    let (peek_r, peek_w) = sys::pipe_cloexec().map_err(|e| io("pipe", e))?;
    sys::set_pipe_size(peek_w.as_raw_fd(), size).map_err(|e| io("F_SETPIPE_SZ", e))?;
    let mut data = Vec::new();
    // The queue is frozen, so one tee copies all of it.
    match sys::tee(src.as_raw_fd(), peek_w.as_raw_fd(), size as usize) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
        Err(e) => return Err(io("tee", e)),
    }
    drop(peek_w);
    use std::io::Read;
    let mut r = std::fs::File::from(peek_r);
    r.read_to_end(&mut data)
        .map_err(|e| io("read peeked data", e))?;
    Ok((
        end,
        Some(PipeData {
            pipe_ino: md.ino(),
            size: size as u32,
            data,
        }),
    ))
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}
impl NonBlock for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK)
    }
}

/// Plans the creation of the pipe `end` belongs to, with both of its ends in this task.
pub(crate) fn plan(
    end: &PipeEnd,
    fdinfo: &[FdinfoEntry],
    files: &[FileEntry],
    pipes: &[PipeData],
    image: &std::path::Path,
) -> Result<FdOp, RestoreError> {
    let mut read = (-1, 0);
    let mut write = (-1, 0);
    for e in fdinfo {
        let Some(f) = files.iter().find(|f| f.id == e.id) else {
            continue;
        };
        if let Some(file_entry::Kind::Pipe(p)) = &f.kind {
            if p.pipe_ino != end.pipe_ino {
                continue;
            }
            let slot = if p.write_end { &mut write } else { &mut read };
            if slot.0 < 0 {
                *slot = (e.fd as i32, super::reopen_flags(p.flags));
            }
        }
    }
    let data = pipes.iter().find(|d| d.pipe_ino == end.pipe_ino);
    let (size, data) = match data {
        Some(d) => (d.size as i32, d.data.clone()),
        None => (0, Vec::new()),
    };
    if data.len() > size.max(0) as usize && size > 0 {
        return Err(RestoreError::BadImage {
            image: image.to_owned(),
            what: format!(
                "pipe:[{}] holds {} bytes, more than its capacity {size}",
                end.pipe_ino,
                data.len()
            ),
        });
    }
    Ok(FdOp::Pipe {
        read_fd: read.0,
        write_fd: write.0,
        read_flags: read.1,
        write_flags: write.1,
        size,
        data,
    })
}

/// Creates the pipe in the restore child. Allocation-free.
pub(crate) fn run_in_child(
    read_fd: i32,
    write_fd: i32,
    read_flags: i32,
    write_flags: i32,
    size: i32,
    data: &[u8],
) -> child::Raw {
    let [r, w] = child::pipe()?;
    if size > 0 {
        child::fcntl(w, libc::F_SETPIPE_SZ, size as i64)?;
    }
    child::write_all(w, data)?;
    // Move both ends out of the way first, so placing one cannot clobber the other.
    let hi = read_fd.max(write_fd).max(r).max(w) + 1;
    let r2 = child::dup_above(r, hi)? as i32;
    let w2 = child::dup_above(w, hi)? as i32;
    child::close(r)?;
    child::close(w)?;
    for (got, want, flags) in [(r2, read_fd, read_flags), (w2, write_fd, write_flags)] {
        if want < 0 {
            child::close(got)?;
            continue;
        }
        child::dup2(got, want)?;
        child::close(got)?;
        // dup2 clears FD_CLOEXEC; status flags (O_NONBLOCK...) come from the dumped end.
        child::fcntl(want, libc::F_SETFL, (flags & !libc::O_ACCMODE) as i64)?;
    }
    Ok(0)
}
