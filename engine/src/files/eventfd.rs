//! eventfds: the counter, semaphore mode and flags, from `/proc/PID/fdinfo/N`
//! (`eventfd-count`, in hex, and `eventfd-semaphore`, Linux 6.6).

use std::os::fd::{AsRawFd, OwnedFd};

use images::pb::EventfdFile;

use super::Desc;
use crate::error::{DumpError, RestoreError};

/// (counter, semaphore) from fdinfo text.
fn parse(text: &str) -> Option<(u64, bool)> {
    let mut count = None;
    let mut sem = false;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        match k.trim() {
            "eventfd-count" => count = u64::from_str_radix(v.trim(), 16).ok(),
            "eventfd-semaphore" => sem = v.trim() == "1",
            _ => {}
        }
    }
    Some((count?, sem))
}

pub(crate) fn dump(d: &Desc<'_>) -> Result<EventfdFile, DumpError> {
    let (count, semaphore) =
        parse(d.info_text).ok_or_else(|| d.unsupported("no eventfd-count in its fdinfo"))?;
    Ok(EventfdFile {
        count,
        flags: d.info.flags & !(libc::O_CLOEXEC as u32),
        semaphore,
    })
}

pub(crate) fn open(e: &EventfdFile) -> Result<OwnedFd, RestoreError> {
    let err = |source| RestoreError::File {
        path: "anon_inode:[eventfd]".into(),
        source,
    };
    let mut flags = libc::EFD_CLOEXEC;
    if e.semaphore {
        flags |= libc::EFD_SEMAPHORE;
    }
    if e.flags & libc::O_NONBLOCK as u32 != 0 {
        flags |= libc::EFD_NONBLOCK;
    }
    let fd = crate::sys::fileops::eventfd(flags).map_err(err)?;
    if e.count > 0 {
        // write(2) adds to the counter; it takes at most 0xffff_ffff_ffff_fffe.
        let n =
            crate::sys::fileops::write_once(fd.as_raw_fd(), &e.count.to_ne_bytes()).map_err(err)?;
        if n != 8 {
            return Err(err(std::io::Error::other("short write of the counter")));
        }
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_lines() {
        let t = "pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1038\neventfd-count:               1a\neventfd-id: 1\neventfd-semaphore: 1\n";
        assert_eq!(parse(t), Some((26, true)));
        assert_eq!(parse("eventfd-count: 0\n"), Some((0, false)));
        assert_eq!(parse("pos: 0\n"), None);
    }
}
