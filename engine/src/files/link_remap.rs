//! `--link-remap`: files that lost their name are linked back instead of copied.
//!
//! A file open under a name that no longer exists is either still linked elsewhere (another
//! hard link) or has no link at all. Copying it into the images ([`super::ghost`]) breaks the
//! first kind (the restored descriptor is a copy, not the file the other name leads to) and
//! is limited by `--ghost-limit`. With `--link-remap` (CRIU's option of the same name) dump
//! instead gives the file a hidden name beside its old one, `link_remap.N`, with
//! `linkat(/proc/PID/fd/FD, AT_SYMLINK_FOLLOW)`. The kernel allows this for a file that still
//! has links, and for one made with `O_TMPFILE` that was never linked; a file whose last link
//! was removed cannot get a name again (`ENOENT`) and stays a ghost.
//!
//! The file system is changed until restore: a failed dump removes the links it made, a
//! successful restore removes them once the tree runs, a failed restore leaves them so that
//! the images stay usable. Restore links the file under its old name for a moment (or a
//! temporary sibling swapped in, when the name is taken again), opens the descriptions there
//! and unlinks it, so the descriptors show the same `PATH (deleted)`.
//!
//! A file restored this way that had no links keeps none, and the kernel will not link it
//! again: a later dump of the restored tree copies it as a ghost.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use images::pb::{file_entry, FileEntry, RegFile};
use images::{ImageDir, ImageKind};

use super::ghost::Placed;
use super::{Desc, RestoreCtx};
use crate::error::{DumpError, RestoreError};
use crate::sys::{self, fileops};

/// The links made by one dump, by (dev, ino) of the file.
pub(crate) struct Remaps {
    enabled: bool,
    made: HashMap<(u64, u64), String>,
    next: u32,
    guard: RemapGuard,
}

impl Remaps {
    pub(crate) fn new(enabled: bool) -> Remaps {
        Remaps {
            enabled,
            made: HashMap::new(),
            next: 1,
            guard: RemapGuard {
                created: Vec::new(),
            },
        }
    }

    /// Links the file behind `d`, which lost its name `path`, back as `link_remap.N` in the
    /// directory of `path`. `None`: not asked for, or the kernel cannot link it (no links
    /// left, directory gone, file system refuses): the caller copies it instead.
    pub(crate) fn link(&mut self, d: &Desc<'_>, path: &str) -> Result<Option<String>, DumpError> {
        if !self.enabled || !d.md.is_file() {
            return Ok(None);
        }
        let key = (d.md.dev(), d.md.ino());
        if let Some(p) = self.made.get(&key) {
            return Ok(Some(p.clone()));
        }
        let Some(parent) = Path::new(path).parent() else {
            return Ok(None);
        };
        let from = CString::new(d.link).expect("no NUL in a /proc path");
        // The new name must land on the mount the descriptor is on (linkat does not cross
        // mounts): a task in a mount namespace of its own has its own copies of them, reached
        // through its root; a descriptor opened from outside (one a restore gave it) is on
        // crust's. Both are tried.
        let root = PathBuf::from(format!("/proc/{}/root", d.pid));
        loop {
            let at = parent.join(format!("link_remap.{}", self.next));
            self.next += 1;
            let mut result = Err(std::io::Error::from_raw_os_error(libc::EXDEV));
            for through in [root.join(at.strip_prefix("/").unwrap_or(&at)), at.clone()] {
                let to = CString::new(through.as_os_str().as_encoded_bytes())
                    .map_err(|_| d.unsupported("its path holds a NUL byte"))?;
                result = fileops::link_follow(&from, &to).map(|()| through);
                if !matches!(&result, Err(e) if e.raw_os_error() == Some(libc::EXDEV)) {
                    break;
                }
            }
            match result {
                Ok(through) => {
                    let at = at.to_string_lossy().into_owned();
                    crate::debug!("pid {} fd {}: {path} linked back as {at}", d.pid, d.fd);
                    self.guard.created.push(through);
                    self.made.insert(key, at.clone());
                    return Ok(Some(at));
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                Err(e) => {
                    crate::info!(
                        "pid {} fd {}: {path} cannot be linked back ({e}): saving its contents",
                        d.pid,
                        d.fd
                    );
                    return Ok(None);
                }
            }
        }
    }

    /// The links made, to be removed unless the dump completes.
    pub(crate) fn into_guard(self) -> RemapGuard {
        self.guard
    }
}

/// Links made by a dump: removed when dropped, unless [`RemapGuard::keep`] says the images
/// that need them are complete.
pub struct RemapGuard {
    created: Vec<PathBuf>,
}

impl RemapGuard {
    /// The dump completed: its links stay for the restore.
    pub fn keep(mut self) {
        self.created.clear();
    }
}

impl Drop for RemapGuard {
    fn drop(&mut self) {
        for p in &self.created {
            if let Err(e) = std::fs::remove_file(p) {
                crate::warn!("removing {} after a failed dump: {e}", p.display());
            }
        }
    }
}

/// Opens every description of the file linked back at `remap` (all of `descs` name it).
pub(crate) fn open(
    remap: &str,
    descs: &[(u32, &RegFile)],
    ctx: &RestoreCtx,
) -> Result<Vec<(u32, OwnedFd)>, RestoreError> {
    let Some(&(_, first)) = descs.first() else {
        return Ok(Vec::new());
    };
    let want = first.path.as_str();
    let err = |what: &str, source| RestoreError::File {
        path: format!("{want} (linked back as {remap}: {what})"),
        source,
    };
    let md = std::fs::metadata(remap).map_err(|e| err("stat", e))?;
    if let Some(id) = &first.file {
        if md.size() != id.size && !ctx.skip_validation {
            return Err(RestoreError::FileChanged {
                path: remap.to_string(),
                what: format!(
                    "size {} at dump, {} now; --skip-file-validation restores it anyway",
                    id.size,
                    md.size()
                ),
            });
        }
    }
    let placed = Placed::make(Path::new(want), 0, false, |at| {
        std::fs::hard_link(remap, at)
    })
    .map_err(|e| err("link", e))?;
    let at = CString::new(placed.at.as_os_str().as_encoded_bytes())
        .map_err(|_| err("path", std::io::Error::from_raw_os_error(libc::EINVAL)))?;
    let mut out = Vec::new();
    for &(id, r) in descs {
        let flags = super::reopen_flags(r.flags);
        let fd = sys::open(&at, flags | libc::O_CLOEXEC).map_err(|e| err("open", e))?;
        super::reg::seek_to(&fd, &md, r.pos, flags).map_err(|e| err("lseek", e))?;
        out.push((id, fd));
    }
    placed.finish().map_err(|e| err("unlink", e))?;
    Ok(out)
}

/// Removes the links a dump made, once the restored tree runs (the images no longer restore
/// those files afterwards, as with CRIU).
pub fn remove_links(dir: &ImageDir) {
    let Ok(files) = dir.read::<FileEntry>(ImageKind::Files, None) else {
        return;
    };
    for f in files {
        if let Some(file_entry::Kind::Reg(r)) = f.kind {
            if r.remap.is_empty() {
                continue;
            }
            match std::fs::remove_file(&r.remap) {
                Ok(()) => crate::debug!("removed {}", r.remap),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => crate::warn!("removing {}: {e}", r.remap),
            }
        }
    }
}
