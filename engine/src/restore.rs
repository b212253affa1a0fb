//! Restore: crust forks the tree itself, every task with its saved pid (`clone3` with
//! `set_tid`, Linux 5.5), from a single-threaded point: crust forks the root, each task forks
//! its own children in pid order (so parents, children and their order come back), zombies
//! are forked and die with their saved status. Phases are sequenced by crust through futex
//! words shared with every task:
//!
//! 1. created: sessions (`setsid` by session leaders before they fork) and children exist;
//! 2. groups: group leaders `setpgid(0, 0)`, then members join their group; a session or
//!    group whose leader had exited gets a helper task with that id (see [`Helper`]), which
//!    exits and is reaped by its parent once groups are set;
//! 3. files: each task copies its descriptors out of crust with `pidfd_getfd` (through a
//!    pidfd of crust, the only descriptor of crust's that the tasks keep across their forks),
//!    where crust opened every file description of the tree once (so sharing between fds and
//!    tasks, and the shared offset, come back by construction), puts them at their numbers,
//!    sets cwd and name, and stops itself (SIGSTOP) once crust has seized it.
//!
//! Then crust, as tracer, takes every task over with remote syscalls:
//! a trampoline (a `syscall`, the remote batch code, a data page, the batch table and its
//! arguments) where neither layout has anything, which the task maps itself before it stops
//! (or crust with a remote `mmap` if that place was taken), through which the calls run in
//! batches ([`crate::remote::Queue`]) rather than one single-step each, flushed only where a
//! result is needed (a simple task: one batch, then the trampoline's own unmapping); the
//! child's rseq (glibc's) unregistered, or the kernel kills the task with SIGSEGV once that
//! memory is gone; everything else unmapped; `[vvar]`, `[vvar_vclock]`, `[vdso]` moved to
//! their saved places; the saved VMAs mapped and filled ([`crate::mm`]: a task with few pages
//! reads them itself from the pages files, in the same batch); `PR_SET_MM_MAP`; threads created
//! with a remote `clone3(set_tid)`; dispositions, queued signals, rlimits, per-thread state;
//! the trampoline unmaps itself and the final registers go in at the trap after it. A process
//! whose leader thread had exited gets its leader back only until its threads exist: the
//! leader then runs `exit` (the thread alone) and stays the zombie thread it was.
//! All tasks are released together, only once every one is complete.
//!
//! Every image is read and checked before anything is created. A failure after the fork kills
//! everything that was created; the images are never modified.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use images::pb::{
    CoreEntry, FdinfoEntry, FileEntry, FsEntry, MmEntry, PipeData, PstreeEntry, RlimitEntry,
    SigactionEntry,
};
use images::{ImageDir, ImageKind, PAGE_SIZE};
use parasite::{RemoteAddr, StopKind, Tid, Tracee, WaitStatus};

use crate::error::{fault, RestoreError};
use crate::files;
use crate::mm::{self, rsys, MmFds};
use crate::remote::Queue;
use crate::sys::{self, child};
use crate::{proc, regs, signals};

/// Options of one restore, as `crust restore` takes them.
#[derive(Debug, Clone, Default)]
pub struct RestoreOpts {
    pub images_dir: PathBuf,
    /// The tree is a job of a shell: its terminal fds are reopened on crust's own terminal.
    pub shell_job: bool,
    /// `--inherit-fd fd[N]:KEY`: crust's fd N stands for the object KEY (`pipe:[INO]`, or a
    /// file's path).
    pub inherit_fds: Vec<String>,
    /// Restore files whose size changed since the dump (`--skip-file-validation`).
    pub skip_file_validation: bool,
    /// Take the saved file locks and leases again (`--file-locks`); without it, as with
    /// CRIU, they are left out (files::locks).
    pub file_locks: bool,
}

/// The restored tree, running.
#[derive(Debug, Clone)]
pub struct Restored {
    pub root_pid: i32,
    pub pids: Vec<i32>,
}

/// Everything one live task's restore needs, read and checked before anything is created.
struct TaskImages {
    cores: Vec<CoreEntry>,
    mm: MmEntry,
    /// Its pages, resolved through the parent image directories (mm::TaskPages).
    pages: mm::TaskPages,
    fdinfo: Vec<FdinfoEntry>,
    fs: FsEntry,
    sigacts: Vec<SigactionEntry>,
    rlimits: Vec<RlimitEntry>,
}

/// One task of the tree as the restore plans it.
#[derive(Default)]
struct Task {
    entry: PstreeEntry,
    /// Not a task of the images: a session or group helper ([`Helper`]), gone before the
    /// tree runs.
    helper: bool,
    /// clone3's set_tid: the pid inside the tree's pid namespace first, if it has one.
    tids: Vec<i32>,
    /// The pid and thread ids as the task sees them (inside its pid namespace).
    ns_pid: i32,
    /// Its process group as it sees it.
    ns_pgid: i32,
    ns_threads: Vec<i32>,
    /// None for a zombie.
    images: Option<TaskImages>,
    /// Indices of the children, in pid order.
    children: Vec<usize>,
    /// Where the task's descriptors sit while crust works on it (above all of its own).
    svc_base: i32,
    /// Placement of each descriptor the task takes: its number in the task and close-on-exec.
    places: Vec<(i32, bool)>,
    /// For each of `places`, the descriptor of crust's it copies.
    sources: Vec<RawFd>,
    /// Where the task maps its trampoline itself before it stops (free in its saved layout
    /// and in crust's), or 0.
    tramp: u64,
    cwd: CString,
    /// A descriptor of its removed working directory to `fchdir` to instead, or -1.
    cwd_fd: i32,
    /// The directory to `chroot` into once the working directory is set (the saved root,
    /// as the tree's mount namespace names it), or empty for the namespace's own root.
    root: CString,
    comm: CString,
    mm_fds: MmFds,
    /// Areas the task prepares before it forks, for its children to inherit (mm::inherit).
    premap: mm::Premap,
    /// The pages files of the images (mm::PageFiles), shared by all tasks.
    page_files: std::sync::Arc<mm::PageFiles>,
}

fn bad(image: PathBuf, what: String) -> RestoreError {
    RestoreError::BadImage { image, what }
}

fn load_task(
    dir: &ImageDir,
    e: &PstreeEntry,
    mem: &mut mm::RestoreMem,
) -> Result<TaskImages, RestoreError> {
    let pid = e.pid;
    let id = Some(pid as u32);
    let mut cores = Vec::new();
    for (i, &tid) in e.threads.iter().enumerate() {
        let core: CoreEntry = dir.read_one(ImageKind::Core, Some(tid as u32))?;
        let path = dir.file_path(ImageKind::Core, Some(tid as u32));
        // An exited leader has no registers: it is recreated only to exit again.
        let exited = i == 0 && e.leader_exited;
        let ok = core
            .thread
            .as_ref()
            .is_some_and(|t| (t.regs.is_some() || exited) && t.tid == tid)
            && (i != 0 || core.task.is_some());
        if !ok {
            return Err(bad(path, "thread or task state missing".into()));
        }
        cores.push(core);
    }
    if e.leader_exited && e.threads.len() < 2 {
        return Err(bad(
            dir.file_path(ImageKind::Pstree, None),
            format!("pid {pid}: its leader exited but no other thread is left"),
        ));
    }
    if cores.first().is_none_or(|c| c.task.is_none()) || e.threads.first() != Some(&pid) {
        return Err(bad(
            dir.file_path(ImageKind::Pstree, None),
            format!("pid {pid}: the leader thread must come first"),
        ));
    }
    let mm: MmEntry = dir.read_one(ImageKind::Mm, id)?;
    check_layout(&mm, &dir.file_path(ImageKind::Mm, id))?;
    // Pages through the parent chain, each inside a mapping that takes them; the vDSO.
    let pages = mem.load_task(dir, pid, &mm)?;
    Ok(TaskImages {
        cores,
        mm,
        pages,
        fdinfo: dir.read(ImageKind::Fdinfo, id)?,
        fs: dir.read_one(ImageKind::Fs, id)?,
        sigacts: dir.read(ImageKind::Sigacts, id)?,
        rlimits: dir.read(ImageKind::Rlimits, id)?,
    })
}

const TASK_SIZE: u64 = 0x7fff_ffff_f000;
/// Where the batch code sits in the trampoline's code page, after its `syscall`.
const BATCH_CODE_AT: u64 = 64;
/// `syscall`, at the start of the trampoline.
const SYSCALL_INSN: [u8; 2] = [0x0f, 0x05];
/// Bytes of the trampoline's remote batch table, and of its arguments area.
const BATCH_AREA: u64 = 4 * PAGE_SIZE;
/// Bytes of the trampoline: code page, data page, batch table, arguments.
const TRAMP_LEN: u64 = 2 * PAGE_SIZE + 2 * BATCH_AREA;

/// VMAs sorted, page aligned, non-overlapping, inside the user address space.
fn check_layout(mm: &MmEntry, image: &Path) -> Result<(), RestoreError> {
    let mut prev_end = 0;
    for v in &mm.vmas {
        if v.kind() == images::pb::VmaKind::VmaVsyscall {
            continue;
        }
        if v.start % PAGE_SIZE != 0 || v.end % PAGE_SIZE != 0 || v.start >= v.end {
            return Err(bad(
                image.into(),
                format!("mapping {:#x}-{:#x} is malformed", v.start, v.end),
            ));
        }
        if v.start < prev_end || v.end > TASK_SIZE {
            return Err(bad(
                image.into(),
                format!(
                    "mapping {:#x}-{:#x} overlaps another or leaves the address space",
                    v.start, v.end
                ),
            ));
        }
        if v.pgoff % PAGE_SIZE != 0 {
            return Err(bad(
                image.into(),
                format!("mapping {:#x}: unaligned file offset", v.start),
            ));
        }
        prev_end = v.end;
    }
    Ok(())
}

