//! Pipes: both ends, capacity and the bytes queued in them.
//!
//! Queued data is peeked without consuming it: crust opens a second read end through
//! `/proc/PID/fd/N` and `tee(2)`s its contents into a private pipe, then reads that.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use std::os::fd::OwnedFd;

use images::pb::{PipeData, PipeEnd};

use crate::error::{DumpError, RestoreError};
use crate::proc::FdInfo;
use crate::sys;

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

/// Creates the pipe `ino` in crust with its capacity and queued data, and returns one
/// descriptor per saved description of it (by file id), with its status flags.
pub(crate) fn open(
    ino: u64,
    ends: &[(u32, &PipeEnd)],
    data: Option<&PipeData>,
    image: &std::path::Path,
) -> Result<Vec<(u32, OwnedFd)>, RestoreError> {
    let err = |what: &str, source| RestoreError::File {
        path: format!("pipe:[{ino}] ({what})"),
        source,
    };
    let (r, w) = sys::pipe_cloexec().map_err(|e| err("pipe", e))?;
    if let Some(d) = data {
        if d.size > 0 {
            sys::set_pipe_size(w.as_raw_fd(), d.size as i32).map_err(|e| err("F_SETPIPE_SZ", e))?;
        }
        if d.data.len() > d.size.max(65536) as usize {
            return Err(RestoreError::BadImage {
                image: image.to_owned(),
                what: format!(
                    "pipe:[{ino}] holds {} bytes, more than its capacity {}",
                    d.data.len(),
                    d.size
                ),
            });
        }
        let mut f = std::fs::File::from(w.try_clone().map_err(|e| err("dup", e))?);
        use std::io::Write;
        f.write_all(&d.data).map_err(|e| err("refill", e))?;
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
        let fd = if *first {
            *first = false;
            base.try_clone().map_err(|e| err("dup", e))?
        } else {
            let mode = if end.write_end {
                libc::O_WRONLY
            } else {
                libc::O_RDONLY
            };
            let path = std::ffi::CString::new(format!("/proc/self/fd/{}", base.as_raw_fd()))
                .expect("no NUL");
            sys::open(&path, mode | libc::O_NONBLOCK | libc::O_CLOEXEC)
                .map_err(|e| err("reopen", e))?
        };
        sys::set_status_flags(&fd, super::reopen_flags(end.flags) & !libc::O_ACCMODE)
            .map_err(|e| err("F_SETFL", e))?;
        out.push((id, fd));
    }
    Ok(out)
}
