//! Restore: crust forks the tree itself, every task with its saved pid (`clone3` with
//! `set_tid`, Linux 5.5), from a single-threaded point: crust forks the root, each task forks
//! its own children in pid order (so parents, children and their order come back), zombies
//! are forked and die with their saved status. Phases are sequenced by crust through futex
//! words shared with every task:
//!
//! 1. created: sessions (`setsid` by session leaders before they fork) and children exist;
//! 2. groups: group leaders `setpgid(0, 0)`, then members join their group;
//! 3. files: each task receives its descriptors from crust over a unix socket
//!    (`SCM_RIGHTS`), where crust opened every file description of the tree once (so sharing
//!    between fds and tasks, and the shared offset, come back by construction), moves them to
//!    their numbers, sets cwd and name, and stops itself (SIGSTOP) once crust has seized it.
//!
//! Then crust, as tracer, takes every task over with remote syscalls:
//! a two-page trampoline (`syscall` + data) where neither layout has anything; the child's
//! rseq (glibc's) unregistered, or the kernel kills the task with SIGSEGV once that memory is
//! gone; everything else unmapped; `[vvar]`, `[vvar_vclock]`, `[vdso]` moved to their saved
//! places; the saved VMAs mapped and filled ([`crate::mm`]); `PR_SET_MM_MAP`; threads created
//! with a remote `clone3(set_tid)`; dispositions, queued signals, rlimits, per-thread state;
//! the trampoline unmaps itself and the final registers go in at the trap after it.
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
struct Task {
    entry: PstreeEntry,
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
    /// Placement of each descriptor crust sends: its number in the task and close-on-exec.
    places: Vec<(i32, bool)>,
    /// Crust's end of the fd transport (sent before the fork) and the task's end.
    transport: Option<(OwnedFd, OwnedFd)>,
    cwd: CString,
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
        let ok = core
            .thread
            .as_ref()
            .is_some_and(|t| t.regs.is_some() && t.tid == tid)
            && (i != 0 || core.task.is_some());
        if !ok {
            return Err(bad(path, "thread or task state missing".into()));
        }
        cores.push(core);
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

/// A file a mapping or the exe refers to must still be the one that was dumped.
fn check_file(f: &images::pb::FileId) -> Result<(), RestoreError> {
    let md = std::fs::metadata(&f.path).map_err(|source| RestoreError::File {
        path: f.path.clone(),
        source,
    })?;
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
    Ok(())
}

fn cstring(s: &str, image: &Path) -> Result<CString, RestoreError> {
    CString::new(s).map_err(|_| bad(image.into(), format!("{s:?} holds a NUL byte")))
}

/// Reads and checks every image, opens every file description, and plans each task.
fn plan(
    dir: &ImageDir,
    opts: &RestoreOpts,
) -> Result<(Vec<Task>, images::pb::InventoryEntry), RestoreError> {
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
            ns_pgid: e.pgid,
            ns_threads,
            entry: e.clone(),
            images,
            children: Vec::new(),
            svc_base: 0,
            places: Vec::new(),
            transport: None,
            cwd: CString::default(),
            comm: CString::default(),
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
    check_sessions(&tasks, &index, &pstree_path, opts)?;
    for t in &tasks {
        let pid = t.entry.pid;
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            return Err(RestoreError::PidTaken {
                pid,
                comm: comm.trim().to_string(),
            });
        }
    }

