//! memfds (`memfd_create(2)`, Linux 3.17): name, contents, size, mode and seals.
//!
//! `/proc/PID/fd/N` shows one as `/memfd:NAME (deleted)`. Contents are read through
//! `/proc/PID/fd/N` (a new description of the same inode) into `files-data.img`; restore
//! creates a memfd of the same name with sealing allowed, fills it, sets size and mode, opens
//! any further description of it through `/proc/self/fd`, and adds the seals last (a memfd
//! made without `MFD_ALLOW_SEALING` reports `F_SEAL_SEAL`, which this reproduces).

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use images::pb::MemfdFile;

use super::data::{DataReader, DataWriter};
use super::Desc;
use crate::error::{DumpError, RestoreError};
use crate::sys::{self, fileops};

/// The name of a memfd, from what `/proc/PID/fd/N` shows.
fn memfd_name(target: &str) -> Option<&str> {
    target.strip_prefix("/memfd:")?.strip_suffix(" (deleted)")
}

pub(crate) fn is_memfd(d: &Desc<'_>) -> bool {
    d.md.is_file() && memfd_name(d.target).is_some() && d.md.nlink() == 0
}

pub(crate) fn dump(
    d: &Desc<'_>,
    seen: &mut HashMap<u64, MemfdFile>,
    data: &mut DataWriter,
) -> Result<MemfdFile, DumpError> {
    let name = memfd_name(d.target).unwrap_or_default();
    let ino = d.md.ino();
    let base = match seen.get(&ino) {
        Some(m) => m.clone(),
        None => {
            let src = sys::open(
                &CString::new(d.link).expect("no NUL in a /proc path"),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
            .map_err(|e| d.io("open the memfd", e))?;
            let seals = fileops::fcntl_int(src.as_raw_fd(), libc::F_GET_SEALS, 0)
                .map_err(|e| d.io("F_GET_SEALS", e))?;
            let size = d.md.size();
            let range = data
                .save_file(src.as_raw_fd(), size)
                .map_err(|e| d.io("save the memfd", e))?;
            let m = MemfdFile {
                ino,
                name: name.to_string(),
                size,
                seals: seals as u32,
                mode: d.md.mode(),
                data: Some(range),
                ..Default::default()
            };
            seen.insert(ino, m.clone());
            m
        }
    };
    Ok(MemfdFile {
        flags: d.info.flags & !(libc::O_CLOEXEC as u32),
        pos: d.info.pos,
        ..base
    })
}

/// Creates one memfd and opens each of its saved descriptions.
pub(crate) fn open(
    descs: &[(u32, &MemfdFile)],
    data: &mut DataReader,
) -> Result<Vec<(u32, OwnedFd)>, RestoreError> {
    let Some((_, m)) = descs.first() else {
        return Ok(Vec::new());
    };
    let what = format!("memfd:{}", m.name);
    let err = |op: &str, source| RestoreError::File {
        path: format!("{what} ({op})"),
        source,
    };
    let name = CString::new(m.name.as_bytes())
        .map_err(|_| err("name", std::io::Error::from_raw_os_error(libc::EINVAL)))?;
    let mfd = fileops::memfd_create(&name, libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        .map_err(|e| err("memfd_create", e))?;
    if let Some(r) = &m.data {
        data.copy_to_file(r, mfd.as_raw_fd(), &what)?;
    }
    fileops::ftruncate(&mfd, m.size).map_err(|e| err("ftruncate", e))?;
    let md_uid = std::fs::metadata(format!("/proc/self/fd/{}", mfd.as_raw_fd()))
        .map_err(|e| err("stat", e))?;
    fileops::fchown_fchmod(&mfd, md_uid.uid(), md_uid.gid(), m.mode)
        .map_err(|e| err("fchmod", e))?;
    let mut out = Vec::new();
    for &(id, d) in descs {
        let flags = super::reopen_flags(d.flags);
        let fd = super::reopen(mfd.as_raw_fd(), flags).map_err(|e| err("reopen", e))?;
        if d.pos != 0 {
            sys::seek(&fd, d.pos).map_err(|e| err("lseek", e))?;
        }
        out.push((id, fd));
    }
    if m.seals != 0 {
        fileops::fcntl_int(mfd.as_raw_fd(), libc::F_ADD_SEALS, m.seals as i32)
            .map_err(|e| err("F_ADD_SEALS", e))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(memfd_name("/memfd:my mem (deleted)"), Some("my mem"));
        assert_eq!(memfd_name("/memfd:x"), None);
        assert_eq!(memfd_name("/tmp/memfd:x (deleted)"), None);
    }
}
