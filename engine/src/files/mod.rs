//! The fd table of a task: which numbers point to which open file description, both directions.
//!
//! Sharing is found with `kcmp(KCMP_FILE)` (Linux 3.5): fds of one description get one
//! `FileEntry` id, so restore opens it once and `dup2`s it to every number, keeping one shared
//! offset. Kinds: regular files, directories and memory character devices ([`reg`]) and pipes
//! ([`pipe`]); anything else is refused at dump time with the fd and what it points to.

pub(crate) mod pipe;
pub(crate) mod reg;

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;

use images::pb::{file_entry, FdinfoEntry, FileEntry, PipeData};

use crate::error::{DumpError, RestoreError};
use crate::proc;
use crate::sys;

/// Everything the fd table of one task contributes to the images.
#[derive(Debug, Default)]
pub(crate) struct FilesDump {
    pub fdinfo: Vec<FdinfoEntry>,
    pub files: Vec<FileEntry>,
    pub pipes: Vec<PipeData>,
}

/// Reads the fd table of the frozen task `pid`. `next_id` numbers file descriptions.
pub(crate) fn dump(pid: i32, shell_job: bool, next_id: &mut u32) -> Result<FilesDump, DumpError> {
    let mut out = FilesDump::default();
    // Representatives of each description seen so far, by (dev, ino): (fd, id).
    let mut seen: HashMap<(u64, u64), Vec<(i32, u32)>> = HashMap::new();
    for fd in proc::fds(pid)? {
        let link_path = format!("/proc/{pid}/fd/{fd}");
        let target = match proc::readlink(&link_path) {
            Ok(t) => t,
            // Closed while we looked: the task is frozen, so this is a race with nothing.
            Err(_) => continue,
        };
        let md = std::fs::metadata(&link_path).map_err(|source| DumpError::Io {
            pid,
            path: link_path.clone().into(),
            source,
        })?;
        let info_path = std::path::PathBuf::from(format!("/proc/{pid}/fdinfo/{fd}"));
        let info = proc::parse_fdinfo(&info_path, &proc::read(&info_path)?)?;
        let fd_flags = if info.flags & libc::O_CLOEXEC as u32 != 0 {
            libc::FD_CLOEXEC as u32
        } else {
            0
        };
        let key = (md.dev(), md.ino());
        let reps = seen.entry(key).or_default();
        let mut shared = None;
        for &(rfd, rid) in reps.iter() {
            if sys::kcmp_file(pid, fd, pid, rfd).map_err(|source| DumpError::Io {
                pid,
                path: format!("kcmp of fds {fd} and {rfd}").into(),
                source,
            })? == 0
            {
                shared = Some(rid);
                break;
            }
        }
        let id = match shared {
            Some(id) => id,
            None => {
                let id = *next_id;
                *next_id += 1;
                let kind = if target.starts_with("pipe:[") {
                    let (end, data) = pipe::dump(pid, fd, &target, &md, &info)?;
                    if let Some(d) = data {
                        if !out.pipes.iter().any(|p| p.pipe_ino == d.pipe_ino) {
                            out.pipes.push(d);
                        }
                    }
                    file_entry::Kind::Pipe(end)
                } else {
                    file_entry::Kind::Reg(reg::dump(
                        shell_job, pid, fd, &target, &link_path, &md, &info,
                    )?)
                };
                out.files.push(FileEntry {
                    id,
                    kind: Some(kind),
                });
                reps.push((fd, id));
                id
            }
        };
        out.fdinfo.push(FdinfoEntry {
            fd: fd as u32,
            id,
            fd_flags,
        });
    }
    Ok(out)
}

/// One step of the restore child's fd setup. Planned in the tracer (allocation allowed),
/// executed in the child between clone3 and its SIGSTOP (no allocation).
#[derive(Debug)]
pub(crate) enum FdOp {
    /// `open(path, flags)`, then `lseek(pos)`, placed at `fd`.
    Open {
        path: CString,
        flags: i32,
        pos: Option<u64>,
        fd: i32,
    },
    /// A new pipe: capacity, queued data, both ends placed at `read_fd`/`write_fd` (-1: closed).
    Pipe {
        read_fd: i32,
        write_fd: i32,
        read_flags: i32,
        write_flags: i32,
        size: i32,
        data: Vec<u8>,
    },
    /// `dup2(from, to)`
    Dup { from: i32, to: i32 },
    /// `fcntl(fd, F_SETFD, FD_CLOEXEC)`
    Cloexec { fd: i32 },
}

