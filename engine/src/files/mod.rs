//! The fd table of a task: which numbers point to which open file description, both directions.
//!
//! Sharing is found with `kcmp(KCMP_FILE)` (Linux 3.5): fds of one description get one
//! `FileEntry` id, so restore opens it once and `dup2`s it to every number, keeping one shared
//! offset. Kinds, one module each:
//! - [`reg`]: regular files, directories, memory character devices, `O_PATH` descriptors
//!   (symlinks included), opened again by path and checked to be the same size;
//! - [`ghost`]: files unlinked while open, whose contents are saved (up to `--ghost-limit`)
//!   and which restore creates, opens and unlinks again; also a removed working directory;
//! - [`link_remap`]: with `--link-remap`, such files linked back under a hidden name instead;
//! - [`pipe`]: pipes, with their queues; a pipe held by a process outside the tree is refused
//!   unless named with `--external pipe[INO]`, and restored from `--inherit-fd`;
//! - [`fifo`]: named pipes, with their queues;
//! - [`memfd`] and [`eventfd`];
//! - [`locks`]: flock, OFD and POSIX locks and leases (`--file-locks`);
//! - [`root`]: a task's root directory, checked to be reachable by its path;
//! - [`elf`]: the build-id of mapped ELF files and the exe, checked at restore.
//!
//! Anything else is refused at dump time with the fd and what it points to. Contents go to the
//! raw `files-data.img` ([`data`]).

pub(crate) mod data;
pub(crate) mod elf;
pub(crate) mod eventfd;
pub(crate) mod fifo;
pub(crate) mod ghost;
pub mod link_remap;
pub(crate) mod locks;
pub(crate) mod memfd;
pub(crate) mod pipe;
pub(crate) mod reg;
pub(crate) mod root;

use std::collections::{HashMap, HashSet};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use images::pb::{file_entry, FdinfoEntry, FileEntry, FileLock, GhostFile, PipeData};
use images::{ImageDir, ImageKind};

use crate::dump::DumpOpts;
use crate::error::{DumpError, RestoreError};
use crate::proc;
use crate::restore::RestoreOpts;
use crate::sys;

/// Largest unlinked file whose contents a dump saves unless told otherwise (CRIU's default).
pub const DEFAULT_GHOST_LIMIT: u64 = 1 << 20;

/// What one descriptor of a frozen task is, as the per-kind dumpers need it.
pub(crate) struct Desc<'a> {
    pub pid: i32,
    pub fd: i32,
    /// Where `/proc/PID/fd/FD` points.
    pub target: &'a str,
    /// `/proc/PID/fd/FD`, through which crust reaches the description.
    pub link: &'a str,
    pub md: &'a std::fs::Metadata,
    pub info: &'a proc::FdInfo,
    /// The whole of `/proc/PID/fdinfo/FD`, for kind-specific lines.
    pub info_text: &'a str,
}

impl Desc<'_> {
    pub(crate) fn unsupported(&self, why: impl Into<String>) -> DumpError {
        DumpError::UnsupportedFd {
            pid: self.pid,
            fd: self.fd,
            target: self.target.to_string(),
            why: Some(why.into()),
        }
    }

    pub(crate) fn io(&self, what: &str, source: std::io::Error) -> DumpError {
        DumpError::Io {
            pid: self.pid,
            path: format!("fd {} ({}): {what}", self.fd, self.target).into(),
            source,
        }
    }
}

/// A descriptor standing for a description already dumped: (pid, fd, file id).
type Rep = (i32, i32, u32);

/// The file descriptions of the whole tree, collected task by task. Descriptions shared
/// between tasks (inherited across fork, passed over sockets) get one id.
pub(crate) struct FilesCtx {
    files: Vec<FileEntry>,
    pipes: Vec<PipeData>,
    next_id: u32,
    /// Representatives of each description seen so far, by (dev, ino): (pid, fd, id).
    seen: HashMap<(u64, u64), Vec<Rep>>,
    data: data::DataWriter,
    ghosts: ghost::Ghosts,
    memfds: HashMap<u64, images::pb::MemfdFile>,
    /// Pipes and fifos (by `fifo`, inode) whose queue is saved already.
    queues: HashSet<(bool, u64)>,
    outside: pipe::Outside,
    file_locks: bool,
    remaps: link_remap::Remaps,
    /// The pids of the tree.
    tree: HashSet<i32>,
}

