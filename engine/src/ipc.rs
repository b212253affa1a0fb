//! System V IPC: the shared memory segments of the IPC namespace the tree owns.
//!
//! A segment is an object of the namespace, not of a task: it lives on whether or not anybody
//! has it attached, and every attachment shows in maps as `/SYSV%08x (deleted)` (the key) with
//! the segment id as inode number. So when the tree owns its IPC namespace (`ns` flavor,
//! containers) every segment of it is saved: crust enters the namespace from a thread of its
//! own (`setns(CLONE_NEWIPC)`, so `/proc/sysvipc` and the `shmctl` calls see that namespace),
//! walks the segment table with `shmctl(IPC_INFO)` and `shmctl(SHM_STAT_ANY)` (Linux 4.17),
//! and records key, id, mode, owner, size and `SHM_LOCKED` in `ipc-shm.img`. The contents are
//! read through a short attachment of crust's own, as a shmem object
//! ([`crate::mm::shmem`]): only pages the segment holds (`SEEK_DATA`), in
//! `pagemap-shmem.img`.
//!
//! Restore, once the root has created the new namespace and before any task is taken over,
//! enters it again from a crust thread and creates each segment with its saved id: the id is
//! written to `/proc/sys/kernel/shm_next_id` (per namespace) before `shmget`, as CRIU does.
//! Then owner and mode (`IPC_SET`), `SHM_LOCK`, and the contents through crust's attachment.
//! Each task's attachments are made by the task itself (remote `shmat` at the saved address,
//! [`crate::mm::shmem::attach_sysv`]), so they are attachments of the one segment again and
//! writes of one task are seen by the others.
//!
//! A segment of an IPC namespace the tree does not own is another matter: it belongs to tasks
//! outside the tree, so such an attachment is refused at dump, like CRIU does.
//!
//! Not restored: creator ids (the segment is created with crust's credentials), times and
//! last pids. A segment already removed (`IPC_RMID`) but still attached is refused.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use images::pb::SysvShmEntry;
use images::{ImageDir, ImageKind};

use crate::error::{DumpError, RestoreError};
use crate::mm::shmem::ShmemDump;
use crate::sys::ipc as sysipc;

/// `shm_perm.mode`: the segment is locked in memory.
const SHM_LOCKED: u32 = 0o2000;
/// `shm_perm.mode`: removed, destroyed on its last detach.
const SHM_DEST: u32 = 0o1000;

fn ns_path(pid: i32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/ipc"))
}

/// Whether `pid` lives in another IPC namespace than crust (one the tree owns).
pub(crate) fn owns_ipc_ns(pid: i32) -> bool {
    let theirs = std::fs::read_link(ns_path(pid));
    theirs.is_ok() && theirs.ok() != std::fs::read_link("/proc/self/ns/ipc").ok()
}

/// Runs `f` on a thread of crust that entered the IPC namespace of `pid`.
fn in_ipc_ns<T: Send>(
    pid: i32,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    let ns = File::open(ns_path(pid))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWIPC)
                .map_err(std::io::Error::from)?;
            f()
        })
        .join()
        .map_err(|_| std::io::Error::other("IPC namespace thread panicked"))?
    })
}

/// Every segment of the table: its state and a descriptor of its contents.
fn list_segments() -> std::io::Result<Vec<(sysipc::ShmStat, Option<File>)>> {
    let max = sysipc::shm_max_index()?;
    let mut out = Vec::new();
    for index in 0..=max {
        let st = match sysipc::shm_stat_index(index) {
            Ok(st) => st,
            // A free slot of the table.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => continue,
            Err(e) => return Err(e),
        };
        // A removed segment is refused by the caller: its contents are not needed.
        let file = if st.mode & SHM_DEST != 0 {
            None
        } else {
            Some(File::from(sysipc::shm_file(st.shmid, st.size, false)?))
        };
        out.push((st, file));
    }
    Ok(out)
}