    // Every description of the tree, opened once in crust.
    let descs = files::open_all(&files_img, &pipes, opts, dir)?;
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
            parent: (i > 0).then(|| index[&t.entry.ppid]),
            image: t.images.as_ref().map(|img| (&img.mm, &img.pages)),
        })
        .collect();
    let premaps = mem.prepare(dir, &plan_tasks, &memfds)?;
    drop(plan_tasks);
    for (t, p) in tasks.iter_mut().zip(premaps) {
        t.premap = p;
    }
    let mut opened: HashMap<String, OwnedFd> = HashMap::new();
    for t in &mut tasks {
        let Some(img) = &t.images else { continue };
        let pid = t.entry.pid;
        let id = Some(pid as u32);
        let fdinfo_path = dir.file_path(ImageKind::Fdinfo, id);
        let mut send: Vec<RawFd> = Vec::new();
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
        check_file(&exe)?;
        t.mm_fds.exe = service(&exe.path, &mut send, &mut t.places)?;
        for v in &img.mm.vmas {
            if let Some(f) = &v.file {
                if !t.mm_fds.files.iter().any(|(p, _)| p == &f.path) {
                    check_file(f)?;
                    let fd = service(&f.path, &mut send, &mut t.places)?;
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
        let (ours, theirs) =
            sys::fd_transport().map_err(|source| RestoreError::Clone { pid, source })?;
        for chunk in send.chunks(sys::FDS_PER_MESSAGE) {
            sys::send_fds(&ours, chunk).map_err(|source| RestoreError::ChildSetup {
                pid,
                what: "passing descriptors".into(),
                source,
            })?;
        }
        t.transport = Some((ours, theirs));
        t.cwd = cstring(&img.fs.cwd, &dir.file_path(ImageKind::Fs, id))?;
        let task_core = img.cores[0].task.as_ref().expect("checked in load");
        t.comm = cstring(&task_core.comm, &dir.file_path(ImageKind::Core, id))?;
    }
    let page_files = std::sync::Arc::new(mem.into_files());
    for t in &mut tasks {
        t.page_files = page_files.clone();
    }
    Ok((tasks, inv))
}

/// Sessions are inherited through fork and process groups must exist in the session when a
/// task joins them: check the saved ones can be rebuilt that way.
fn check_sessions(
    tasks: &[Task],
    index: &HashMap<i32, usize>,
    image: &Path,
    opts: &RestoreOpts,
) -> Result<(), RestoreError> {
    let root = &tasks[0].entry;
    for t in tasks.iter().skip(1) {
        let e = &t.entry;
        let parent = &tasks[index[&e.ppid]].entry;
        if e.sid != e.pid && e.sid != parent.sid {
            return Err(bad(
                image.into(),
                format!(
                    "pid {}: session {} is neither its own nor its parent's (a session whose leader is gone is not supported yet)",
                    e.pid, e.sid
                ),
            ));
        }
        let leader_ok = e.pgid == e.pid
            || index
                .get(&e.pgid)
                .is_some_and(|&l| !tasks[l].entry.zombie && tasks[l].entry.sid == e.sid)
            || (e.pgid == root.pgid && e.sid == root.sid);
        if !leader_ok {
            return Err(bad(
                image.into(),
                format!(
                    "pid {}: process group {} has no live leader in its session (not supported yet)",
                    e.pid, e.pgid
                ),
            ));
        }
    }
    let _ = opts;
    Ok(())
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
        sys::die_like(e.exit_status);
    }
    if i == 0 && ctl.ns_flags != 0 {
        if let Err(err) = sys::enter_new_namespaces(ctl.ns_flags, &ctl.hostname, &ctl.domainname) {
            child::exit(90 + err.raw_os_error().unwrap_or(0).min(9));
        }
    }
    child::reset_signals(signals::NSIG as i32);
    // Private memory shared with children since fork, mapped before they are forked.
    mm::inherit::prepare(&t.premap);
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
    if let Err(errno) = receive_fds(t, ctl) {
        child::exit(errno.clamp(1, 60));
    }
    if child::chdir(&t.cwd).is_err() {
        child::exit(61);
    }
    let _ = child::set_name(&t.comm);
    report(ctl, i);
    ctl.go.wait_at_least(i, STAGE_STOP);
    let _ = child::stop_self();
    child::exit(71)
}

/// Takes the task's descriptors from its transport and puts each at its number.
fn receive_fds(t: &Task, ctl: &Ctl) -> Result<(), i32> {
    let Some((_, sock)) = &t.transport else {
        return Ok(());
    };
    let ctl_min = t.places.iter().map(|p| p.0).max().unwrap_or(2) + 1;
    let sock = child::dup_above(sock.as_raw_fd(), ctl_min)? as i32;
    let ready = ctl.ready_w.load(std::sync::atomic::Ordering::Relaxed);
    let ready = child::dup_above(ready, ctl_min)? as i32;
    ctl.ready_w
        .store(ready, std::sync::atomic::Ordering::Relaxed);
    let mut got: Vec<RawFd> = Vec::with_capacity(t.places.len());
    while got.len() < t.places.len() {
        let fds = sys::recv_fds(sock).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        if fds.is_empty() {
            return Err(libc::EPROTO);
        }
        for fd in fds {
            // Out of the way of every number the task will use.
            let high = child::dup_above(fd, ctl_min)? as i32;
            child::close(fd)?;
            got.push(high);
        }
    }
    // Everything crust's copy held below the high water mark goes.
    child::close_range(0, (ctl_min - 1) as u32)?;
    for (&fd, &(want, cloexec)) in got.iter().zip(&t.places) {
        child::dup2(fd, want)?;
        child::close(fd)?;
        if cloexec {
            child::fcntl(want, libc::F_SETFD, libc::FD_CLOEXEC as i64)?;
        }
    }
    Ok(())
}

/// Restores the tree saved in `opts.images_dir`; on success it is running.
pub fn restore(opts: &RestoreOpts) -> Result<Restored, RestoreError> {
    let dir = ImageDir::open(&opts.images_dir)?;
    let (tasks, inv) = plan(&dir, opts)?;
    let root = inv.root_pid;
    // Only the namespace kinds crust knows how to recreate.
    let ns_flags = inv.root_ns_flags & crate::ns::KINDS.iter().fold(0, |a, k| a | k.1);
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
    let ctl = Ctl {
        ns_flags,
        hostname: inv.hostname.clone(),
        domainname: inv.domainname.clone(),
        go,
        ready_w: std::sync::atomic::AtomicI32::new(ready_w.as_raw_fd()),
    };
    let root_entry = &tasks[0].entry;
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
        if fault::hit("restore-after-fork") {
            return Err(RestoreError::Fault("restore-after-fork"));
        }
        take_over_all(&tasks, &live, &ctl, &ready_r)
    });
    match result {
        Ok(()) => {
            let pids = tasks.iter().map(|t| t.entry.pid).collect();
            crate::info!("tree of {root} restored and running");
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
            sys::reap_all();
            Err(e)
        }
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
fn take_over_all(
    tasks: &[Task],
    live: &[usize],
    ctl: &Ctl,
    ready_r: &OwnedFd,
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
        // One verdict per worker (they keep their sender until they are told what to do).
        let mut result = dispatch;
        for _ in 0..workers {
            match done_rx.recv() {
                Ok(r) if result.is_ok() => result = r,
                Ok(_) => {}
                Err(_) => break,
            }
        }
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
    let mut threads = vec![Tracee::from_stopped(Tid(pid), StopKind::Interrupted)?];
    take_over(&mut threads, &tasks[i], i == 0)?;
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
    Ok(())
}

const MAP_FIXED_NOREPLACE: u64 = 0x100000;

/// Rebuilds one process in its stopped restore child; `threads` holds its leader and receives
/// the threads it creates.
fn take_over(threads: &mut Vec<Tracee>, task: &Task, is_root: bool) -> Result<(), RestoreError> {
    let img = task.images.as_ref().expect("live task");
    let pid = task.entry.pid;
    let t = &mut threads[0];
    t.find_syscall_ip()?;
    // glibc's rseq area is about to disappear: unregister it first.
    let rseq = t.rseq_configuration()?;
    if rseq.rseq_abi_pointer != 0 {
        rsys(
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
    // The trampoline: a `syscall` page and a data page.
    let current = proc::maps(pid)?;
    let tlen = 2 * PAGE_SIZE;
    let tramp_at =
        mm::find_free(&img.mm, &current, (0, 0), tlen).ok_or_else(|| RestoreError::Layout {
            pid,
            what: "no room for the trampoline".into(),
        })?;
    let tramp = rsys(
        t,
        pid,
        libc::SYS_mmap,
        [
            tramp_at,
            tlen,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64 | MAP_FIXED_NOREPLACE,
            u64::MAX,
            0,
        ],
        || "mmap of the trampoline".into(),
    )?;
    t.write_mem(RemoteAddr(tramp), &[0x0f, 0x05])?;
    rsys(
        t,
        pid,
        libc::SYS_mprotect,
        [
            tramp,
            PAGE_SIZE,
            (libc::PROT_READ | libc::PROT_EXEC) as u64,
            0,
            0,
            0,
        ],
        || "mprotect of the trampoline".into(),
    )?;
    t.set_syscall_ip(RemoteAddr(tramp));
    let data = RemoteAddr(tramp + PAGE_SIZE);

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
        (tramp, tramp + tlen),
    )?;
    if fault::hit("restore-after-mm") {
        return Err(RestoreError::Fault("restore-after-mm"));
    }
    set_mm_map(t, pid, &img.mm, task.mm_fds.exe, data)?;

    let task_core = img.cores[0].task.as_ref().expect("checked in load");
    signals::restore_actions(t, pid, data, &img.sigacts)?;
    rsys(
        t,
        pid,
        libc::SYS_personality,
        [task_core.personality as u64, 0, 0, 0, 0, 0],
        || "personality".into(),
    )?;
    // The root's parent is crust, not the one its death signal was meant for.
    if !is_root {
        rsys(
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
        rsys(
            t,
            pid,
            libc::SYS_prctl,
            [libc::PR_SET_CHILD_SUBREAPER as u64, 1, 0, 0, 0, 0],
            || "prctl(PR_SET_CHILD_SUBREAPER)".into(),
        )?;
    }
    if task_core.thp_disable {
        rsys(
            t,
            pid,
            libc::SYS_prctl,
            [libc::PR_SET_THP_DISABLE as u64, 1, 0, 0, 0, 0],
            || "prctl(PR_SET_THP_DISABLE)".into(),
        )?;
    }
    signals::restore_pending(
        t,
        pid,
        task.ns_pid,
        task.ns_pid,
        data,
        &task_core.pending_shared,
        true,
    )?;
    // Service descriptors (exe, mapped files) go away.
    rsys(
        t,
        pid,
        libc::SYS_close_range,
        [task.svc_base as u64, u32::MAX as u64, 0, 0, 0, 0],
        || "close of service descriptors".into(),
    )?;
    // POSIX locks belong to the task: taken now that it closes no more descriptors.
    files::locks::restore_posix(t, pid, data, &img.fdinfo)?;
    rsys(
        t,
        pid,
        libc::SYS_umask,
        [task_core.umask as u64, 0, 0, 0, 0, 0],
        || "umask".into(),
    )?;
    restore_rlimits(t, pid, data, &img.rlimits)?;

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
    for (i, (th, core)) in threads.iter_mut().zip(&img.cores).enumerate() {
        restore_thread(th, pid, (task.ns_pid, task.ns_threads[i]), core, data)?;
    }
    // Timers last, so that CPU-time timers do not count crust's work.
    crate::timers::restore(&mut threads[0], pid, data, &task_core.itimers)?;
    if !task_core.dumpable {
        rsys(
            &mut threads[0],
            pid,
            libc::SYS_prctl,
            [libc::PR_SET_DUMPABLE as u64, 0, 0, 0, 0, 0],
            || "prctl(PR_SET_DUMPABLE)".into(),
        )?;
    }
    // Last remote syscall: the trampoline unmaps itself. The single-step trap after it is
    // where the final registers go in.
    let t = &mut threads[0];
    rsys(t, pid, libc::SYS_munmap, [tramp, tlen, 0, 0, 0, 0], || {
        "munmap of the trampoline".into()
    })?;
    for (th, core) in threads.iter_mut().zip(&img.cores) {
        let thread = core.thread.as_ref().expect("checked in load");
        th.forget_mem();
        let saved = regs::from_image(thread.regs.as_ref().expect("checked in load"));
        th.set_final_regs(regs::for_resume(&saved));
        th.set_final_sigmask(thread.sigmask);
    }
    Ok(())
}

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
    data: RemoteAddr,
) -> Result<(), RestoreError> {
    let th = core.thread.as_ref().expect("checked in load");
    let tid = th.tid;
    if let Some(ss) = &th.altstack {
        let mut raw = [0u8; 24];
        raw[0..8].copy_from_slice(&ss.ss_sp.to_ne_bytes());
        let flags = ss.ss_flags & (libc::SS_DISABLE | (1 << 31));
        raw[8..12].copy_from_slice(&flags.to_ne_bytes());
        raw[16..24].copy_from_slice(&ss.ss_size.to_ne_bytes());
        t.write_mem(data, &raw)?;
        rsys(
            t,
            pid,
            libc::SYS_sigaltstack,
            [data.0, 0, 0, 0, 0, 0],
            || format!("sigaltstack of thread {tid}"),
        )?;
    }
    rsys(
        t,
        pid,
        libc::SYS_set_tid_address,
        [th.clear_child_tid, 0, 0, 0, 0, 0],
        || format!("set_tid_address of thread {tid}"),
    )?;
    rsys(
        t,
        pid,
        libc::SYS_set_robust_list,
        [th.robust_list, th.robust_list_len, 0, 0, 0, 0],
        || format!("set_robust_list of thread {tid}"),
    )?;
    let mut name = th.comm.as_bytes().to_vec();
    name.truncate(15);
    name.push(0);
    t.write_mem(data, &name)?;
    rsys(
        t,
        pid,
        libc::SYS_prctl,
        [libc::PR_SET_NAME as u64, data.0, 0, 0, 0, 0],
        || format!("name of thread {tid}"),
    )?;
    signals::restore_pending(t, pid, ns_pid, ns_tid, data, &th.pending, false)?;
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
            rsys(
                t,
                pid,
                libc::SYS_prctl,
                [op as u64, arg, 0, 0, 0, 0],
                || format!("prctl({op}) of thread {tid}"),
            )?;
        }
    }
    if let Some(r) = &th.rseq {
        rsys(
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

/// `prctl(PR_SET_MM, PR_SET_MM_MAP, &map, sizeof(map))`: mm fields, auxv and exe in one call.
fn set_mm_map(
    t: &mut Tracee,
    pid: i32,
    mm: &MmEntry,
    exe_fd: i32,
    data: RemoteAddr,
) -> Result<(), RestoreError> {
    const PR_SET_MM: u64 = 35;
    const PR_SET_MM_MAP: u64 = 14;
    const MAP_SIZE: usize = 104;
    let auxv_at = data.0 + 128;
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
    map.extend_from_slice(&(auxv.len() as u32).to_ne_bytes());
    map.extend_from_slice(&(exe_fd as u32).to_ne_bytes());
    t.write_mem(data, &map)?;
    t.write_mem(RemoteAddr(auxv_at), &auxv)?;
    rsys(
        t,
        pid,
        libc::SYS_prctl,
        [PR_SET_MM, PR_SET_MM_MAP, data.0, MAP_SIZE as u64, 0, 0],
        || "prctl(PR_SET_MM_MAP)".into(),
    )?;
    Ok(())
}

fn restore_rlimits(
    t: &mut Tracee,
    pid: i32,
    data: RemoteAddr,
    rlimits: &[RlimitEntry],
) -> Result<(), RestoreError> {
    for r in rlimits {
        // The task inherited crust's limits: only differing ones need a remote call.
        if own_rlimit(r.resource) == Some((r.cur, r.max)) {
            continue;
        }
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&r.cur.to_ne_bytes());
        raw[8..].copy_from_slice(&r.max.to_ne_bytes());
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

fn own_rlimit(resource: u32) -> Option<(u64, u64)> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    (sys::getrlimit(resource, &mut l) == 0).then_some((l.rlim_cur, l.rlim_max))
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