impl FilesCtx {
    /// Starts collecting the files of the tree `tree` (its pids) into `dir`.
    pub(crate) fn new(
        dir: &ImageDir,
        opts: &DumpOpts,
        tree: &HashSet<i32>,
    ) -> Result<FilesCtx, DumpError> {
        let mut external = HashSet::new();
        for spec in &opts.external {
            external.insert(pipe::parse_external(spec)?);
        }
        Ok(FilesCtx {
            files: Vec::new(),
            pipes: Vec::new(),
            next_id: 0,
            seen: HashMap::new(),
            data: data::DataWriter::create(dir)?,
            ghosts: ghost::Ghosts::new(opts.ghost_limit.unwrap_or(DEFAULT_GHOST_LIMIT)),
            memfds: HashMap::new(),
            queues: HashSet::new(),
            outside: pipe::Outside::new(tree.clone(), external),
            file_locks: opts.file_locks,
            remaps: link_remap::Remaps::new(opts.link_remap),
            tree: tree.clone(),
        })
    }

    /// Reads the fd table of the frozen task `pid`.
    pub(crate) fn dump_task(
        &mut self,
        pid: i32,
        shell_job: bool,
    ) -> Result<Vec<FdinfoEntry>, DumpError> {
        let mut out = Vec::new();
        for fd in proc::fds(pid)? {
            let link_path = format!("/proc/{pid}/fd/{fd}");
            let Ok(target) = proc::readlink(&link_path) else {
                continue;
            };
            let md = std::fs::metadata(&link_path).map_err(|source| DumpError::Io {
                pid,
                path: link_path.clone().into(),
                source,
            })?;
            let info_path = std::path::PathBuf::from(format!("/proc/{pid}/fdinfo/{fd}"));
            let info_text = proc::read(&info_path)?;
            let info = proc::parse_fdinfo(&info_path, &info_text)?;
            let desc = Desc {
                pid,
                fd,
                target: &target,
                link: &link_path,
                md: &md,
                info: &info,
                info_text: &info_text,
            };
            let fd_flags = if info.flags & libc::O_CLOEXEC as u32 != 0 {
                libc::FD_CLOEXEC as u32
            } else {
                0
            };
            let held = locks::parse(&info_text).map_err(|why| desc.unsupported(why))?;
            let locked = !held.posix.is_empty() || !held.desc.is_empty();
            if locked && !self.file_locks {
                return Err(desc.unsupported("holds a file lock: dump with --file-locks"));
            }
            let mut shared = None;
            for &(rpid, rfd, rid) in self.seen.get(&(md.dev(), md.ino())).into_iter().flatten() {
                let same = sys::kcmp_file(pid, fd, rpid, rfd).map_err(|source| DumpError::Io {
                    pid,
                    path: format!("kcmp of fd {fd} with pid {rpid} fd {rfd}").into(),
                    source,
                })?;
                if same == 0 {
                    shared = Some(rid);
                    break;
                }
            }
            let id = match shared {
                Some(id) => id,
                None => {
                    self.next_id += 1;
                    let id = self.next_id;
                    let kind = self.dump_desc(&desc, held.desc, shell_job)?;
                    self.files.push(FileEntry {
                        id,
                        kind: Some(kind),
                    });
                    self.seen
                        .entry((md.dev(), md.ino()))
                        .or_default()
                        .push((pid, fd, id));
                    id
                }
            };
            out.push(FdinfoEntry {
                fd: fd as u32,
                id,
                fd_flags,
                posix_locks: held.posix,
            });
        }
        Ok(out)
    }

    /// The working directory of the frozen task `pid` when it was removed (`rmdir` after
    /// `chdir`): the ghost restore makes it from, shared with every task and descriptor
    /// of the same directory. `cwd` is what `/proc/PID/cwd` reads.
    pub(crate) fn dump_cwd(&mut self, pid: i32, cwd: &str) -> Result<Option<GhostFile>, DumpError> {
        let Some(path) = cwd.strip_suffix(" (deleted)") else {
            return Ok(None);
        };
        let link = format!("/proc/{pid}/cwd");
        let md = std::fs::metadata(&link).map_err(|source| DumpError::Io {
            pid,
            path: link.into(),
            source,
        })?;
        // A directory really named "... (deleted)" is still linked.
        if md.nlink() != 0 {
            return Ok(None);
        }
        Ok(Some(self.ghosts.dump_dir(&md, path)))
    }

