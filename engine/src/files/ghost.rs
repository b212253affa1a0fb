//! Files unlinked while open ("ghosts"): `/proc/PID/fd/N` names them with ` (deleted)`.
//!
//! Dump saves a ghost's contents (up to `--ghost-limit` bytes, 1 MiB by default, like CRIU;
//! a larger one fails the dump naming it), mode, owner and times; descriptions of one
//! unlinked file share one ghost. Restore creates the file again under its old name, fills
//! it, opens every description of it, and unlinks it, so the restored fds show the same
//! `PATH (deleted)`. Two situations need care:
//! - the name is taken again by another file: the ghost is made under a temporary name
//!   beside it, swapped into place with `renameat2(RENAME_EXCHANGE)` (Linux 3.15) just long
//!   enough to be unlinked there, and the other file is renamed back;
//! - the directory it lived in was removed as well: the missing directories are created for
//!   the moment and removed again afterwards.
//!
//! An unlinked directory (open, then `rmdir`ed) is a ghost without contents.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use images::pb::{GhostFile, RegFile};

use super::data::{DataReader, DataWriter};
use super::Desc;
use crate::error::{DumpError, RestoreError};
use crate::sys::{self, fileops};

/// The ghosts of a dump, by (dev, ino) of the unlinked file.
pub(crate) struct Ghosts {
    limit: u64,
    seen: HashMap<(u64, u64), GhostFile>,
}

impl Ghosts {
    pub(crate) fn new(limit: u64) -> Ghosts {
        Ghosts {
            limit,
            seen: HashMap::new(),
        }
    }