/// A file a mapping or the exe refers to must still be the one that was dumped: same size,
/// mtime and ELF build-id, unless `skip` (`--skip-file-validation`).
fn check_file(f: &images::pb::FileId, skip: bool) -> Result<(), RestoreError> {
    let md = std::fs::metadata(&f.path).map_err(|source| RestoreError::File {
        path: f.path.clone(),
        source,
    })?;
    if skip {
        return Ok(());
    }
    let mtime = md.mtime() * 1_000_000_000 + md.mtime_nsec();
    if md.size() != f.size {
        return Err(RestoreError::FileChanged {
            path: f.path.clone(),
            what: format!("size {} at dump, {} now", f.size, md.size()),
        });
    }
    if mtime != f.mtime_ns {
        return Err(RestoreError::FileChanged {
            path: f.path.clone(),
            what: "modified since dump".into(),
        });
    }
    if !f.build_id.is_empty() {
        let now = std::fs::File::open(&f.path).map_err(|source| RestoreError::File {
            path: f.path.clone(),
            source,
        })?;
        let now = files::elf::build_id_of(&now).unwrap_or_default();
        if now != f.build_id {
            return Err(RestoreError::FileChanged {
                path: f.path.clone(),
                what: format!(
                    "build-id changed: was {}, now {}",
                    files::elf::hex(&f.build_id),
                    files::elf::hex(&now)
                ),
            });
        }
    }
    Ok(())
}

fn cstring(s: &str, image: &Path) -> Result<CString, RestoreError> {
    CString::new(s).map_err(|_| bad(image.into(), format!("{s:?} holds a NUL byte")))
}

/// What [`plan`] made.
struct Plan {
    tasks: Vec<Task>,
    inv: images::pb::InventoryEntry,
    /// Crust's descriptors the tasks copy (every file description of the tree, mapped
    /// files, shmem objects, removed working directories), held until every task has its own.
    held: Vec<OwnedFd>,
    /// Crust's `[vdso]`, `[vvar]`... which every task has where crust has them.
    specials: Vec<proc::Vma>,
}

/// Reads and checks every image, opens every file description, and plans each task.
fn plan(dir: &ImageDir, opts: &RestoreOpts) -> Result<Plan, RestoreError> {
    let inv = dir.read_inventory()?;
    let own_pidns = inv.root_ns_flags & libc::CLONE_NEWPID as u64 != 0;
    let pstree: Vec<PstreeEntry> = dir.read(ImageKind::Pstree, None)?;
    let pstree_path = dir.file_path(ImageKind::Pstree, None);
    let root = inv.root_pid;
    if pstree.first().map(|e| e.pid) != Some(root) {
        return Err(bad(
            pstree_path,
            format!("the root pid {root} must come first"),
        ));
    }
    let index: HashMap<i32, usize> = pstree.iter().enumerate().map(|(i, e)| (e.pid, i)).collect();
    if index.len() != pstree.len() || pstree.iter().any(|e| e.pid <= 0) {
        return Err(bad(pstree_path, "duplicate or invalid pids".into()));
    }
    let files_img: Vec<FileEntry> = dir.read(ImageKind::Files, None)?;
    let pipes: Vec<PipeData> = dir.read(ImageKind::PipeData, None)?;
    let mut tasks = Vec::with_capacity(pstree.len());
    let mut mem = mm::RestoreMem::default();
    for (i, e) in pstree.iter().enumerate() {
        if i > 0 && index.get(&e.ppid).is_none_or(|&p| p >= i) {
            return Err(bad(
                pstree_path.clone(),
                format!(
                    "pid {}: parent {} is not before it in the tree",
                    e.pid, e.ppid
                ),
            ));
        }
        let images = if e.zombie {
            None
        } else {
            Some(load_task(dir, e, &mut mem)?)
        };
        let (tids, ns_pid, ns_threads) = if own_pidns {
            if e.ns_pid <= 0 || (!e.zombie && e.ns_threads.len() != e.threads.len()) {
                return Err(bad(
                    pstree_path.clone(),
                    format!("pid {}: pids inside the pid namespace missing", e.pid),
                ));
            }
            (vec![e.ns_pid, e.pid], e.ns_pid, e.ns_threads.clone())
        } else {
            (vec![e.pid], e.pid, e.threads.clone())
        };
        tasks.push(Task {
            tids,
            ns_pid,
            ns_pgid: if own_pidns && e.ns_pgid > 0 {
                e.ns_pgid
            } else {
                e.pgid
            },
            helper: false,
            ns_threads,
            entry: e.clone(),
            images,
            children: Vec::new(),
            svc_base: 0,
            places: Vec::new(),
            sources: Vec::new(),
            tramp: 0,
            cwd: CString::default(),
            cwd_fd: -1,
            root: CString::default(),
            // A zombie's name; a live task's comes with its images below.
            comm: CString::new(e.comm.as_bytes()).unwrap_or_default(),
            mm_fds: MmFds {
                exe: -1,
                ..Default::default()
            },
            premap: mm::Premap::default(),
            page_files: Default::default(),
        });
    }
    for i in 1..tasks.len() {
        let p = index[&tasks[i].entry.ppid];
        tasks[p].children.push(i);
    }
    for i in 0..tasks.len() {
        if let Some(&l) = index.get(&tasks[i].entry.pgid) {
            tasks[i].ns_pgid = tasks[l].ns_pid;
        }
    }
    // Sessions and groups whose leader is gone get a helper task each.
    let helpers =
        plan_helpers(&pstree, own_pidns).map_err(|what| bad(pstree_path.clone(), what))?;
    add_helpers(&mut tasks, &index, &helpers, own_pidns);
    for t in &tasks {
        let pid = t.entry.pid;
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            return Err(RestoreError::PidTaken {
                pid,
                comm: comm.trim().to_string(),
            });
        }
    }

    // Locks without --file-locks are left out; leases go to the tasks holding them.
    files::locks::plan(
        &files_img,
        opts.file_locks,
        tasks
            .iter_mut()
            .filter_map(|t| t.images.as_mut().map(|i| &mut i.fdinfo)),
    );
    // Every description of the tree, opened once in crust, and removed working directories.
    let cwd_ghosts: Vec<&images::pb::GhostFile> = tasks
        .iter()
        .filter_map(|t| t.images.as_ref()?.fs.cwd_ghost.as_ref())
        .collect();
    let opened = files::open_all(&files_img, &pipes, &cwd_ghosts, opts, dir)?;
    drop(cwd_ghosts);
    let (descs, cwd_dirs) = (opened.files, opened.cwds);
    // A memfd both open and mapped is one object: the mappings use the files' memfd.
    let memfds: HashMap<u64, RawFd> = files_img
        .iter()
        .filter_map(|f| match &f.kind {
            Some(images::pb::file_entry::Kind::Memfd(m)) => {
                descs.get(&f.id).map(|fd| (m.ino, fd.as_raw_fd()))
            }
            _ => None,
        })
        .collect();
    // Memory (mm::RestoreMem): every shmem object created and filled once; the areas each task
    // prepares for its children to inherit.
    let plan_tasks: Vec<mm::PlanTask<'_>> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| mm::PlanTask {
            // A helper keeps its parent's memory as it is: the tasks it forks inherit from
            // their saved parent through it.
            parent: (i > 0 && !t.helper).then(|| index[&t.entry.ppid]),
            image: t.images.as_ref().map(|img| (&img.mm, &img.pages)),
        })
        .collect();
    let premaps = mem.prepare(dir, &plan_tasks, &memfds)?;
    drop(plan_tasks);
    for (t, p) in tasks.iter_mut().zip(premaps) {
        t.premap = p;
    }
    let mut opened: HashMap<String, OwnedFd> = HashMap::new();
    // A mapped file is checked once however many tasks map it (the same libraries in every
    // task of a tree).
    let mut checked = std::collections::HashSet::new();
    let mut check = |f: &images::pb::FileId| -> Result<(), RestoreError> {
        let key = (f.path.clone(), f.size, f.mtime_ns, f.build_id.clone());
        if !checked.contains(&key) {
            check_file(f, opts.skip_file_validation)?;
            checked.insert(key);
        }
        Ok(())
    };
    for t in &mut tasks {
        let Some(img) = &t.images else { continue };
        let pid = t.entry.pid;
        let id = Some(pid as u32);
        let fdinfo_path = dir.file_path(ImageKind::Fdinfo, id);
        let send = &mut t.sources;
        for e in &img.fdinfo {
            let fd = descs.get(&e.id).ok_or_else(|| {
                bad(
                    fdinfo_path.clone(),
                    format!("fd {} names file id {} which is missing", e.fd, e.id),
                )
            })?;
            if e.fd > i32::MAX as u32 / 2 {
                return Err(bad(
                    fdinfo_path.clone(),
                    format!("fd {} out of range", e.fd),
                ));
            }
            send.push(fd.as_raw_fd());
            t.places
                .push((e.fd as i32, e.fd_flags & libc::FD_CLOEXEC as u32 != 0));
        }
        let max_fd = img.fdinfo.iter().map(|e| e.fd as i32).max().unwrap_or(2);
        t.svc_base = max_fd.max(2) + 1;
        // Service descriptors: the exe and every mapped file, for PR_SET_MM_MAP and mmap.
        let mut next = t.svc_base;
        let mut service = |path: &str,
                           send: &mut Vec<RawFd>,
                           places: &mut Vec<(i32, bool)>|
         -> Result<i32, RestoreError> {
            // A shared mapping that may write needs a writable descriptor (mm).
            let write = mm::file_needs_write(&img.mm, path);
            let key = format!("{}{path}", if write { "w:" } else { "r:" });
            if !opened.contains_key(&key) {
                let c = cstring(path, &dir.file_path(ImageKind::Mm, id))?;
                let mode = if write { libc::O_RDWR } else { libc::O_RDONLY };
                let f =
                    sys::open(&c, mode | libc::O_CLOEXEC).map_err(|source| RestoreError::File {
                        path: path.to_string(),
                        source,
                    })?;
                opened.insert(key.clone(), f);
            }
            send.push(opened[&key].as_raw_fd());
            places.push((next, true));
            next += 1;
            Ok(next - 1)
        };
        let exe = img.mm.exe.clone().unwrap_or_default();
        check(&exe)?;
        t.mm_fds.exe = service(&exe.path, send, &mut t.places)?;
        for v in &img.mm.vmas {
            if let Some(f) = &v.file {
                if !t.mm_fds.files.iter().any(|(p, _)| p == &f.path) {
                    check(f)?;
                    let fd = service(&f.path, send, &mut t.places)?;
                    t.mm_fds.files.push((f.path.clone(), fd));
                }
            }
        }
        // Every shmem object the task maps, created by mm::RestoreMem.
        for v in &img.mm.vmas {
            let Some(o) = &v.shmem else { continue };
            if !t.mm_fds.shmem.iter().any(|(id, _)| *id == o.id) {
                let fd = mem.shmem_fd(o.id).ok_or_else(|| {
                    bad(
                        dir.file_path(ImageKind::Mm, id),
                        format!("shmem object {} unknown", o.id),
                    )
                })?;
                send.push(fd);
                t.places.push((next, true));
                t.mm_fds.shmem.push((o.id, next));
                next += 1;
            }
        }
        // A task with few pages reads them itself (mm::FILL_IN_TASK_MAX).
        let page_bytes: u64 = img.pages.runs.iter().map(|r| r.len).sum();
        if page_bytes <= mm::FILL_IN_TASK_MAX {
            let mut used: Vec<u32> = img.pages.runs.iter().map(|r| r.file).collect();
            used.sort_unstable();
            used.dedup();
            for f in used {
                send.push(mem.files.get(f).1.as_raw_fd());
                t.places.push((next, true));
                t.mm_fds.pages.push((f, next));
                next += 1;
            }
        }
        // A removed working directory: crust's descriptor of the one it made again.
        if let Some(g) = &img.fs.cwd_ghost {
            let fd = cwd_dirs.get(&g.id).ok_or_else(|| {
                bad(
                    dir.file_path(ImageKind::Fs, id),
                    format!("working directory {} not made", g.path),
                )
            })?;
            send.push(fd.as_raw_fd());
            t.places.push((next, true));
            t.cwd_fd = next;
        }
        t.cwd = cstring(&img.fs.cwd, &dir.file_path(ImageKind::Fs, id))?;
        if img.fs.root != "/" {
            t.root = cstring(&img.fs.root, &dir.file_path(ImageKind::Fs, id))?;
        }
        let task_core = img.cores[0].task.as_ref().expect("checked in load");
        t.comm = cstring(&task_core.comm, &dir.file_path(ImageKind::Core, id))?;
    }
    let mut held: Vec<OwnedFd> = descs.into_values().collect();
    held.extend(opened.into_values());
    held.extend(cwd_dirs.into_values());
    held.extend(mem.take_shmem());
    let page_files = std::sync::Arc::new(mem.into_files());
    for t in &mut tasks {
        t.page_files = page_files.clone();
    }
    // Each task maps its trampoline itself where neither layout has anything: its saved one
    // and crust's, which it is a copy of (it finds out whether crust's changed there).
    let mut own = proc::maps(std::process::id() as i32)?;
    for t in &mut tasks {
        if let Some(img) = &t.images {
            t.tramp = mm::find_free(&img.mm, &own, (0, 0), TRAMP_LEN).unwrap_or(0);
        }
    }
    own.retain(|v| mm::special_kind(&v.name).is_some());
    Ok(Plan {
        tasks,
        inv,
        held,
        specials: own,
    })
}