    /// The root directory of the frozen task `pid`, what `/proc/PID/root` reads, once it is
    /// known to lead back to the same directory ([`root::check`]).
    pub(crate) fn dump_root(&self, pid: i32, root: String) -> Result<String, DumpError> {
        root::check(pid, &root, &self.tree)?;
        Ok(root)
    }

    /// A description seen for the first time: what it is, its state, and its contents.
    fn dump_desc(
        &mut self,
        d: &Desc<'_>,
        desc_locks: Vec<FileLock>,
        shell_job: bool,
    ) -> Result<file_entry::Kind, DumpError> {
        let ft = d.md.file_type();
        let path_based = d.target.starts_with('/');
        let kind = if d.target.starts_with("pipe:[") {
            file_entry::Kind::Pipe(pipe::dump(
                d,
                &mut self.outside,
                &mut self.queues,
                &mut self.pipes,
                &mut self.data,
            )?)
        } else if d.target == "anon_inode:[eventfd]" {
            file_entry::Kind::Eventfd(eventfd::dump(d)?)
        } else if d.info.flags & libc::O_PATH as u32 != 0 && path_based {
            file_entry::Kind::Reg(reg::dump(
                d,
                shell_job,
                &mut self.ghosts,
                &mut self.remaps,
                &mut self.data,
            )?)
        } else if memfd::is_memfd(d) {
            file_entry::Kind::Memfd(memfd::dump(d, &mut self.memfds, &mut self.data)?)
        } else if ft.is_fifo() && path_based {
            file_entry::Kind::Fifo(fifo::dump(
                d,
                &mut self.queues,
                &mut self.pipes,
                &mut self.data,
            )?)
        } else {
            file_entry::Kind::Reg(reg::dump(
                d,
                shell_job,
                &mut self.ghosts,
                &mut self.remaps,
                &mut self.data,
            )?)
        };
        match kind {
            file_entry::Kind::Reg(mut r) => {
                r.locks = desc_locks;
                Ok(file_entry::Kind::Reg(r))
            }
            other if desc_locks.is_empty() => Ok(other),
            _ => Err(d.unsupported("a lock on a file that is not a regular file")),
        }
    }

    /// Writes `files.img`, `pipes-data.img` and `files-data.img`. The links `--link-remap`
    /// made are removed when the returned guard drops, unless the dump completes and says
    /// [`link_remap::RemapGuard::keep`] (so are they if this fails).
    pub(crate) fn write(self, dir: &ImageDir) -> Result<link_remap::RemapGuard, DumpError> {
        let guard = self.remaps.into_guard();
        dir.write(ImageKind::Files, None, &self.files)?;
        dir.write(ImageKind::PipeData, None, &self.pipes)?;
        self.data.commit(dir)?;
        Ok(guard)
    }
}

/// Restore-side settings taken from the command line.
pub(crate) struct RestoreCtx {
    pub shell_job: bool,
    /// `--file-locks`: take the saved locks and leases again (else, like CRIU, they are not).
    pub file_locks: bool,
    pub skip_validation: bool,
    /// `--inherit-fd fd[N]:KEY`: crust's own fd N stands for the object KEY.
    pub inherit: HashMap<String, RawFd>,
}

impl RestoreCtx {
    fn new(opts: &RestoreOpts) -> Result<RestoreCtx, RestoreError> {
        let mut inherit = HashMap::new();
        for spec in &opts.inherit_fds {
            let (fd, key) = parse_inherit_fd(spec)?;
            if sys::fileops::fcntl_int(fd, libc::F_GETFD, 0).is_err() {
                return Err(RestoreError::BadOption {
                    option: format!("--inherit-fd {spec}"),
                    why: format!("crust has no fd {fd}"),
                });
            }
            inherit.insert(key, fd);
        }
        Ok(RestoreCtx {
            shell_job: opts.shell_job,
            file_locks: opts.file_locks,
            skip_validation: opts.skip_file_validation,
            inherit,
        })
    }

