//! The fd table of a task: which numbers point to which open file description, both directions.
//!
//! Sharing is found with `kcmp(KCMP_FILE)` (Linux 3.5): fds of one description get one
//! `FileEntry` id, so restore opens it once and `dup2`s it to every number, keeping one shared
//! offset. Kinds: regular files, directories and memory character devices ([`reg`]) and pipes
//! ([`pipe`]); anything else is refused at dump time with the fd and what it points to.

pub(crate) mod pipe;
pub(crate) mod reg;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;

use images::pb::{file_entry, FdinfoEntry, FileEntry, PipeData};

use crate::error::{DumpError, RestoreError};
use crate::proc;
use crate::sys;

/// The file descriptions of the whole tree, collected task by task. Descriptions shared
/// between tasks (inherited across fork, passed over sockets) get one id.
#[derive(Debug, Default)]
pub(crate) struct FilesCtx {
    pub files: Vec<FileEntry>,
    pub pipes: Vec<PipeData>,
    next_id: u32,
    /// Representatives of each description seen so far, by (dev, ino): (pid, fd, id).
    seen: HashMap<(u64, u64), Vec<(i32, i32, u32)>>,
}

impl FilesCtx {
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
            let info = proc::parse_fdinfo(&info_path, &proc::read(&info_path)?)?;
            let fd_flags = if info.flags & libc::O_CLOEXEC as u32 != 0 {
                libc::FD_CLOEXEC as u32
            } else {
                0
            };
            let reps = self.seen.entry((md.dev(), md.ino())).or_default();
            let mut shared = None;
            for &(rpid, rfd, rid) in reps.iter() {
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
                    let kind = if target.starts_with("pipe:[") {
                        let (end, data) = pipe::dump(pid, fd, &target, &md, &info)?;
                        if let Some(d) = data {
                            if !self.pipes.iter().any(|p| p.pipe_ino == d.pipe_ino) {
                                self.pipes.push(d);
                            }
                        }
                        file_entry::Kind::Pipe(end)
                    } else {
                        file_entry::Kind::Reg(reg::dump(
                            shell_job, pid, fd, &target, &link_path, &md, &info,
                        )?)
                    };
                    self.files.push(FileEntry {
                        id,
                        kind: Some(kind),
                    });
                    reps.push((pid, fd, id));
                    id
                }
            };
            out.push(FdinfoEntry {
                fd: fd as u32,
                id,
                fd_flags,
            });
        }
        Ok(out)
    }
}

/// Opens every file description of the tree in crust, ready to be handed to the tasks that
/// hold it (over a unix socket, `SCM_RIGHTS`): one description shared by several tasks or fds
/// is one open here, so sharing and the common offset come back by construction.
pub(crate) fn open_all(
    files: &[FileEntry],
    pipes: &[PipeData],
    shell_job: bool,
    image: &std::path::Path,
) -> Result<HashMap<u32, OwnedFd>, RestoreError> {
    let mut out = HashMap::new();
    let mut pipe_ends: HashMap<u64, Vec<(u32, &images::pb::PipeEnd)>> = HashMap::new();
    for f in files {
        match &f.kind {
            Some(file_entry::Kind::Reg(r)) => {
                out.insert(f.id, reg::open(r, shell_job)?);
            }
            Some(file_entry::Kind::Pipe(p)) => {
                pipe_ends.entry(p.pipe_ino).or_default().push((f.id, p))
            }
            None => {
                return Err(RestoreError::BadImage {
                    image: image.to_owned(),
                    what: format!("file id {} has no kind", f.id),
                })
            }
        }
    }
    for (ino, ends) in pipe_ends {
        let data = pipes.iter().find(|d| d.pipe_ino == ino);
        for (id, fd) in pipe::open(ino, &ends, data, image)? {
            out.insert(id, fd);
        }
    }
    Ok(out)
}

/// The fd flags (F_GETFL bits) that open(2) and fcntl(F_SETFL) take back.
pub(crate) fn reopen_flags(flags: u32) -> i32 {
    (flags as i32)
        & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_NOCTTY | libc::O_CLOEXEC)
}