/// A task the restore adds for a session or process group whose leader had exited, as CRIU
/// does: sessions are only inherited through fork, and a group can only be joined while it
/// exists. Forked with pid = that id, a session helper calls `setsid()` and forks the
/// members that had entered the session from outside it (they were reparented to the
/// subreaper or pid-namespace init that forks the helper); a group helper calls
/// `setpgid(0, 0)` in its session and lives while members join. Both exit once groups are
/// set, and their parents reap them before any task is taken over, so the members end up
/// with the parent they had (the kernel reparents them to the same reaper).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Helper {
    /// Its pid: the id of the session or group (its group is its own, either way).
    pid: i32,
    /// The same inside the tree's pid namespace (`pid` without one).
    ns_pid: i32,
    /// Who forks it: a task of the tree, or a session helper (by its pid).
    parent: i32,
    sid: i32,
    /// Tasks it forks instead of their saved parent.
    adopts: Vec<i32>,
}

/// Finds the sessions and groups of the saved tree whose leader is gone and plans a helper
/// for each (sessions first); an arrangement fork cannot rebuild is an error saying why.
/// `entries` is the pstree, root first, every parent before its children.
fn plan_helpers(entries: &[PstreeEntry], own_pidns: bool) -> Result<Vec<Helper>, String> {
    let Some(root) = entries.first() else {
        return Ok(Vec::new());
    };
    let by_pid: HashMap<i32, &PstreeEntry> = entries.iter().map(|e| (e.pid, e)).collect();
    let live: Vec<&PstreeEntry> = entries.iter().filter(|e| !e.zombie).collect();
    let parent_of = |e: &PstreeEntry| -> Result<&PstreeEntry, String> {
        by_pid
            .get(&e.ppid)
            .copied()
            .ok_or_else(|| format!("pid {}: parent {} is not in the tree", e.pid, e.ppid))
    };
    // The root's session when it does not lead it is crust's own at restore (a shell job).
    let outside_sid = (root.sid != root.pid).then_some(root.sid);
    let mut helpers: Vec<Helper> = Vec::new();

    let mut sids: Vec<i32> = live.iter().map(|e| e.sid).collect();
    sids.sort_unstable();
    sids.dedup();
    for s in sids {
        if Some(s) == outside_sid {
            continue;
        }
        // Members that entered the session from outside it: their parent is elsewhere.
        let mut entered = Vec::new();
        for e in live
            .iter()
            .filter(|e| e.sid == s && e.pid != s && e.pid != root.pid)
        {
            if parent_of(e)?.sid != s {
                entered.push(*e);
            }
        }
        match by_pid.get(&s) {
            Some(l) if !l.zombie && l.sid == s => {
                if let Some(e) = entered.first() {
                    return Err(format!(
                        "pid {}: in session {s}, whose leader lives, but its parent {} is not (not supported)",
                        e.pid, e.ppid
                    ));
                }
                continue;
            }
            Some(l) if l.zombie => {
                return Err(format!(
                    "session {s}: its leader is a zombie (not supported)"
                ))
            }
            Some(_) => {
                return Err(format!(
                    "session {s}: its leader's pid now names a task of another session"
                ))
            }
            None => {}
        }
        let Some(first) = entered.first() else {
            return Err(format!(
                "session {s}: its leader is gone and no member is the child of a task outside it"
            ));
        };
        let parent = first.ppid;
        if let Some(e) = entered.iter().find(|e| e.ppid != parent) {
            return Err(format!(
                "session {s}: members {} and {} whose leader is gone have different parents ({parent} and {})",
                first.pid, e.pid, e.ppid
            ));
        }
        let p = parent_of(first)?;
        if !(p.subreaper || (own_pidns && p.pid == root.pid)) {
            return Err(format!(
                "session {s}: the members whose leader is gone have parent {parent}, neither a subreaper nor the init of the tree's pid namespace"
            ));
        }
        let ns_pid = if own_pidns { first.ns_sid } else { s };
        if ns_pid <= 0 {
            return Err(format!(
                "session {s}: its id inside the pid namespace is missing"
            ));
        }
        helpers.push(Helper {
            pid: s,
            ns_pid,
            parent,
            sid: s,
            adopts: entered.iter().map(|e| e.pid).collect(),
        });
    }

    let mut groups: Vec<(i32, i32)> = live.iter().map(|e| (e.pgid, e.sid)).collect();
    groups.sort_unstable();
    groups.dedup();
    for (g, s) in groups {
        // The session's own group: made by its leader, its helper, or outside the tree.
        if g == s || (g == root.pgid && s == root.sid) {
            continue;
        }
        match by_pid.get(&g) {
            Some(l) if !l.zombie && l.pgid == g && l.sid == s => continue,
            Some(_) => {
                return Err(format!(
                    "process group {g} of session {s}: its leader's pid now names a zombie or a task in another group"
                ))
            }
            None => {}
        }
        if helpers.iter().any(|h| h.pid == g) {
            return Err(format!("process group {g}: its id is also a session's"));
        }
        let first = live
            .iter()
            .find(|e| e.pgid == g && e.sid == s)
            .expect("the group has a member");
        // Forked inside the session: by the first member's parent, or the session's helper.
        let parent = if parent_of(first)?.sid == s {
            first.ppid
        } else if helpers.iter().any(|h| h.pid == s) {
            s
        } else {
            return Err(format!(
                "process group {g}: no task of session {s} can create it"
            ));
        };
        let ns_pid = if own_pidns { first.ns_pgid } else { g };
        if ns_pid <= 0 {
            return Err(format!(
                "process group {g}: its id inside the pid namespace is missing"
            ));
        }
        helpers.push(Helper {
            pid: g,
            ns_pid,
            parent,
            sid: s,
            adopts: Vec::new(),
        });
    }
    Ok(helpers)
}