    /// The inherited fd standing for a file at `path` (CRIU keys files by their path without
    /// the leading slash; both forms are taken).
    fn inherited_path(&self, path: &str) -> Option<RawFd> {
        self.inherit
            .get(path)
            .or_else(|| self.inherit.get(path.trim_start_matches('/')))
            .copied()
    }
}

/// Parses `fd[N]:KEY` (CRIU's `--inherit-fd` syntax).
pub(crate) fn parse_inherit_fd(spec: &str) -> Result<(RawFd, String), RestoreError> {
    let bad = || RestoreError::BadOption {
        option: format!("--inherit-fd {spec}"),
        why: "expected fd[N]:KEY, as fd[0]:pipe:[1234] or fd[3]:tmp/file".into(),
    };
    let rest = spec.strip_prefix("fd[").ok_or_else(bad)?;
    let (n, key) = rest.split_once("]:").ok_or_else(bad)?;
    let n: RawFd = n.parse().map_err(|_| bad())?;
    if n < 0 || key.is_empty() {
        return Err(bad());
    }
    Ok((n, key.to_string()))
}

/// What [`open_all`] opened.
pub(crate) struct Opened {
    /// Each file description, by file id.
    pub files: HashMap<u32, OwnedFd>,
    /// A directory descriptor of each removed working directory, by ghost id, for the
    /// tasks to `fchdir` to: the directory is made again, and removed again, by crust.
    pub cwds: HashMap<u32, OwnedFd>,
}

/// Opens every file description of the tree in crust, ready to be handed to the tasks that
/// hold it (over a unix socket, `SCM_RIGHTS`): one description shared by several tasks or fds
/// is one open here, so sharing and the common offset come back by construction. flock and
/// OFD locks and leases are taken here, on the description; POSIX locks belong to the task
/// and are taken by [`locks::restore_posix`]. `cwd_ghosts` are the removed working
/// directories of the tasks.
pub(crate) fn open_all(
    files: &[FileEntry],
    pipes: &[PipeData],
    cwd_ghosts: &[&GhostFile],
    opts: &RestoreOpts,
    dir: &ImageDir,
) -> Result<Opened, RestoreError> {
    let ctx = RestoreCtx::new(opts)?;
    let image = dir.file_path(ImageKind::Files, None);
    let mut data = data::DataReader::new(dir);
    let mut out = HashMap::new();
    let mut pipe_ends: HashMap<u64, Vec<(u32, &images::pb::PipeEnd)>> = HashMap::new();
    let mut fifos: HashMap<u64, Vec<(u32, &images::pb::FifoFile)>> = HashMap::new();
    let mut memfds: HashMap<u64, Vec<(u32, &images::pb::MemfdFile)>> = HashMap::new();
    // Ghost id -> the ghost and the descriptions of it.
    type Descs<'a> = Vec<(u32, &'a images::pb::RegFile)>;
    let mut ghosts: HashMap<u32, (&GhostFile, Descs<'_>)> = HashMap::new();
    let mut remapped: HashMap<&str, Vec<(u32, &images::pb::RegFile)>> = HashMap::new();
    let mut regs = Vec::new();
    for f in files {
        match &f.kind {
            Some(file_entry::Kind::Reg(r)) => match &r.ghost {
                Some(g) => ghosts
                    .entry(g.id)
                    .or_insert((g, Vec::new()))
                    .1
                    .push((f.id, r)),
                None if !r.remap.is_empty() => remapped
                    .entry(r.remap.as_str())
                    .or_default()
                    .push((f.id, r)),
                None => regs.push((f.id, r)),
            },
            Some(file_entry::Kind::Pipe(p)) => {
                pipe_ends.entry(p.pipe_ino).or_default().push((f.id, p))
            }
            Some(file_entry::Kind::Fifo(p)) => fifos.entry(p.fifo_ino).or_default().push((f.id, p)),
            Some(file_entry::Kind::Memfd(m)) => memfds.entry(m.ino).or_default().push((f.id, m)),
            Some(file_entry::Kind::Eventfd(e)) => {
                out.insert(f.id, eventfd::open(e)?);
            }
            None => {
                return Err(RestoreError::BadImage {
                    image: image.clone(),
                    what: format!("file id {} has no kind", f.id),
                })
            }
        }
    }
    let mut cwd_ids = HashSet::new();
    for g in cwd_ghosts {
        cwd_ids.insert(g.id);
        ghosts.entry(g.id).or_insert((g, Vec::new()));
    }
    // Ghosts first: a regular file may live in a directory that only a ghost brings back.
    let mut ghost_ids: Vec<u32> = ghosts.keys().copied().collect();
    ghost_ids.sort_unstable();
    let mut cwds = HashMap::new();
    for gid in ghost_ids {
        let (g, descs) = &ghosts[&gid];
        let (fds, cwd) = ghost::open(g, descs, cwd_ids.contains(&gid), &mut data, &image)?;
        out.extend(fds);
        if let Some(cwd) = cwd {
            cwds.insert(gid, cwd);
        }
    }
    let mut remap_paths: Vec<&str> = remapped.keys().copied().collect();
    remap_paths.sort_unstable();
    for remap in remap_paths {
        out.extend(link_remap::open(remap, &remapped[remap], &ctx)?);
    }
    for (id, r) in regs {
        out.insert(id, reg::open(r, &ctx)?);
    }
    for (ino, ends) in pipe_ends {
        let queue = pipes.iter().find(|d| !d.fifo && d.pipe_ino == ino);
        for (id, fd) in pipe::open(ino, &ends, queue, &ctx, &mut data, &image)? {
            out.insert(id, fd);
        }
    }
    for (ino, descs) in fifos {
        let queue = pipes.iter().find(|d| d.fifo && d.pipe_ino == ino);
        for (id, fd) in fifo::open(&descs, queue, &mut data, &image)? {
            out.insert(id, fd);
        }
    }
    for (_, descs) in memfds {
        for (id, fd) in memfd::open(&descs, &mut data)? {
            out.insert(id, fd);
        }
    }
    // Locks that belong to descriptions, now that each is open once.
    for f in files {
        if let Some(file_entry::Kind::Reg(r)) = &f.kind {
            if r.locks.is_empty() {
                continue;
            }
            if !ctx.file_locks {
                locks::warn_skipped(&r.path);
                continue;
            }
            if let Some(fd) = out.get(&f.id) {
                locks::restore_on_description(fd, &r.path, &r.locks)?;
            }
        }
    }
    Ok(Opened { files: out, cwds })
}

