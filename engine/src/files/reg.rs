//! Regular files, directories, the memory character devices, and `O_PATH` descriptors
//! (symlinks included), opened again by path with their flags and offset.
//!
//! A file unlinked while open has no path to reopen: it goes to [`super::ghost`]. A regular
//! file must have the size it had at dump, or restore fails naming it (a changed file under a
//! restored offset is silent corruption); `--skip-file-validation` waives the check.

use std::ffi::CString;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use images::pb::RegFile;

use super::data::DataWriter;
use super::ghost::Ghosts;
use super::link_remap::Remaps;
use super::{Desc, RestoreCtx};
use crate::error::{DumpError, RestoreError};
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

/// Metadata of `path` itself when `md` is a symlink (an `O_PATH | O_NOFOLLOW` descriptor),
/// of what it names otherwise.
fn metadata_like(path: &str, md: &std::fs::Metadata) -> std::io::Result<std::fs::Metadata> {
    if md.file_type().is_symlink() {
        std::fs::symlink_metadata(path)
    } else {
        std::fs::metadata(path)
    }
}

pub(crate) fn dump(
    d: &Desc<'_>,
    shell_job: bool,
    ghosts: &mut Ghosts,
    remaps: &mut Remaps,
    data: &mut DataWriter,
) -> Result<RegFile, DumpError> {
    let md = d.md;
    let ft = md.file_type();
    let o_path = d.info.flags & libc::O_PATH as u32 != 0;
    if !o_path {
        if is_tty(md) && !shell_job {
            return Err(d.unsupported("a terminal outside the dumped tree: use --shell-job"));
        }
        if ft.is_char_device() && !is_mem_device(md) && !is_tty(md) {
            let rdev = md.rdev();
            return Err(d.unsupported(format!(
                "character device {}:{}; of devices only /dev/null, zero, full, random, urandom and terminals are",
                libc::major(rdev),
                libc::minor(rdev)
            )));
        }
        if !(ft.is_file() || ft.is_dir() || ft.is_char_device()) {
            return Err(DumpError::UnsupportedFd {
                pid: d.pid,
                fd: d.fd,
                target: d.target.to_string(),
                why: None,
            });
        }
    }
    if !d.target.starts_with('/') {
        return Err(DumpError::UnsupportedFd {
            pid: d.pid,
            fd: d.fd,
            target: d.target.to_string(),
            why: None,
        });
    }
    let flags = d.info.flags & !(libc::O_CLOEXEC as u32);
    if let Some(path) = d.target.strip_suffix(" (deleted)") {
        if !(ft.is_file() || ft.is_dir()) {
            return Err(d.unsupported("unlinked, and not a regular file or directory"));
        }
        if let Some(remap) = remaps.link(d, path)? {
            let file = crate::mm::file_id(path, d.link).map_err(|source| DumpError::Io {
                pid: d.pid,
                path: d.link.into(),
                source,
            })?;
            return Ok(RegFile {
                path: path.to_string(),
                flags,
                pos: d.info.pos,
                file: Some(file),
                ghost: None,
                locks: Vec::new(),
                remap,
            });
        }
        let ghost = ghosts.dump(d, path, data)?;
        return Ok(RegFile {
            path: path.to_string(),
            flags,
            pos: d.info.pos,
            file: None,
            ghost: Some(ghost),
            locks: Vec::new(),
            remap: String::new(),
        });
    }
    match metadata_like(d.target, md) {
        Ok(now) if now.dev() == md.dev() && now.ino() == md.ino() => {}
        _ => return Err(d.unsupported("its path now names another file")),
    }
    let file = crate::mm::file_id(d.target, d.link).map_err(|source| DumpError::Io {
        pid: d.pid,
        path: d.link.into(),
        source,
    })?;
    Ok(RegFile {
        path: d.target.to_string(),
        flags,
        pos: d.info.pos,
        file: Some(file),
        ghost: None,
        locks: Vec::new(),
        remap: String::new(),
    })
}

/// Opens the description in crust: same path, flags and offset.
pub(crate) fn open(r: &RegFile, ctx: &RestoreCtx) -> Result<OwnedFd, RestoreError> {
    if let Some(fd) = ctx.inherited_path(&r.path) {
        return crate::sys::fileops::dup_cloexec(fd).map_err(|source| RestoreError::File {
            path: r.path.clone(),
            source,
        });
    }
    let o_path = r.flags & libc::O_PATH as u32 != 0;
    let saved_tty = !o_path
        && (r.path.starts_with("/dev/pts/")
            || std::fs::metadata(&r.path).is_ok_and(|md| is_tty(&md)));
    // A shell job's terminal is the one `crust restore` runs on, not the dumped one.
    let path = if saved_tty && ctx.shell_job {
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
    let nofollow = flags & libc::O_NOFOLLOW != 0;
    let md = if nofollow {
        std::fs::symlink_metadata(&path)
    } else {
        std::fs::metadata(&path)
    }
    .map_err(file_err)?;
    if let Some(id) = &r.file {
        if md.is_file() && md.size() != id.size && !ctx.skip_validation {
            return Err(RestoreError::FileChanged {
                path: r.path.clone(),
                what: format!(
                    "size {} at dump, {} now; --skip-file-validation restores it anyway",
                    id.size,
                    md.size()
                ),
            });
        }
    }
    let c = CString::new(path.as_bytes())
        .map_err(|_| file_err(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
    let fd = crate::sys::open(&c, flags | libc::O_CLOEXEC).map_err(file_err)?;
    seek_to(&fd, &md, r.pos, flags).map_err(file_err)?;
    Ok(fd)
}

/// Moves a reopened description to its saved offset (files and directories only).
pub(crate) fn seek_to(
    fd: &OwnedFd,
    md: &std::fs::Metadata,
    pos: u64,
    flags: i32,
) -> std::io::Result<()> {
    let seekable = md.is_file() || md.is_dir();
    if seekable && pos != 0 && flags & libc::O_PATH == 0 {
        crate::sys::seek(fd, pos)?;
    }
    Ok(())
}
