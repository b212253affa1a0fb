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
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use images::pb::{GhostExtent, GhostFile, RegFile};

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

    /// The ghost of the unlinked file behind `d`, its contents saved the first time: only
    /// its data extents, so a sparse file stays sparse and only stored bytes count against
    /// the limit.
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
        let mut g = self.describe(md, path);
        if md.is_file() && md.size() > 0 {
            let src = sys::open(
                &CString::new(d.link).expect("no NUL in a /proc path"),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
            .map_err(|e| d.io("open the unlinked file", e))?;
            let extents = data_extents(src.as_raw_fd(), md.size())
                .map_err(|e| d.io("find the data of the unlinked file", e))?;
            let stored: u64 = extents.iter().map(|e| e.1).sum();
            if stored > self.limit {
                return Err(DumpError::GhostTooBig {
                    pid: d.pid,
                    fd: d.fd,
                    path: path.to_string(),
                    size: stored,
                    limit: self.limit,
                });
            }
            for (offset, len) in extents {
                let r = data
                    .save_range(src.as_raw_fd(), offset, len)
                    .map_err(|e| d.io("save the unlinked file", e))?;
                g.extents.push(GhostExtent {
                    offset,
                    data: Some(r),
                });
            }
        }
        self.seen.insert(key, g.clone());
        Ok(g)
    }

    /// The ghost of a removed directory a task works in (`md` is what `/proc/PID/cwd` leads
    /// to): shared with the descriptors and working directories of the same directory.
    pub(crate) fn dump_dir(&mut self, md: &std::fs::Metadata, path: &str) -> GhostFile {
        let key = (md.dev(), md.ino());
        if let Some(g) = self.seen.get(&key) {
            return g.clone();
        }
        let g = self.describe(md, path);
        self.seen.insert(key, g.clone());
        g
    }

    /// Name, mode, owner, size and times of a new ghost, without contents.
    fn describe(&self, md: &std::fs::Metadata, path: &str) -> GhostFile {
        GhostFile {
            path: path.to_string(),
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            size: if md.is_file() { md.size() } else { 0 },
            atime_ns: md.atime() * 1_000_000_000 + md.atime_nsec(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            data: None,
            id: self.seen.len() as u32 + 1,
            extents: Vec::new(),
        }
    }
}

/// The data extents of the first `size` bytes of `fd` as (offset, length), found with
/// `lseek(SEEK_DATA/SEEK_HOLE)`; a file system without them gives one extent, the whole file.
pub(crate) fn data_extents(fd: RawFd, size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut off = 0u64;
    while off < size {
        let start = match fileops::lseek(fd, off as i64, libc::SEEK_DATA) {
            Ok(s) => s as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(e) if off == 0 && matches!(e.raw_os_error(), Some(libc::EINVAL)) => {
                return Ok(vec![(0, size)]);
            }
            Err(e) => return Err(e),
        };
        if start >= size {
            break;
        }
        let end = (fileops::lseek(fd, start as i64, libc::SEEK_HOLE)? as u64).min(size);
        if end <= start {
            break;
        }
        out.push((start, end - start));
        off = end;
    }
    Ok(out)
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

/// The descriptions opened by [`open`] (file id, descriptor), and the directory descriptor
/// asked for with `cwd`.
pub(crate) type OpenedGhost = (Vec<(u32, OwnedFd)>, Option<OwnedFd>);

/// Creates the ghost `g`, opens each description of it in `descs` (and, with `cwd`, a
/// directory descriptor for tasks to `fchdir` to), and unlinks it again.
pub(crate) fn open(
    g: &GhostFile,
    descs: &[(u32, &RegFile)],
    cwd: bool,
    data: &mut DataReader,
    image: &Path,
) -> Result<OpenedGhost, RestoreError> {
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
    if cwd && !dir {
        return Err(RestoreError::BadImage {
            image: image.to_owned(),
            what: format!("{}: a working directory that is no directory", g.path),
        });
    }
    let beyond = g.data.as_ref().is_some_and(|r| r.len > g.size)
        || g.extents.iter().any(|e| {
            let len = e.data.as_ref().map_or(0, |r| r.len);
            e.offset.checked_add(len).is_none_or(|end| end > g.size)
        });
    if beyond {
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
    for e in &g.extents {
        if let Some(r) = &e.data {
            data.copy_to_file_at(r, helper.as_raw_fd(), e.offset, &g.path)?;
        }
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
    Ok((out, cwd.then_some(helper)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn extents_of_a_sparse_file_skip_its_holes() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("sparse")).unwrap();
        let mib = 1u64 << 20;
        f.write_all_at(&[7u8; 4096], mib).unwrap();
        f.write_all_at(&[9u8; 4096], 8 * mib).unwrap();
        f.set_len(16 * mib).unwrap();
        let ext = data_extents(f.as_raw_fd(), 16 * mib).unwrap();
        let stored: u64 = ext.iter().map(|e| e.1).sum();
        // File systems allocate in blocks of their own size: at most a few MiB, never the
        // 16 MiB of the file.
        assert!(stored >= 8192 && stored < 4 * mib, "{ext:?}");
        assert!(
            ext.iter().any(|&(o, l)| o <= mib && o + l >= mib + 4096),
            "{ext:?}"
        );
        assert!(
            ext.iter()
                .any(|&(o, l)| o <= 8 * mib && o + l >= 8 * mib + 4096),
            "{ext:?}"
        );
        // A file with no data at all has no extents.
        let empty = std::fs::File::create(dir.path().join("hole")).unwrap();
        empty.set_len(mib).unwrap();
        assert_eq!(data_extents(empty.as_raw_fd(), mib).unwrap(), vec![]);
    }
}
