//! Regular files, directories and the memory character devices, opened by path.

use std::ffi::CString;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use images::pb::RegFile;

use crate::error::{DumpError, RestoreError};
use crate::proc::FdInfo;
use std::os::fd::OwnedFd;

/// /dev/null, /dev/zero, /dev/full, /dev/random, /dev/urandom: major 1, and stateless.
fn is_mem_device(md: &std::fs::Metadata) -> bool {
    let rdev = md.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    major == 1 && matches!(minor, 3 | 5 | 7 | 8 | 9)
}

/// Terminals: pseudo-terminal slaves (major 136..143), virtual consoles and serial lines
/// (major 4), /dev/tty and /dev/console (major 5).
pub(crate) fn is_tty(md: &std::fs::Metadata) -> bool {
    let major = libc::major(md.rdev());
    md.file_type().is_char_device() && ((136..=143).contains(&major) || major == 4 || major == 5)
}

/// The terminal crust itself runs on (its first standard fd that is one), for `--shell-job`.
pub(crate) fn own_terminal() -> Option<String> {
    (0..3).find_map(|fd| {
        let link = format!("/proc/self/fd/{fd}");
        let md = std::fs::metadata(&link).ok()?;
        if is_tty(&md) {
            std::fs::read_link(&link)
                .ok()
                .map(|p| p.to_string_lossy().into_owned())
        } else {
            None
        }
    })
}

pub(crate) fn dump(
    shell_job: bool,
    pid: i32,
    fd: i32,
    target: &str,
    link: &str,
    md: &std::fs::Metadata,
    info: &FdInfo,
) -> Result<RegFile, DumpError> {
    let unsupported = |why: Option<String>| DumpError::UnsupportedFd {
        pid,
        fd,
        target: target.to_string(),
        why,
    };
    let ft = md.file_type();
    if is_tty(md) && !shell_job {
        return Err(unsupported(Some(
            "a terminal outside the dumped tree: use --shell-job".into(),
        )));
    }
    if ft.is_char_device() && !is_mem_device(md) && !is_tty(md) {
        return Err(unsupported(Some("character device".into())));
    }
    if !(ft.is_file() || ft.is_dir() || ft.is_char_device()) {
        return Err(unsupported(None));
    }
    if !target.starts_with('/') {
        return Err(unsupported(None));
    }
    if target.ends_with(" (deleted)") {
        return Err(unsupported(Some("the file is deleted".into())));
    }
    match std::fs::metadata(target) {
        Ok(now) if now.dev() == md.dev() && now.ino() == md.ino() => {}
        _ => return Err(unsupported(Some("its path now names another file".into()))),
    }
    let file = crate::mm::file_id(target, link).map_err(|source| DumpError::Io {
        pid,
        path: link.into(),
        source,
    })?;
    Ok(RegFile {
        path: target.to_string(),
        flags: info.flags & !(libc::O_CLOEXEC as u32),
        pos: info.pos,
        file: Some(file),
    })
}

/// Opens the description in crust: same path, flags and offset.
pub(crate) fn open(r: &RegFile, shell_job: bool) -> Result<OwnedFd, RestoreError> {
    let saved_tty =
        r.path.starts_with("/dev/pts/") || std::fs::metadata(&r.path).is_ok_and(|md| is_tty(&md));
    // A shell job's terminal is the one `crust restore` runs on, not the dumped one.
    let path = if saved_tty && shell_job {
        own_terminal().ok_or_else(|| RestoreError::File {
            path: r.path.clone(),
            source: std::io::Error::other("--shell-job, but crust runs on no terminal"),
        })?
    } else {
        r.path.clone()
    };
    let file_err = |source| RestoreError::File {
        path: path.clone(),
        source,
    };
    let mut flags = super::reopen_flags(r.flags);
    if saved_tty {
        flags |= libc::O_NOCTTY;
    }
    let md = std::fs::metadata(&path).map_err(file_err)?;
    // A file opened for reading only must still be the file that was dumped; one opened for
    // writing may legitimately have been changed by its writer.
    if let Some(id) = &r.file {
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if md.is_file() && !writable && md.size() != id.size {
            return Err(RestoreError::FileChanged {
                path: r.path.clone(),
                what: format!("size {} at dump, {} now", id.size, md.size()),
            });
        }
    }
    let c = CString::new(path.as_bytes())
        .map_err(|_| file_err(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
    let fd = crate::sys::open(&c, flags | libc::O_CLOEXEC).map_err(file_err)?;
    let seekable = md.is_file() || md.is_dir();
    if seekable && r.pos != 0 && flags & libc::O_PATH == 0 {
        crate::sys::seek(&fd, r.pos).map_err(file_err)?;
    }
    Ok(fd)
}