/// The fd flags (F_GETFL bits) that open(2) and fcntl(F_SETFL) take back. A file made with
/// `O_TMPFILE` keeps that flag (`__O_TMPFILE | O_DIRECTORY`), which would make another.
pub(crate) fn reopen_flags(flags: u32) -> i32 {
    let mut f = (flags as i32)
        & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_NOCTTY | libc::O_CLOEXEC);
    if f & libc::O_TMPFILE == libc::O_TMPFILE {
        f &= !libc::O_TMPFILE;
    }
    f
}

/// `open(/proc/self/fd/FD, flags)`: a new description of the object `fd` refers to.
pub(crate) fn reopen(fd: RawFd, flags: i32) -> std::io::Result<OwnedFd> {
    let path = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL");
    sys::open(&path, flags | libc::O_CLOEXEC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherit_fd_specs() {
        assert_eq!(
            parse_inherit_fd("fd[0]:pipe:[1234]").unwrap(),
            (0, "pipe:[1234]".to_string())
        );
        assert_eq!(
            parse_inherit_fd("fd[12]:tmp/a]:b").unwrap(),
            (12, "tmp/a]:b".to_string())
        );
        for bad in [
            "fd[x]:pipe:[1]",
            "fd[1]:",
            "0:pipe:[1]",
            "fd[-1]:a",
            "fd[1]pipe",
        ] {
            assert!(
                matches!(parse_inherit_fd(bad), Err(RestoreError::BadOption { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn reopen_flags_drop_creation_flags() {
        let f = (libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC)
            as u32;
        assert_eq!(reopen_flags(f), libc::O_WRONLY | libc::O_APPEND);
        let tmp = (libc::O_RDWR | libc::O_TMPFILE | libc::O_LARGEFILE) as u32;
        assert_eq!(reopen_flags(tmp), libc::O_RDWR | libc::O_LARGEFILE);
        let dir = (libc::O_RDONLY | libc::O_DIRECTORY) as u32;
        assert_eq!(reopen_flags(dir), libc::O_DIRECTORY);
    }
}