impl FdOp {
    /// Words for error messages: which fd and what.
    pub(crate) fn describe(&self) -> String {
        match self {
            FdOp::Open { path, fd, .. } => format!("fd {fd}: {}", path.to_string_lossy()),
            FdOp::Pipe {
                read_fd, write_fd, ..
            } => format!("pipe at fds {read_fd}/{write_fd}"),
            FdOp::Dup { from, to } => format!("fd {to} (dup of {from})"),
            FdOp::Cloexec { fd } => format!("fd {fd} close-on-exec"),
        }
    }
}

/// Plans the fd setup of one task from its images.
pub(crate) fn plan(
    fdinfo: &[FdinfoEntry],
    files: &[FileEntry],
    pipes: &[PipeData],
    shell_job: bool,
    image: &std::path::Path,
) -> Result<Vec<FdOp>, RestoreError> {
    let bad = |what: String| RestoreError::BadImage {
        image: image.to_owned(),
        what,
    };
    let mut ops = Vec::new();
    // First fd of each description, where it was created.
    let mut placed: HashMap<u32, i32> = HashMap::new();
    let mut pipes_done: HashMap<u64, ()> = HashMap::new();
    for e in fdinfo {
        let fd = e.fd as i32;
        if fd < 0 {
            return Err(bad(format!("fd {} out of range", e.fd)));
        }
        if let Some(&first) = placed.get(&e.id) {
            ops.push(FdOp::Dup {
                from: first,
                to: fd,
            });
        } else {
            let f = files
                .iter()
                .find(|f| f.id == e.id)
                .ok_or_else(|| bad(format!("fd {fd} names file id {} which is missing", e.id)))?;
            match &f.kind {
                Some(file_entry::Kind::Reg(r)) => ops.push(reg::plan(r, fd, shell_job, image)?),
                Some(file_entry::Kind::Pipe(p)) => {
                    if pipes_done.insert(p.pipe_ino, ()).is_none() {
                        ops.push(pipe::plan(p, fdinfo, files, pipes, image)?);
                    }
                }
                None => return Err(bad(format!("file id {} has no kind", f.id))),
            }
            placed.insert(e.id, fd);
        }
        if e.fd_flags & libc::FD_CLOEXEC as u32 != 0 {
            ops.push(FdOp::Cloexec { fd });
        }
    }
    Ok(ops)
}

/// Runs one planned step in the restore child. Allocation-free.
pub(crate) fn run_in_child(op: &FdOp) -> sys::child::Raw {
    use sys::child;
    match op {
        FdOp::Open {
            path,
            flags,
            pos,
            fd,
        } => {
            let got = child::open(path, *flags, 0)? as i32;
            if let Some(pos) = pos {
                child::lseek(got, *pos as i64)?;
            }
            place(got, *fd)
        }
        FdOp::Pipe {
            read_fd,
            write_fd,
            read_flags,
            write_flags,
            size,
            data,
        } => pipe::run_in_child(*read_fd, *write_fd, *read_flags, *write_flags, *size, data),
        FdOp::Dup { from, to } => child::dup2(*from, *to),
        FdOp::Cloexec { fd } => child::fcntl(*fd, libc::F_SETFD, libc::FD_CLOEXEC as i64),
    }
}

/// Moves `got` to `want` (if different) and closes the temporary.
pub(crate) fn place(got: i32, want: i32) -> sys::child::Raw {
    if got != want {
        sys::child::dup2(got, want)?;
        sys::child::close(got)?;
    }
    Ok(0)
}

/// The fd flags (F_GETFL bits) that open(2) and fcntl(F_SETFL) take back.
pub(crate) fn reopen_flags(flags: u32) -> i32 {
    (flags as i32)
        & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_NOCTTY | libc::O_CLOEXEC)
}