    /// The ghost of the unlinked file behind `d`, its contents saved the first time.
    pub(crate) fn dump(
        &mut self,
        d: &Desc<'_>,
        path: &str,
        data: &mut DataWriter,
    ) -> Result<GhostFile, DumpError> {
        let md = d.md;
        let key = (md.dev(), md.ino());
        if let Some(g) = self.seen.get(&key) {
            return Ok(g.clone());
        }
        let regular = md.is_file();
        if regular && md.size() > self.limit {
            return Err(DumpError::GhostTooBig {
                pid: d.pid,
                fd: d.fd,
                path: path.to_string(),
                size: md.size(),
                limit: self.limit,
            });
        }
        let contents = if regular && md.size() > 0 {
            let src = sys::open(
                &CString::new(d.link).expect("no NUL in a /proc path"),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
            .map_err(|e| d.io("open the unlinked file", e))?;
            Some(
                data.save_file(src.as_raw_fd(), md.size())
                    .map_err(|e| d.io("save the unlinked file", e))?,
            )
        } else {
            None
        };
        let g = GhostFile {
            path: path.to_string(),
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            size: if regular { md.size() } else { 0 },
            atime_ns: md.atime() * 1_000_000_000 + md.atime_nsec(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            data: contents,
            id: self.seen.len() as u32 + 1,
        };
        self.seen.insert(key, g.clone());
        Ok(g)
    }
}

/// What was created to bring a name back for a while, undone by [`Placed::finish`] (or on
/// drop, after a failure).
pub(crate) struct Placed {
    /// The name wanted (the old one).
    want: PathBuf,
    /// Where the object was made: `want`, or a temporary sibling when `want` is taken.
    pub at: PathBuf,
    dir: bool,
    /// Directories created so that `want` has a parent, outermost first.
    made_dirs: Vec<PathBuf>,
    done: bool,
}

fn cpath(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

impl Placed {
    /// Makes room for an object at `want`: missing parent directories are created, and if
    /// the name is taken, a free sibling name is chosen. `make` creates the object there.
    pub(crate) fn make(
        want: &Path,
        tag: u32,
        dir: bool,
        make: impl FnOnce(&Path) -> std::io::Result<()>,
    ) -> std::io::Result<Placed> {
        let mut placed = Placed {
            want: want.to_owned(),
            at: want.to_owned(),
            dir,
            made_dirs: Vec::new(),
            done: false,
        };
        let mut missing = Vec::new();
        let mut cur = want.parent();
        while let Some(p) = cur {
            if p.as_os_str().is_empty() || std::fs::symlink_metadata(p).is_ok() {
                break;
            }
            missing.push(p.to_owned());
            cur = p.parent();
        }
        for p in missing.into_iter().rev() {
            std::fs::DirBuilder::new().mode(0o700).create(&p)?;
            placed.made_dirs.push(p);
        }
        if std::fs::symlink_metadata(want).is_ok() {
            let name = want
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            placed.at =
                want.with_file_name(format!(".{name}.crust-ghost-{tag}-{}", std::process::id()));
        }
        make(&placed.at)?;
        Ok(placed)
    }

    fn remove(&self, p: &Path) -> std::io::Result<()> {
        if self.dir {
            std::fs::remove_dir(p)
        } else {
            std::fs::remove_file(p)
        }
    }

    /// Unlinks the object under its wanted name, puts back whatever held that name, and
    /// removes the directories made for it.
    pub(crate) fn finish(mut self) -> std::io::Result<()> {
        self.done = true;
        if self.at != self.want {
            fileops::rename_exchange(&cpath(&self.at)?, &cpath(&self.want)?)?;
            self.remove(&self.want)?;
            std::fs::rename(&self.at, &self.want)?;
        } else {
            self.remove(&self.at)?;
        }
        for d in self.made_dirs.iter().rev() {
            std::fs::remove_dir(d)?;
        }
        Ok(())
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.remove(&self.at);
            for d in self.made_dirs.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

/// Creates the ghost shared by `descs`, opens each description, and unlinks it again.
pub(crate) fn open(
    descs: &[(u32, &RegFile)],
    data: &mut DataReader,
    image: &Path,
) -> Result<Vec<(u32, OwnedFd)>, RestoreError> {
    let Some(g) = descs.first().and_then(|(_, r)| r.ghost.as_ref()) else {
        return Ok(Vec::new());
    };
    let err = |what: &str, source| RestoreError::File {
        path: format!("{} (unlinked file: {what})", g.path),
        source,
    };
    let dir = g.mode & libc::S_IFMT == libc::S_IFDIR;
    if !dir && g.mode & libc::S_IFMT != libc::S_IFREG {
        return Err(RestoreError::BadImage {
            image: image.to_owned(),
            what: format!("{}: unlinked file of mode {:o}", g.path, g.mode),
        });
    }
    if g.data.as_ref().is_some_and(|r| r.len > g.size) {
        return Err(RestoreError::BadImage {
            image: image.to_owned(),
            what: format!("{}: more contents than its size", g.path),
        });
    }
    let placed = Placed::make(Path::new(&g.path), g.id, dir, |at| {
        if dir {
            std::fs::DirBuilder::new().mode(0o700).create(at)
        } else {
            sys::open(
                &cpath(at)?,
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
            )
            .map(drop)
        }
    })
    .map_err(|e| err("create", e))?;
    let at = cpath(&placed.at).map_err(|e| err("path", e))?;
    // Contents, size, owner, mode, times, through one descriptor of crust's.
    let helper = if dir {
        sys::open(&at, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC)
    } else {
        sys::open(&at, libc::O_WRONLY | libc::O_CLOEXEC)
    }
    .map_err(|e| err("open", e))?;
    if let Some(r) = &g.data {
        data.copy_to_file(r, helper.as_raw_fd(), &g.path)?;
    }
    if !dir {
        fileops::ftruncate(&helper, g.size).map_err(|e| err("ftruncate", e))?;
    }
    fileops::fchown_fchmod(&helper, g.uid, g.gid, g.mode).map_err(|e| err("chown", e))?;
    let mut out = Vec::new();
    for &(id, r) in descs {
        let flags = super::reopen_flags(r.flags);
        let fd = sys::open(&at, flags | libc::O_CLOEXEC).map_err(|e| err("open", e))?;
        let md = std::fs::metadata(&placed.at).map_err(|e| err("stat", e))?;
        super::reg::seek_to(&fd, &md, r.pos, flags).map_err(|e| err("lseek", e))?;
        out.push((id, fd));
    }
    fileops::futimens(&helper, g.atime_ns, g.mtime_ns).map_err(|e| err("futimens", e))?;
    placed.finish().map_err(|e| err("unlink", e))?;
    Ok(out)
}
