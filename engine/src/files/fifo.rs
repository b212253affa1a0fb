//! Named pipes (FIFOs): reopened by path with their access mode, their queue saved and
//! refilled like a pipe's.
//!
//! Opening a fifo blocks until the other side shows up (or fails with ENXIO for a
//! non-blocking writer), so restore first opens it `O_RDWR` itself: that helper is both a
//! reader and a writer, every saved description then opens at once (non-blocking, its own
//! flags set afterwards), the queue is refilled through the helper, and the helper goes. An
//! unlinked fifo is made again with `mknod` and unlinked once its descriptions are open.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use images::pb::{FifoFile, PipeData};

use super::data::{DataReader, DataWriter};
use super::ghost::Placed;
use super::Desc;
use crate::error::{DumpError, RestoreError};
use crate::sys;

pub(crate) fn dump(
    d: &Desc<'_>,
    queues: &mut HashSet<(bool, u64)>,
    pipes: &mut Vec<PipeData>,
    data: &mut DataWriter,
) -> Result<FifoFile, DumpError> {
    let (path, unlinked) = match d.target.strip_suffix(" (deleted)") {
        Some(p) => (p, true),
        None => (d.target, false),
    };
    if !unlinked {
        match std::fs::metadata(path) {
            Ok(now) if now.dev() == d.md.dev() && now.ino() == d.md.ino() => {}
            _ => return Err(d.unsupported("its path now names another file")),
        }
    }
    let ino = d.md.ino();
    if queues.insert((true, ino)) {
        pipes.push(super::pipe::save_queue(d, true, data)?);
    }
    Ok(FifoFile {
        path: path.to_string(),
        flags: d.info.flags & !(libc::O_CLOEXEC as u32),
        fifo_ino: ino,
        mode: d.md.mode(),
        unlinked,
    })
}

/// Opens every description of one fifo, its queue refilled.
pub(crate) fn open(
    descs: &[(u32, &FifoFile)],
    queue: Option<&PipeData>,
    data: &mut DataReader,
    image: &Path,
) -> Result<Vec<(u32, OwnedFd)>, RestoreError> {
    let Some((_, first)) = descs.first() else {
        return Ok(Vec::new());
    };
    let err = |what: &str, source| RestoreError::File {
        path: format!("{} (fifo: {what})", first.path),
        source,
    };
    let placed = if first.unlinked {
        Some(
            Placed::make(Path::new(&first.path), first.fifo_ino as u32, false, |at| {
                let c = CString::new(at.as_os_str().as_bytes())
                    .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
                sys::fileops::mkfifo(&c, first.mode)
            })
            .map_err(|e| err("mknod", e))?,
        )
    } else {
        None
    };
    let at = placed
        .as_ref()
        .map_or_else(|| Path::new(&first.path).to_owned(), |p| p.at.clone());
    let c = CString::new(at.as_os_str().as_bytes())
        .map_err(|_| err("path", std::io::Error::from_raw_os_error(libc::EINVAL)))?;
    let md = std::fs::metadata(&at).map_err(|e| err("stat", e))?;
    if !md.file_type().is_fifo() {
        return Err(err("stat", std::io::Error::other("not a fifo any more")));
    }
    let helper = sys::open(&c, libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .map_err(|e| err("open", e))?;
    let mut out = Vec::new();
    for &(id, f) in descs {
        let flags = super::reopen_flags(f.flags);
        let fd = sys::open(&c, flags | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .map_err(|e| err("open", e))?;
        sys::set_status_flags(&fd, flags & !libc::O_ACCMODE).map_err(|e| err("F_SETFL", e))?;
        out.push((id, fd));
    }
    if let Some(q) = queue {
        super::pipe::refill(q, &helper, &first.path, data, image)?;
    }
    drop(helper);
    if let Some(p) = placed {
        p.finish().map_err(|e| err("unlink", e))?;
    }
    Ok(out)
}