/// Adds the helpers to the planned tasks: each forked by its parent where the first task it
/// adopts was (or after its parent's children), the adopted tasks forked by it.
fn add_helpers(
    tasks: &mut Vec<Task>,
    index: &HashMap<i32, usize>,
    helpers: &[Helper],
    own_pidns: bool,
) {
    let mut at: HashMap<i32, usize> = index.clone();
    for h in helpers {
        let i = tasks.len();
        at.insert(h.pid, i);
        let parent = at[&h.parent];
        let adopted: Vec<usize> = h.adopts.iter().map(|p| at[p]).collect();
        let kids = &mut tasks[parent].children;
        let pos = kids
            .iter()
            .position(|c| adopted.contains(c))
            .unwrap_or(kids.len());
        kids.retain(|c| !adopted.contains(c));
        kids.insert(pos.min(kids.len()), i);
        tasks.push(Task {
            entry: PstreeEntry {
                pid: h.pid,
                ppid: h.parent,
                pgid: h.pid,
                sid: h.sid,
                threads: vec![h.pid],
                // No SIGCHLD for its parent: it is reaped with __WALL.
                exit_signal: 0,
                ns_pid: if own_pidns { h.ns_pid } else { 0 },
                ..Default::default()
            },
            helper: true,
            tids: if own_pidns {
                vec![h.ns_pid, h.pid]
            } else {
                vec![h.pid]
            },
            ns_pid: h.ns_pid,
            ns_pgid: h.ns_pid,
            ns_threads: vec![h.ns_pid],
            children: adopted,
            cwd_fd: -1,
            mm_fds: MmFds {
                exe: -1,
                ..Default::default()
            },
            ..Default::default()
        });
    }
}

/// Progress words: what each task has reached, and what crust allows it to do next.
const STAGE_GROUPS: u32 = 1;
const STAGE_FILES: u32 = 2;
const STAGE_STOP: u32 = 3;

/// What the tasks share with crust during the fork phase.
struct Ctl {
    /// One word per task: crust's go-ahead.
    go: sys::SharedWords,
    /// Namespaces the root creates, and their names.
    ns_flags: u64,
    hostname: String,
    domainname: String,
    /// Tasks write their index here when they reach a stage. Each task moves it out of the
    /// way of its own descriptors, hence the atomic (each task has its own copy).
    ready_w: std::sync::atomic::AtomicI32,
    /// A pidfd of crust, through which the tasks copy their descriptors (`pidfd_getfd`).
    pidfd: RawFd,
    /// One word per task: 1 once it mapped its trampoline (at `Task::tramp`).
    tramps: sys::SharedWords,
    /// Crust's special mappings, the task's own while it has crust's layout.
    specials: Vec<proc::Vma>,
    /// The only descriptors of crust's a task keeps across its forks, sorted: `ready_w`,
    /// `pidfd`, and the pages files the tasks read the areas they prepare from. Forks then
    /// copy a short descriptor table, not every description of the tree.
    keep: Vec<RawFd>,
}

/// Closes every descriptor but `keep` (sorted), without allocating.
fn close_all_but(keep: &[RawFd]) {
    let mut from = 0u32;
    for &k in keep {
        let k = k as u32;
        if k > from {
            let _ = child::close_range(from, k - 1);
        }
        from = from.max(k + 1);
    }
    let _ = child::close_range(from, u32::MAX);
}

fn report(ctl: &Ctl, i: usize) {
    let fd = ctl.ready_w.load(std::sync::atomic::Ordering::Relaxed);
    let _ = child::write_all(fd, &(i as u32).to_ne_bytes());
}

/// Body of every restored task between its fork and its SIGSTOP. Runs crust code in a
/// single-threaded copy of crust; ends in SIGSTOP, or `_exit` on error (crust reports it).
fn task_main(tasks: &[Task], i: usize, ctl: &Ctl) -> std::convert::Infallible {
    let t = &tasks[i];
    let e = &t.entry;
    sys::block_all_signals();
    if e.zombie {
        let _ = child::set_name(&t.comm);
        sys::die_like(e.exit_status);
    }
    if i == 0 && ctl.ns_flags != 0 {
        if let Err(err) = sys::enter_new_namespaces(ctl.ns_flags, &ctl.hostname, &ctl.domainname) {
            child::exit(90 + err.raw_os_error().unwrap_or(0).min(9));
        }
    }
    if i == 0 {
        // Crust's dispositions go; the tasks it forks inherit these.
        child::reset_signals(signals::NSIG as i32);
    }
    // Before any fork: what the children copy is only what they need.
    close_all_but(&ctl.keep);
    // Private memory shared with children since fork, mapped before they are forked.
    mm::inherit::prepare(&t.premap);
    if e.subreaper {
        // Already now: the members a session helper forks come back to it when it exits.
        sys::become_subreaper();
    }
    if e.sid == e.pid {
        // Becomes the leader of a new session before forking its members.
        let _ = child::session(e.sid == e.pid, e.pgid == e.pid, t.ns_pgid);
    }
    for &c in &t.children {
        let ce = &tasks[c].entry;
        match sys::fork_with_pid(&tasks[c].tids, 0, ce.exit_signal, || {
            task_main(tasks, c, ctl)
        }) {
            Ok(_) if ce.zombie => sys::await_zombie(tasks[c].ns_pid, ce.exit_signal),
            Ok(_) => {}
            Err(err) => child::exit(100 + err.raw_os_error().unwrap_or(0).min(100)),
        }
    }
    report(ctl, i);
    ctl.go.wait_at_least(i, STAGE_GROUPS);
    if e.sid != e.pid {
        let _ = child::session(e.sid == e.pid, e.pgid == e.pid, t.ns_pgid);
    }
    report(ctl, i);
    ctl.go.wait_at_least(i, STAGE_FILES);
    // Groups are set: the helpers have done their part (they were told to exit first).
    for &c in &t.children {
        if tasks[c].helper && child::reap(tasks[c].ns_pid).is_err() {
            child::exit(62);
        }
    }
    if t.helper {
        child::exit(0);
    }
    if let Err(errno) = receive_fds(t, ctl) {
        child::exit(errno.clamp(1, 60));
    }
    let cd = if t.cwd_fd >= 0 {
        child::fchdir(t.cwd_fd)
    } else {
        child::chdir(&t.cwd)
    };
    if cd.is_err() {
        child::exit(61);
    }
    // The root after the working directory (chroot leaves it as it is): both saved paths
    // are absolute in the tree's mount namespace, where this task still sits at its root,
    // and a working directory outside the root comes back as well.
    if !t.root.is_empty() && child::chroot(&t.root).is_err() {
        child::exit(63);
    }
    let _ = child::set_name(&t.comm);
    // The trampoline crust's remote calls run from: one remote call less for crust.
    if t.tramp != 0 {
        let code: [(u64, &[u8]); 2] = [(0, &SYSCALL_INSN), (BATCH_CODE_AT, &parasite::BATCH_CODE)];
        if child::map_code(t.tramp, TRAMP_LEN, &code).is_ok() {
            ctl.tramps.set(i, 1);
        }
    }
    report(ctl, i);
    ctl.go.wait_at_least(i, STAGE_STOP);
    let _ = child::stop_self();
    child::exit(71)
}

/// Copies the task's descriptors out of crust and puts each at its number. Allocates
/// nothing: every page the task writes is a copy of crust's.
fn receive_fds(t: &Task, ctl: &Ctl) -> Result<(), i32> {
    // Crust's pidfd and the report pipe go out of the way of every number the task will use
    // (what is left above them goes with the service descriptors at take-over).
    let ctl_min = t.places.iter().map(|p| p.0).max().unwrap_or(2) + 1;
    let pidfd = child::dup_above(ctl.pidfd, ctl_min)? as i32;
    let ready = ctl.ready_w.load(std::sync::atomic::Ordering::Relaxed);
    let ready = child::dup_above(ready, ctl_min)? as i32;
    ctl.ready_w
        .store(ready, std::sync::atomic::Ordering::Relaxed);
    // Everything crust's copy held below the high water mark goes.
    child::close_range(0, (ctl_min - 1) as u32)?;
    for (&src, &(want, cloexec)) in t.sources.iter().zip(&t.places) {
        // The lowest free number: never one already placed, maybe one still to place.
        let fd = child::pidfd_getfd(pidfd, src)? as i32;
        if fd != want {
            child::dup2(fd, want)?;
            child::close(fd)?;
        }
        // pidfd_getfd sets close-on-exec, dup2 clears it.
        if cloexec != (fd == want) {
            let flags = if cloexec { libc::FD_CLOEXEC } else { 0 };
            child::fcntl(want, libc::F_SETFD, flags as i64)?;
        }
    }
    child::close(pidfd)?;
    Ok(())
}