/// Saves every System V shared memory segment of the IPC namespace of `root` (which the tree
/// owns): `ipc-shm.img`, and the contents as shmem objects of `shmem` (saved with the others).
pub(crate) fn dump_shm(root: i32, dir: &ImageDir, shmem: &mut ShmemDump) -> Result<(), DumpError> {
    let segments = in_ipc_ns(root, list_segments).map_err(|source| DumpError::Io {
        pid: root,
        path: PathBuf::from(format!(
            "System V shared memory of {}",
            ns_path(root).display()
        )),
        source,
    })?;
    let mut entries = Vec::with_capacity(segments.len());
    let mut ids = Vec::with_capacity(segments.len());
    for (st, file) in segments {
        let Some(file) = file else {
            return Err(DumpError::Unsupported {
                pid: root,
                what: format!(
                    "System V shared memory segment shmid {} removed while still attached",
                    st.shmid
                ),
            });
        };
        let object = shmem.add_sysv(st.shmid, st.size, file);
        crate::debug!(
            "shm segment {} key {:#x} mode {:o} {} bytes: object {object}",
            st.shmid,
            st.key,
            st.mode,
            st.size
        );
        ids.push(st.shmid);
        entries.push(SysvShmEntry {
            key: st.key,
            shmid: st.shmid,
            mode: st.mode & 0o777,
            uid: st.uid,
            gid: st.gid,
            cuid: st.cuid,
            cgid: st.cgid,
            size: st.size,
            locked: st.mode & SHM_LOCKED != 0,
            object,
        });
    }
    shmem.set_sysv_ids(ids);
    dir.write(ImageKind::IpcShm, None, &entries)?;
    Ok(())
}

/// The segments of a dump, read and checked before anything is created.
#[derive(Debug, Default)]
pub(crate) struct ShmRestore {
    entries: Vec<SysvShmEntry>,
}

impl ShmRestore {
    /// Reads `ipc-shm.img`, when the dump has one. `ipc_owned`: the tree is restored into a new
    /// IPC namespace (segments of any other would clash with the host's).
    pub fn load(dir: &ImageDir, ipc_owned: bool) -> Result<ShmRestore, RestoreError> {
        if !dir.exists(ImageKind::IpcShm, None) {
            return Ok(ShmRestore::default());
        }
        let image = dir.file_path(ImageKind::IpcShm, None);
        let entries: Vec<SysvShmEntry> = dir.read(ImageKind::IpcShm, None)?;
        if !entries.is_empty() && !ipc_owned {
            return Err(RestoreError::BadImage {
                image,
                what: "System V shared memory of a tree that does not own its IPC namespace".into(),
            });
        }
        for (i, e) in entries.iter().enumerate() {
            if e.shmid < 0 || e.size == 0 || entries[..i].iter().any(|x| x.shmid == e.shmid) {
                return Err(RestoreError::BadImage {
                    image,
                    what: format!("segment shmid {} invalid or repeated", e.shmid),
                });
            }
            // The contents are checked against the size now, not after the fork.
            crate::mm::shmem::check_contents(dir, e.object, e.size)?;
        }
        Ok(ShmRestore { entries })
    }

    /// Creates every segment in the IPC namespace of `root` (the restored root, which created
    /// it) with its saved id, owner, mode, lock and contents.
    pub fn create(&self, dir: &ImageDir, root: i32) -> Result<(), RestoreError> {
        if self.entries.is_empty() {
            return Ok(());
        }
        let what = |e: Option<&SysvShmEntry>| match e {
            Some(e) => format!("System V shared memory segment shmid {}", e.shmid),
            None => format!("IPC namespace {}", ns_path(root).display()),
        };
        let contents = in_ipc_ns(root, || {
            Ok(self
                .entries
                .iter()
                .map(|e| create_one(e).map(|f| (e, f)).map_err(|err| (e, err)))
                .collect::<Result<Vec<_>, _>>())
        })
        .map_err(|source| RestoreError::File {
            path: what(None),
            source,
        })?
        .map_err(|(e, source)| RestoreError::File {
            path: what(Some(e)),
            source,
        })?;
        for (e, file) in contents {
            crate::mm::shmem::fill_sysv(dir, e.object, e.size, &file)?;
            crate::debug!(
                "shm segment {} (key {:#x}) created, fd {}",
                e.shmid,
                e.key,
                file.as_raw_fd()
            );
        }
        Ok(())
    }
}

/// In the namespace: the segment of `e` with its id, owner, mode and lock; a descriptor of it.
fn create_one(e: &SysvShmEntry) -> std::io::Result<File> {
    std::fs::write("/proc/sys/kernel/shm_next_id", e.shmid.to_string())?;
    let flags = libc::IPC_CREAT | libc::IPC_EXCL | (e.mode & 0o777) as i32;
    let id = sysipc::shmget(e.key, e.size, flags)?;
    if id != e.shmid {
        let _ = sysipc::shm_remove(id);
        return Err(std::io::Error::other(format!(
            "the kernel gave the segment id {id}"
        )));
    }
    sysipc::shm_set(id, e.uid, e.gid, e.mode & 0o777)?;
    if e.locked {
        sysipc::shm_lock(id)?;
    }
    Ok(File::from(sysipc::shm_file(id, e.size, true)?))
}