/// Restores the tree saved in `opts.images_dir`; on success it is running.
pub fn restore(opts: &RestoreOpts) -> Result<Restored, RestoreError> {
    let dir = ImageDir::open(&opts.images_dir)?;
    let Plan {
        tasks,
        inv,
        held,
        specials,
    } = plan(&dir, opts)?;
    let root = inv.root_pid;
    // Only the namespace kinds crust knows how to recreate.
    let ns_flags = inv.root_ns_flags & crate::ns::KINDS.iter().fold(0, |a, k| a | k.1);
    // System V shared memory segments, created in the new IPC namespace after the fork (ipc).
    let sysv_shm = crate::ipc::ShmRestore::load(&dir, ns_flags & libc::CLONE_NEWIPC as u64 != 0)?;
    crate::info!(
        "restoring {} tasks (root {root}) from {}",
        tasks.len(),
        opts.images_dir.display()
    );
    // Orphans of a failed restore come to crust, which reaps them.
    sys::become_subreaper();
    let live: Vec<usize> = (0..tasks.len())
        .filter(|&i| !tasks[i].entry.zombie)
        .collect();
    let go = sys::SharedWords::new(tasks.len())
        .map_err(|source| RestoreError::Clone { pid: root, source })?;
    let (ready_r, ready_w) =
        sys::pipe_cloexec().map_err(|source| RestoreError::Clone { pid: root, source })?;
    let pidfd = sys::pidfd_open(std::process::id() as i32)
        .map_err(|source| RestoreError::Clone { pid: root, source })?;
    let mut keep: Vec<RawFd> = tasks.iter().flat_map(|t| t.premap.fds()).collect();
    keep.extend([ready_w.as_raw_fd(), pidfd.as_raw_fd()]);
    keep.sort_unstable();
    keep.dedup();
    let tramps = sys::SharedWords::new(tasks.len())
        .map_err(|source| RestoreError::Clone { pid: root, source })?;
    let ctl = Ctl {
        pidfd: pidfd.as_raw_fd(),
        tramps,
        specials,
        keep,
        ns_flags,
        hostname: inv.hostname.clone(),
        domainname: inv.domainname.clone(),
        go,
        ready_w: std::sync::atomic::AtomicI32::new(ready_w.as_raw_fd()),
    };
    let root_entry = &tasks[0].entry;
    sys::trim_heap();
    collapse_own_memory(live.len());
    let forked = sys::fork_with_pid(&tasks[0].tids, ns_flags, libc::SIGCHLD, || {
        task_main(&tasks, 0, &ctl)
    });
    drop(ready_w);
    if let Err(source) = forked {
        return Err(if source.raw_os_error() == Some(libc::EEXIST) {
            RestoreError::PidTaken {
                pid: root,
                comm: "?".into(),
            }
        } else {
            RestoreError::Clone { pid: root, source }
        });
    }
    let _ = root_entry;
    let result = run_phases(&tasks, &live, &ctl, &ready_r).and_then(|()| {
        if opts.shell_job {
            shell_job_foreground(&tasks[0].entry);
        }
        // Before any task is taken over: their attachments need the segments.
        sysv_shm.create(&dir, root)?;
        if fault::hit("restore-after-fork") {
            return Err(RestoreError::Fault("restore-after-fork"));
        }
        // Groups are set: helpers exit (their parents reap them before taking their files).
        let (helpers, real): (Vec<usize>, Vec<usize>) =
            live.iter().partition(|&&i| tasks[i].helper);
        for &i in &helpers {
            ctl.go.set(i, STAGE_FILES);
        }
        take_over_all(&tasks, &real, &ctl, &ready_r, held)
    });
    match result {
        Ok(()) => {
            let pids = tasks
                .iter()
                .filter(|t| !t.helper)
                .map(|t| t.entry.pid)
                .collect();
            crate::info!("tree of {root} restored and running");
            // The tree runs: links made by `dump --link-remap` go.
            files::link_remap::remove_links(&dir);
            Ok(Restored {
                root_pid: root,
                pids,
            })
        }
        Err(e) => {
            crate::error!("restore of {root} failed: {e}");
            for t in &tasks {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(t.entry.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            sys::kill_and_reap(root);
            // Nothing of the tree outlives crust: every descendant (helpers included) dies and
            // is reaped here, re-parented to crust, its subreaper.
            sys::reap_descendants(std::time::Duration::from_secs(10));
            Err(e)
        }
    }
}

/// Backs crust's private anonymous memory (its heap, where the plan is) with huge pages before
/// a large tree is forked from it. Every task forked copies crust's page tables and unmaps them
/// at its take-over: a page table entry per 4 KiB page, against one per 2 MiB huge page. The
/// tasks themselves write nothing there (they allocate nothing), so the huge pages stay shared
/// whole. Best effort: memory that cannot be collapsed stays as it is.
fn collapse_own_memory(tasks: usize) {
    const HUGE: u64 = 2 << 20;
    let Ok(maps) = proc::maps(std::process::id() as i32) else {
        return;
    };
    let private_anon = |v: &&proc::Vma| {
        v.read && v.write && !v.shared && v.ino == 0 && (v.name.is_empty() || v.name == "[heap]")
    };
    let anon: u64 = maps.iter().filter(private_anon).map(|v| v.len()).sum();
    // Page table entries copied and dropped again by all forks: worth a copy of the memory
    // into huge pages only for large trees.
    if (anon / PAGE_SIZE) * tasks as u64 <= COLLAPSE_ABOVE {
        return;
    }
    for v in maps.iter().filter(private_anon) {
        let (start, end) = (v.start.next_multiple_of(HUGE), v.end / HUGE * HUGE);
        if start < end {
            if let Err(e) = sys::collapse_huge(start, end - start) {
                crate::debug!("crust's memory at {start:#x}-{end:#x} not collapsed: {e}");
            }
        }
    }
}

/// See [`collapse_own_memory`]: page table entries all forks would copy.
const COLLAPSE_ABOVE: u64 = 50_000;

/// `--shell-job`: the restored root is in crust's session (it inherits it) and, when it led
/// its group, leads a group of its own there; if that group was the foreground one of its
/// terminal, it becomes the foreground group of crust's terminal, so the job reads and writes
/// it as before. A failure is only a warning: the job runs, in the background.
fn shell_job_foreground(root: &PstreeEntry) {
    use std::os::fd::AsFd;
    if !root.foreground || root.pgid != root.pid {
        return;
    }
    let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    let Some(tty) = [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()]
        .into_iter()
        .find(|fd| nix::unistd::isatty(fd).unwrap_or(false))
    else {
        return;
    };
    // tcsetpgrp from a background group would stop crust with SIGTTOU unless it is blocked.
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    let mut ttou = SigSet::empty();
    ttou.add(Signal::SIGTTOU);
    let mut old = SigSet::empty();
    let blocked = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut old)).is_ok();
    if let Err(e) = nix::unistd::tcsetpgrp(tty, nix::unistd::Pid::from_raw(root.pid)) {
        crate::warn!(
            "pid {}: its group is not the foreground group of crust's terminal: {e}",
            root.pid
        );
    }
    if blocked {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
}

/// Reads the next `n` stage reports of the tasks.
fn wait_reports(
    tasks: &[Task],
    live: &[usize],
    ready_r: &OwnedFd,
    n: usize,
) -> Result<Vec<usize>, RestoreError> {
    let mut out = Vec::with_capacity(n);
    let mut buf = [0u8; 4];
    while out.len() < n {
        match nix::unistd::read(ready_r, &mut buf) {
            Ok(4) => out.push(u32::from_ne_bytes(buf) as usize),
            Ok(_) | Err(_) => {
                let dead = live
                    .iter()
                    .map(|&i| tasks[i].entry.pid)
                    .find(|p| proc::stat(*p).map_or(true, |s| s.state == 'Z' || s.state == 'X'))
                    .unwrap_or(tasks[0].entry.pid);
                return Err(RestoreError::Died {
                    pid: dead,
                    status: "a task of the tree exited while it was being created".into(),
                });
            }
        }
    }
    Ok(out)
}

/// Seizes every live task as it stops itself and rebuilds it, on one worker thread per core:
/// ptrace ties a tracee to the thread that seized it, so each worker keeps its tasks to the
/// end and releases them itself, once every worker has succeeded.
/// `held`: crust's descriptors the tasks copy, closed once every task has its own.
fn take_over_all(
    tasks: &[Task],
    live: &[usize],
    ctl: &Ctl,
    ready_r: &OwnedFd,
    held: Vec<OwnedFd>,
) -> Result<(), RestoreError> {
    use std::sync::mpsc;
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
        .min(live.len().max(1));
    std::thread::scope(|s| {
        let (done_tx, done_rx) = mpsc::channel::<Result<(), RestoreError>>();
        let mut jobs = Vec::new();
        let mut verdicts = Vec::new();
        for _ in 0..workers {
            let (job_tx, job_rx) = mpsc::channel::<usize>();
            let (verdict_tx, verdict_rx) = mpsc::channel::<bool>();
            let done_tx = done_tx.clone();
            jobs.push(job_tx);
            verdicts.push(verdict_tx);
            s.spawn(move || {
                let mut mine: Vec<Vec<Tracee>> = Vec::new();
                let mut result = Ok(());
                for i in job_rx {
                    if result.is_ok() {
                        result = seize_and_take_over(tasks, i, ctl).map(|ts| mine.push(ts));
                    }
                }
                let _ = done_tx.send(result);
                // Release only when every task of the tree is complete.
                if verdict_rx.recv() == Ok(true) {
                    for ts in mine {
                        for t in ts {
                            t.release()?;
                        }
                    }
                }
                Ok::<(), RestoreError>(())
            });
        }
        drop(done_tx);
        for &i in live {
            ctl.go.set(i, STAGE_FILES);
        }
        let mut dispatch = Ok(());
        for n in 0..live.len() {
            match wait_reports(tasks, live, ready_r, 1) {
                Ok(r) => {
                    let _ = jobs[n % workers].send(r[0]);
                }
                Err(e) => {
                    dispatch = Err(e);
                    break;
                }
            }
        }
        drop(jobs);
        drop(held);
        // One verdict per worker (they keep their sender until they are told what to do).
        let mut result = dispatch;
        for _ in 0..workers {
            match done_rx.recv() {
                Ok(r) if result.is_ok() => result = r,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        crate::debug!("every task rebuilt");
        if result.is_ok() && fault::hit("restore-before-release") {
            result = Err(RestoreError::Fault("restore-before-release"));
        }
        for v in &verdicts {
            let _ = v.send(result.is_ok());
        }
        result
    })
}

/// One task: seize it while it waits, let it stop itself, rebuild it.
fn seize_and_take_over(tasks: &[Task], i: usize, ctl: &Ctl) -> Result<Vec<Tracee>, RestoreError> {
    let pid = tasks[i].entry.pid;
    Tracee::seize_running(Tid(pid))?;
    ctl.go.set(i, STAGE_STOP);
    match Tracee::wait_stop(Tid(pid), "restore setup") {
        Ok(WaitStatus::Stopped {
            sig: libc::SIGSTOP,
            event: 0,
        }) => {}
        Ok(other) => {
            return Err(RestoreError::Died {
                pid,
                status: format!("{other:?}"),
            })
        }
        Err(_) => {
            return Err(RestoreError::Died {
                pid,
                status: "exited while setting up its files and cwd".into(),
            })
        }
    }
    crate::debug!("pid {pid}: stopped for take-over");
    let mut threads = vec![Tracee::from_stopped(Tid(pid), StopKind::Interrupted)?];
    let mapped = (ctl.tramps.get(i) == 1).then_some(&ctl.specials[..]);
    crate::debug!(
        "pid {pid}: trampoline {:#x} mapped by the task: {}",
        tasks[i].tramp,
        mapped.is_some()
    );
    take_over(&mut threads, &tasks[i], i == 0, mapped)?;
    crate::debug!("pid {pid}: rebuilt");
    Ok(threads)
}

/// Sequences the first fork phases: every task created, then process groups.
fn run_phases(
    tasks: &[Task],
    live: &[usize],
    ctl: &Ctl,
    ready_r: &OwnedFd,
) -> Result<(), RestoreError> {
    wait_reports(tasks, live, ready_r, live.len())?;
    crate::debug!("every task forked");
    // Groups: leaders first, then members.
    let (leaders, members): (Vec<usize>, Vec<usize>) = live
        .iter()
        .partition(|&&i| tasks[i].entry.pgid == tasks[i].entry.pid);
    for group in [leaders, members] {
        for &i in &group {
            ctl.go.set(i, STAGE_GROUPS);
        }
        wait_reports(tasks, live, ready_r, group.len())?;
    }
    crate::debug!("process groups set");
    Ok(())
}

const MAP_FIXED_NOREPLACE: u64 = 0x100000;

/// Rebuilds one process in its stopped restore child; `threads` holds its leader and receives
/// the threads it creates.
/// `mapped`: the task mapped its trampoline itself, at `task.tramp`; then its layout is
/// still crust's as it was forked, of which these are the special mappings.
fn take_over(
    threads: &mut Vec<Tracee>,
    task: &Task,
    is_root: bool,
    mapped: Option<&[proc::Vma]>,
) -> Result<(), RestoreError> {
    let img = task.images.as_ref().expect("live task");
    let pid = task.entry.pid;
    let t = &mut threads[0];
    // Every task is a fork of crust, with crust's vDSO where crust has it: the `syscall`
    // instruction found in the first serves them all.
    static SYSCALL_IP: std::sync::OnceLock<RemoteAddr> = std::sync::OnceLock::new();
    let rseq = t.rseq_configuration()?;
    // The trampoline: a `syscall` page (and the batch code), a data page, the call table and
    // the arguments area of remote batches.
    let tlen = TRAMP_LEN;
    let (tramp, current) = match mapped {
        Some(specials) => (task.tramp, specials.to_vec()),
        None => {
            match SYSCALL_IP.get() {
                Some(&ip) => t.set_syscall_ip(ip),
                None => {
                    let ip = t.find_syscall_ip()?;
                    let _ = SYSCALL_IP.set(ip);
                }
            }
            let current = proc::maps(pid)?;
            let tramp_at = mm::find_free(&img.mm, &current, (0, 0), tlen).ok_or_else(|| {
                RestoreError::Layout {
                    pid,
                    what: "no room for the trampoline".into(),
                }
            })?;
            let tramp = rsys(
                t,
                pid,
                libc::SYS_mmap,
                [
                    tramp_at,
                    tlen,
                    // Executable as it is: one remote call less than an mprotect after
                    // writing the code; it is gone before the task runs again.
                    (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64,
                    (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64 | MAP_FIXED_NOREPLACE,
                    u64::MAX,
                    0,
                ],
                || "mmap of the trampoline".into(),
            )?;
            t.write_mem(RemoteAddr(tramp), &SYSCALL_INSN)?;
            t.write_mem(RemoteAddr(tramp + BATCH_CODE_AT), &parasite::BATCH_CODE)?;
            (tramp, current)
        }
    };
    t.set_syscall_ip(RemoteAddr(tramp));
    let data = RemoteAddr(tramp + PAGE_SIZE);
    let table = tramp + 2 * PAGE_SIZE;
    let mut q = Queue::new(
        RemoteAddr(tramp + BATCH_CODE_AT),
        (RemoteAddr(table), BATCH_AREA),
        (RemoteAddr(table + BATCH_AREA), BATCH_AREA),
    );
    // glibc's rseq area is about to disappear: unregistered first thing.
    if rseq.rseq_abi_pointer != 0 {
        q.push(
            t,
            pid,
            libc::SYS_rseq,
            [
                rseq.rseq_abi_pointer,
                rseq.rseq_abi_size as u64,
                1, // RSEQ_FLAG_UNREGISTER
                rseq.signature as u64,
                0,
                0,
            ],
            || "unregister the restore child's rseq".into(),
        )?;
    }

    mm::restore(
        t,
        pid,
        &mm::TaskMem {
            mm: &img.mm,
            pages: &img.pages,
            files: &task.page_files,
            fds: &task.mm_fds,
            premap: &task.premap,
        },
        ((tramp, tramp + tlen), &current),
        &mut q,
    )?;
    if fault::hit("restore-after-mm") {
        return Err(RestoreError::Fault("restore-after-mm"));
    }
    set_mm_map(t, pid, &img.mm, task.mm_fds.exe, &mut q)?;

    let task_core = img.cores[0].task.as_ref().expect("checked in load");
    signals::restore_actions(t, pid, &mut q, &img.sigacts)?;
    q.push(
        t,
        pid,
        libc::SYS_personality,
        [task_core.personality as u64, 0, 0, 0, 0, 0],
        || "personality".into(),
    )?;
    // The root's parent is crust, not the one its death signal was meant for.
    if !is_root {
        q.push(
            t,
            pid,
            libc::SYS_prctl,
            [
                libc::PR_SET_PDEATHSIG as u64,
                task_core.pdeath_signal as u64,
                0,
                0,
                0,
                0,
            ],
            || "prctl(PR_SET_PDEATHSIG)".into(),
        )?;
    }
    if task.entry.subreaper {
        q.push(
            t,
            pid,
            libc::SYS_prctl,
            [libc::PR_SET_CHILD_SUBREAPER as u64, 1, 0, 0, 0, 0],
            || "prctl(PR_SET_CHILD_SUBREAPER)".into(),
        )?;
    }
    if task_core.thp_disable {
        q.push(
            t,
            pid,
            libc::SYS_prctl,
            [libc::PR_SET_THP_DISABLE as u64, 1, 0, 0, 0, 0],
            || "prctl(PR_SET_THP_DISABLE)".into(),
        )?;
    }
    // Service descriptors (exe, mapped files) go away.
    q.push(
        t,
        pid,
        libc::SYS_close_range,
        [task.svc_base as u64, u32::MAX as u64, 0, 0, 0, 0],
        || "close of service descriptors".into(),
    )?;
    q.push(
        t,
        pid,
        libc::SYS_umask,
        [task_core.umask as u64, 0, 0, 0, 0, 0],
        || "umask".into(),
    )?;
    signals::restore_pending(
        t,
        pid,
        task.ns_pid,
        task.ns_pid,
        &mut q,
        &task_core.pending_shared,
        true,
    )?;
    // POSIX locks belong to the task: taken now that it closes no more descriptors.
    files::locks::restore_posix(t, pid, &mut q, &img.fdinfo)?;
    restore_rlimits(t, pid, data, &img.rlimits, &mut q)?;
    if img.cores.len() > 1 {
        // Everything so far is the leader's to run, before its threads exist.
        q.flush(t, pid)?;
    }

    // The other threads, created by the leader with their saved tids.
    for (i, core) in img.cores.iter().enumerate().skip(1) {
        let tid = core.thread.as_ref().expect("checked in load").tid;
        let set_tid = if task.ns_pid != pid {
            vec![task.ns_threads[i], tid]
        } else {
            vec![tid]
        };
        let new = create_thread(&mut threads[0], pid, &set_tid, data)?;
        threads.push(new);
    }
    let exited = task.entry.leader_exited;
    for (i, (th, core)) in threads.iter_mut().zip(&img.cores).enumerate() {
        if i == 0 && exited {
            continue;
        }
        restore_thread(th, pid, (task.ns_pid, task.ns_threads[i]), core, &mut q)?;
    }
    // Timers last, so that CPU-time timers do not count crust's work (restore_thread ran
    // every queued call).
    crate::timers::restore(&mut threads[0], pid, data, &task_core.itimers)?;
    if !task_core.dumpable {
        q.push(
            &mut threads[0],
            pid,
            libc::SYS_prctl,
            [libc::PR_SET_DUMPABLE as u64, 0, 0, 0, 0, 0],
            || "prctl(PR_SET_DUMPABLE)".into(),
        )?;
        q.flush(&mut threads[0], pid)?;
    }
    let mut cores = &img.cores[..];
    if exited {
        let mask = cores[0].thread.as_ref().map_or(0, |t| t.sigmask);
        leader_exit(threads.remove(0), pid, tramp, mask)?;
        cores = &cores[1..];
    }
    // Last remote syscall: the trampoline unmaps itself. The single-step trap after it is
    // where the final registers go in.
    let t = &mut threads[0];
    rsys(t, pid, libc::SYS_munmap, [tramp, tlen, 0, 0, 0, 0], || {
        "munmap of the trampoline".into()
    })?;
    for (th, core) in threads.iter_mut().zip(cores) {
        let thread = core.thread.as_ref().expect("checked in load");
        th.forget_mem();
        let saved = regs::from_image(thread.regs.as_ref().expect("checked in load"));
        th.set_final_regs(regs::for_resume(&saved));
        th.set_final_sigmask(thread.sigmask);
    }
    Ok(())
}

/// Ends the leader of a process whose leader had exited at dump, now that its threads exist:
/// it runs `exit(0)` (that thread only, not `exit_group`) from the trampoline's `syscall` and
/// stays a zombie thread as long as the others run, as it was. Its tid address and robust list
/// are cleared first, so its exit writes nothing into the restored memory.
fn leader_exit(mut leader: Tracee, pid: i32, tramp: u64, sigmask: u64) -> Result<(), RestoreError> {
    rsys(&mut leader, pid, libc::SYS_set_tid_address, [0; 6], || {
        "set_tid_address of the exiting leader".into()
    })?;
    rsys(
        &mut leader,
        pid,
        libc::SYS_set_robust_list,
        [0, ROBUST_LIST_HEAD_LEN, 0, 0, 0, 0],
        || "set_robust_list of the exiting leader".into(),
    )?;
    let mut regs = leader.get_regs()?;
    regs.rip = tramp;
    regs.rax = libc::SYS_exit as u64;
    regs.rdi = 0;
    regs.orig_rax = u64::MAX;
    leader.set_regs(&regs)?;
    // It exits with the mask it had (a zombie thread still shows it); it runs nothing but
    // that syscall, unless a signal it left unblocked is pending for the whole process.
    leader.set_final_regs(regs);
    leader.set_final_sigmask(sigmask);
    leader.release()?;
    // The trampoline must stay until the leader has left it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match crate::dump::thread_state(pid, pid) {
            Some('Z') => return Ok(()),
            _ if std::time::Instant::now() > deadline => {
                return Err(RestoreError::Died {
                    pid,
                    status: "the leader did not exit as it had at dump".into(),
                })
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
    }
}

/// `sizeof(struct robust_list_head)`, the only length `set_robust_list` accepts.
const ROBUST_LIST_HEAD_LEN: u64 = 24;

/// `clone3({CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
/// CLONE_SYSVSEM, set_tid = [tid]})` run by the leader.
fn create_thread(
    leader: &mut Tracee,
    pid: i32,
    set_tid: &[i32],
    data: RemoteAddr,
) -> Result<Tracee, RestoreError> {
    let tid = *set_tid.last().expect("one tid at least");
    let flags = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM) as u64;
    let set_tid_at = data.0 + 256;
    let mut args = [0u64; 11];
    args[0] = flags;
    args[8] = set_tid_at;
    args[9] = set_tid.len() as u64;
    let raw: Vec<u8> = args.iter().flat_map(|w| w.to_ne_bytes()).collect();
    leader.write_mem(data, &raw)?;
    let tids: Vec<u8> = set_tid.iter().flat_map(|t| t.to_ne_bytes()).collect();
    leader.write_mem(RemoteAddr(set_tid_at), &tids)?;
    match leader.clone_thread(data, raw.len() as u64)? {
        Ok(t) => Ok(t),
        Err(errno) => Err(RestoreError::Remote {
            pid,
            what: format!("clone3 of thread {tid}"),
            source: parasite::RemoteSyscallError::Failed {
                tid: Tid(pid),
                nr: libc::SYS_clone3,
                source: std::io::Error::from_raw_os_error(-errno as i32),
            },
        }),
    }
}

/// Per-thread state: altstack, clear_child_tid, robust list, rseq, name, scheduling, queued
/// signals, FPU/AVX state.
fn restore_thread(
    t: &mut Tracee,
    pid: i32,
    (ns_pid, ns_tid): (i32, i32),
    core: &CoreEntry,
    q: &mut Queue,
) -> Result<(), RestoreError> {
    let th = core.thread.as_ref().expect("checked in load");
    let tid = th.tid;
    if let Some(ss) = &th.altstack {
        let mut raw = [0u8; 24];
        raw[0..8].copy_from_slice(&ss.ss_sp.to_ne_bytes());
        let flags = ss.ss_flags & (libc::SS_DISABLE | (1 << 31));
        raw[8..12].copy_from_slice(&flags.to_ne_bytes());
        raw[16..24].copy_from_slice(&ss.ss_size.to_ne_bytes());
        let at = q.arg(t, pid, &raw)?;
        q.push(t, pid, libc::SYS_sigaltstack, [at, 0, 0, 0, 0, 0], || {
            format!("sigaltstack of thread {tid}")
        })?;
    }
    q.push(
        t,
        pid,
        libc::SYS_set_tid_address,
        [th.clear_child_tid, 0, 0, 0, 0, 0],
        || format!("set_tid_address of thread {tid}"),
    )?;
    q.push(
        t,
        pid,
        libc::SYS_set_robust_list,
        [th.robust_list, th.robust_list_len, 0, 0, 0, 0],
        || format!("set_robust_list of thread {tid}"),
    )?;
    let mut name = th.comm.as_bytes().to_vec();
    name.truncate(15);
    name.push(0);
    let at = q.arg(t, pid, &name)?;
    q.push(
        t,
        pid,
        libc::SYS_prctl,
        [libc::PR_SET_NAME as u64, at, 0, 0, 0, 0],
        || format!("name of thread {tid}"),
    )?;
    signals::restore_pending(t, pid, ns_pid, ns_tid, q, &th.pending, false)?;
    for (on, op, arg) in [
        (th.keepcaps, libc::PR_SET_KEEPCAPS, 1),
        (
            th.timer_slack_ns != 0,
            libc::PR_SET_TIMERSLACK,
            th.timer_slack_ns,
        ),
        // Irreversible, so after everything that needs privileges.
        (th.no_new_privs, libc::PR_SET_NO_NEW_PRIVS, 1),
    ] {
        if on {
            q.push(
                t,
                pid,
                libc::SYS_prctl,
                [op as u64, arg, 0, 0, 0, 0],
                || format!("prctl({op}) of thread {tid}"),
            )?;
        }
    }
    if let Some(r) = &th.rseq {
        q.push(
            t,
            pid,
            libc::SYS_rseq,
            [
                r.rseq_abi_pointer,
                r.rseq_abi_size as u64,
                0,
                r.signature as u64,
                0,
                0,
            ],
            || format!("rseq registration of thread {tid}"),
        )?;
    }
    q.flush(t, pid)?;
    let sched = sys::Sched {
        policy: th.sched_policy,
        priority: th.sched_priority,
        nice: th.nice,
        affinity: th.cpu_affinity.clone(),
    };
    if let Err(e) = sys::set_sched(tid, &sched) {
        crate::warn!("pid {pid} thread {tid}: scheduling not restored: {e}");
    }
    if !th.xsave.is_empty() {
        t.set_xstate(&th.xsave)?;
    }
    Ok(())
}

/// Queues `prctl(PR_SET_MM, PR_SET_MM_MAP, &map, sizeof(map))`: mm fields, auxv and exe in
/// one call.
fn set_mm_map(
    t: &mut Tracee,
    pid: i32,
    mm: &MmEntry,
    exe_fd: i32,
    q: &mut Queue,
) -> Result<(), RestoreError> {
    const PR_SET_MM: u64 = 35;
    const PR_SET_MM_MAP: u64 = 14;
    const MAP_SIZE: usize = 104;
    let auxv: Vec<u8> = mm.auxv.iter().flat_map(|w| w.to_ne_bytes()).collect();
    if auxv.len() > 2048 {
        return Err(RestoreError::Layout {
            pid,
            what: format!(
                "auxv of {} bytes is larger than the kernel keeps",
                auxv.len()
            ),
        });
    }
    let auxv_at = q.arg(t, pid, &auxv)?;
    let mut map = Vec::with_capacity(MAP_SIZE);
    for w in [
        mm.start_code,
        mm.end_code,
        mm.start_data,
        mm.end_data,
        mm.start_brk,
        mm.brk,
        mm.start_stack,
        mm.arg_start,
        mm.arg_end,
        mm.env_start,
        mm.env_end,
        auxv_at,
    ] {
        map.extend_from_slice(&w.to_ne_bytes());
    }
    map.extend_from_slice(&(auxv.len() as u32).to_ne_bytes());
    map.extend_from_slice(&(exe_fd as u32).to_ne_bytes());
    let map_at = q.arg(t, pid, &map)?;
    q.push(
        t,
        pid,
        libc::SYS_prctl,
        [PR_SET_MM, PR_SET_MM_MAP, map_at, MAP_SIZE as u64, 0, 0],
        || "prctl(PR_SET_MM_MAP)".into(),
    )
}

/// Sets the saved limits that differ from those the task inherited from crust: queued in `q`
/// where the hard limit is not raised (which cannot fail for want of privilege), one by one
/// otherwise, keeping the current hard limit where it cannot be raised.
fn restore_rlimits(
    t: &mut Tracee,
    pid: i32,
    data: RemoteAddr,
    rlimits: &[RlimitEntry],
    q: &mut Queue,
) -> Result<(), RestoreError> {
    for r in rlimits {
        let own = own_rlimit(r.resource);
        if own == Some((r.cur, r.max)) {
            continue;
        }
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&r.cur.to_ne_bytes());
        raw[8..].copy_from_slice(&r.max.to_ne_bytes());
        if own.is_some_and(|(_, max)| r.max <= max) {
            let at = q.arg(t, pid, &raw)?;
            q.push(
                t,
                pid,
                libc::SYS_prlimit64,
                [0, r.resource as u64, at, 0, 0, 0],
                || format!("setrlimit({})", r.resource),
            )?;
            continue;
        }
        // Its memory holds what the queue wrote so far; the call must come after them.
        q.flush(t, pid)?;
        t.write_mem(data, &raw)?;
        let res = t.syscall_ok(libc::SYS_prlimit64, [0, r.resource as u64, data.0, 0, 0, 0]);
        match res {
            Ok(_) => {}
            // A hard limit above crust's own cannot be raised without CAP_SYS_RESOURCE:
            // keep the current hard limit and the saved soft one within it.
            Err(e) if e.errno() == Some(libc::EPERM) => {
                crate::warn!(
                    "pid {pid}: rlimit {} hard limit {} cannot be raised; keeping the current one",
                    r.resource,
                    r.max
                );
                let cur_at = RemoteAddr(data.0 + 16);
                rsys(
                    t,
                    pid,
                    libc::SYS_prlimit64,
                    [0, r.resource as u64, 0, cur_at.0, 0, 0],
                    || format!("getrlimit({})", r.resource),
                )?;
                let mut now = [0u8; 16];
                t.read_mem(cur_at, &mut now)?;
                let max_now = u64::from_ne_bytes(now[8..].try_into().expect("8"));
                raw[..8].copy_from_slice(&r.cur.min(max_now).to_ne_bytes());
                raw[8..].copy_from_slice(&max_now.to_ne_bytes());
                t.write_mem(data, &raw)?;
                rsys(
                    t,
                    pid,
                    libc::SYS_prlimit64,
                    [0, r.resource as u64, data.0, 0, 0, 0],
                    || format!("setrlimit({})", r.resource),
                )?;
            }
            Err(source) => {
                return Err(RestoreError::Remote {
                    pid,
                    what: format!("setrlimit({})", r.resource),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Crust's own limit of `resource`, the one its forks inherit (read once: crust sets its
/// limits when it starts, before any restore).
fn own_rlimit(resource: u32) -> Option<(u64, u64)> {
    const N: usize = 32;
    static OWN: std::sync::OnceLock<[Option<(u64, u64)>; N]> = std::sync::OnceLock::new();
    let own = OWN.get_or_init(|| {
        std::array::from_fn(|i| {
            let mut l = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            (sys::getrlimit(i as u32, &mut l) == 0).then_some((l.rlim_cur, l.rlim_max))
        })
    });
    own.get(resource as usize).copied().flatten()
}

/// Waits for the restored root task (crust's child) and returns its exit status the way a
/// shell reports it (128 + signal for a killed task).
pub fn wait_for(pid: i32) -> std::io::Result<i32> {
    loop {
        return Ok(match parasite::decode_status(sys::waitpid(pid)?) {
            WaitStatus::Exited(c) => c,
            WaitStatus::Signaled(s) => 128 + s,
            WaitStatus::Stopped { .. } => continue,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(pid: i32, ppid: i32, pgid: i32, sid: i32) -> PstreeEntry {
        PstreeEntry {
            pid,
            ppid,
            pgid,
            sid,
            threads: vec![pid],
            ..Default::default()
        }
    }

    fn subreaper(mut e: PstreeEntry) -> PstreeEntry {
        e.subreaper = true;
        e
    }

    #[test]
    fn living_leaders_need_no_helper() {
        let tree = [
            task(10, 0, 10, 10),
            task(11, 10, 11, 10),
            task(12, 11, 11, 10),
            task(13, 10, 13, 13),
            task(14, 13, 10, 10),
        ];
        // 14, in the root's session under a parent of session 13, cannot be forked there.
        let e = plan_helpers(&tree, false).unwrap_err();
        assert!(e.contains("pid 14: in session 10"), "{e}");
        let mut t = tree.to_vec();
        t[4] = task(14, 10, 11, 10);
        assert_eq!(plan_helpers(&t, false), Ok(vec![]));
    }

    #[test]
    fn session_whose_leader_exited_gets_a_helper_adopting_its_members() {
        // 20 made session 20 and exited; 21 and 22 came to the subreaper root, 23 is 21's.
        let tree = [
            subreaper(task(10, 0, 10, 10)),
            task(21, 10, 20, 20),
            task(22, 10, 20, 20),
            task(23, 21, 20, 20),
            task(24, 10, 10, 10),
        ];
        let h = plan_helpers(&tree, false).unwrap();
        assert_eq!(
            h,
            vec![Helper {
                pid: 20,
                ns_pid: 20,
                parent: 10,
                sid: 20,
                adopts: vec![21, 22],
            }]
        );
    }

    #[test]
    fn orphaned_group_in_a_dead_session_gets_both_helpers() {
        let mut b = task(31, 10, 30, 29);
        b.ns_sid = 5;
        b.ns_pgid = 6;
        b.ns_pid = 7;
        let mut root = subreaper(task(10, 0, 10, 10));
        root.ns_pid = 1;
        let h = plan_helpers(&[root, b], true).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!((h[0].pid, h[0].ns_pid, h[0].parent), (29, 5, 10));
        assert_eq!(h[0].adopts, vec![31]);
        // The group is made inside the session, by its helper.
        assert_eq!(
            (h[1].pid, h[1].ns_pid, h[1].parent, h[1].sid),
            (30, 6, 29, 29)
        );
        assert!(h[1].adopts.is_empty());
    }

    #[test]
    fn group_whose_leader_exited_is_made_by_a_members_parent() {
        let tree = [
            subreaper(task(10, 0, 10, 10)),
            task(41, 10, 40, 10),
            task(42, 41, 40, 10),
        ];
        let h = plan_helpers(&tree, false).unwrap();
        assert_eq!(
            h,
            vec![Helper {
                pid: 40,
                ns_pid: 40,
                parent: 10,
                sid: 10,
                adopts: vec![],
            }]
        );
    }

    #[test]
    fn arrangements_fork_cannot_rebuild_are_refused() {
        // Members of a dead session under a parent that is no subreaper.
        let e = plan_helpers(&[task(10, 0, 10, 10), task(21, 10, 20, 20)], false).unwrap_err();
        assert!(e.contains("neither a subreaper"), "{e}");
        // Members of a dead session under two different parents.
        let tree = [
            subreaper(task(10, 0, 10, 10)),
            subreaper(task(11, 10, 11, 10)),
            task(21, 10, 20, 20),
            task(22, 11, 20, 20),
        ];
        let e = plan_helpers(&tree, false).unwrap_err();
        assert!(e.contains("different parents"), "{e}");
        // The dead leader's pid taken by a task of another session.
        let tree = [
            subreaper(task(10, 0, 10, 10)),
            task(20, 10, 10, 10),
            task(21, 10, 20, 20),
        ];
        let e = plan_helpers(&tree, false).unwrap_err();
        assert!(e.contains("another session"), "{e}");
        // A live session entered from outside it.
        let tree = [
            task(10, 0, 10, 10),
            task(20, 10, 20, 20),
            task(21, 10, 20, 20),
        ];
        let e = plan_helpers(&tree, false).unwrap_err();
        assert!(e.contains("whose leader lives"), "{e}");
        // Inside a pid namespace, the id there is needed.
        let mut root = task(10, 0, 10, 10);
        root.ns_pid = 1;
        let e = plan_helpers(&[root, task(21, 10, 20, 20)], true).unwrap_err();
        assert!(e.contains("inside the pid namespace"), "{e}");
    }
}
