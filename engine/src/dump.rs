//! Dump: freeze the tree → collect → write images → kill (or resume with `--leave-running`).
//!
//! Freezing walks the tree from the root: every thread of a process is seized and interrupted,
//! re-listing `/proc/PID/task` until no new thread appears; only then are its children read
//! (a frozen process cannot fork any more), and they are frozen in turn. A task that exits
//! meanwhile shows up as a zombie and is dumped as one. A process whose leader thread has
//! exited while others run on is dumped through a live thread (`/proc/PID` of an exited leader
//! shows no memory, files or namespaces); the leader is saved without registers.
//!
//! Until the inventory image is written nothing is final: any error resumes every task exactly
//! as it was (registers, signal mask, stop state), removes the image files this dump wrote, and
//! reports. The inventory is written last, so a directory without one is never taken for a
//! complete dump.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use images::pb::{
    CoreEntry, FsEntry, InventoryEntry, PagemapHead, PstreeEntry, Rseq, SigAltStack, SigInfo,
    TaskCore, ThreadCore,
};
use images::{ImageDir, ImageKind};
use parasite::{ParasiteError, RemoteAddr, Tid, Tracee};

use crate::error::{fault, DumpError};
use crate::remote::{Batch, SCRATCH_LEN};
use crate::{files, mm, proc, regs, signals, sys};

/// Options of one dump, as `crust dump` takes them.
#[derive(Debug, Clone, Default)]
pub struct DumpOpts {
    pub pid: i32,
    pub images_dir: PathBuf,
    /// Resume the tree after dumping instead of killing it.
    pub leave_running: bool,
    /// The tree is a job of a shell: its terminal, session and group lie outside it.
    pub shell_job: bool,
    /// Largest unlinked open file whose contents are saved (`--ghost-limit`); None: 1 MiB.
    pub ghost_limit: Option<u64>,
    /// Objects outside the tree it may use (`--external pipe[INO]`).
    pub external: Vec<String>,
    /// Dump file locks (`--file-locks`); without it a task holding one is refused.
    pub file_locks: bool,
    /// Link files that lost their name back under a hidden one instead of copying them
    /// (`--link-remap`; files::link_remap).
    pub link_remap: bool,
    /// Parent images of an incremental dump (`--prev-images-dir`, relative to the images
    /// directory): pages unchanged since are not stored again.
    pub prev_images_dir: Option<PathBuf>,
    /// Keep tracking memory changes for a later incremental dump (`--track-mem`; only with
    /// `--leave-running`).
    pub track_mem: bool,
}

/// What a successful dump wrote.
#[derive(Debug, Clone)]
pub struct DumpReport {
    pub pids: Vec<i32>,
    pub pages: u64,
}

/// A clear error for a pid that names no process, before anything is created.
pub(crate) fn check_pid(pid: i32) -> Result<(), DumpError> {
    if pid <= 0 || !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(DumpError::NoSuchProcess { pid });
    }
    Ok(())
}

/// Freezes the tree rooted at `pid`; on failure, whatever was seized is resumed untouched.
pub(crate) fn freeze_tree(pid: i32) -> Result<Tree, DumpError> {
    let mut tree = Tree::default();
    match tree.freeze(pid) {
        Ok(()) => Ok(tree),
        Err(e) => {
            tree.release_all();
            Err(e)
        }
    }
}

/// Dumps the tree rooted at `opts.pid` into `opts.images_dir`.
pub fn dump(opts: &DumpOpts) -> Result<DumpReport, DumpError> {
    let pid = opts.pid;
    check_pid(pid)?;
    let dir = ImageDir::create(&opts.images_dir)?;
    crate::info!(
        "dumping the tree of pid {pid} into {}",
        opts.images_dir.display()
    );
    let written = Written::new(&dir);
    // While the tree still runs, for an incremental dump (whose frozen window they would
    // otherwise fill): room in the pages file for what it will store, so that the frozen
    // tasks only copy into it; the mapping flags of its large processes (mm::flags).
    let (room, flags) = match opts.prev_images_dir {
        Some(_) => {
            let running = mm::inherit::running_tree(pid);
            std::thread::scope(|s| {
                let room = s.spawn(|| mm::pages::Room::ahead(&dir, &running));
                let flags = mm::flags::FlagsAhead::read(&running, LARGE_MM);
                (room.join().expect("room maker panicked"), flags)
            })
        }
        None => (None, None),
    };
    let freezing = std::time::Instant::now();
    let mut tree = freeze_tree(pid).inspect_err(|_| written.remove())?;
    crate::debug!("frozen: {} processes", tree.procs.len());
    match write_tree(&mut tree, opts, &dir, room, flags) {
        Ok(report) => {
            tree.finish(opts.leave_running)?;
            crate::info!(
                "dump of pid {pid}: tree frozen for {:.1} ms",
                freezing.elapsed().as_secs_f64() * 1e3
            );
            crate::info!("dump of pid {pid} done: {} pages", report.pages);
            Ok(report)
        }
        Err(e) => {
            crate::error!("dump of pid {pid} failed: {e}");
            written.remove();
            tree.release_all();
            Err(e)
        }
    }
}

/// One frozen process of the tree (also frozen by `crust pre-dump`, [`crate::predump`]).
pub(crate) struct Proc {
    pub(crate) pid: i32,
    pub(crate) stat: proc::Stat,
    /// Seized threads, the leader first (unless it has exited).
    pub(crate) threads: Vec<Tracee>,
    /// A page crust mapped in the process for syscall arguments.
    scratch: Option<RemoteAddr>,
    zombie: bool,
    leader_exited: bool,
}

impl Proc {
    /// The pid through which /proc shows the process's mm, files, fs and namespaces: its own,
    /// or a live thread's when its leader has exited (an exited leader keeps none of them).
    pub(crate) fn view(&self) -> i32 {
        match self.threads.first() {
            Some(t) if self.leader_exited => t.tid().0,
            _ => self.pid,
        }
    }

    pub(crate) fn remote(
        &mut self,
        what: &'static str,
        nr: i64,
        args: [u64; 6],
    ) -> Result<u64, DumpError> {
        remote_in(&mut self.threads[0], self.pid, what, nr, args)
    }

    pub(crate) fn scratch(&mut self) -> Result<RemoteAddr, DumpError> {
        if let Some(s) = self.scratch {
            return Ok(s);
        }
        let addr = self.remote(
            "mmap of a scratch page",
            libc::SYS_mmap,
            [
                0,
                SCRATCH_LEN,
                // Executable too: remote batches run their code from it.
                (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64,
                // Shared: it never merges with a neighbouring private mapping, so the layout
                // read beside it stays exact.
                (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )?;
        self.scratch = Some(RemoteAddr(addr));
        Ok(RemoteAddr(addr))
    }

    fn unmap_scratch(&mut self) -> Result<(), DumpError> {
        if let Some(s) = self.scratch.take() {
            self.remote(
                "munmap of the scratch page",
                libc::SYS_munmap,
                [s.0, SCRATCH_LEN, 0, 0, 0, 0],
            )?;
        }
        Ok(())
    }
}

/// Writes the pagemap and mm images of process `pid`.
pub(crate) fn write_mm(
    dir: &ImageDir,
    pid: i32,
    pagemap: &[images::pb::PagemapEntry],
    mm_entry: &images::pb::MmEntry,
) -> Result<(), DumpError> {
    let head = PagemapHead {
        pages_id: mm::TREE_PAGES_ID,
    };
    dir.write_pagemap(pid as u32, &head, pagemap)?;
    dir.write_one(ImageKind::Mm, Some(pid as u32), mm_entry)?;
    Ok(())
}

/// A remote syscall of `pid`'s thread `t` whose failure is a dump error naming `what`.
pub(crate) fn remote_in(
    t: &mut Tracee,
    pid: i32,
    what: &'static str,
    nr: i64,
    args: [u64; 6],
) -> Result<u64, DumpError> {
    t.syscall_ok(nr, args)
        .map_err(|source| DumpError::Remote { pid, what, source })
}

/// The frozen tree, parents before children.
#[derive(Default)]
pub(crate) struct Tree {
    pub(crate) procs: Vec<Proc>,
}

fn seize_errno(e: &ParasiteError) -> Option<i32> {
    match e {
        ParasiteError::Seize { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

impl Tree {
    pub(crate) fn freeze(&mut self, root: i32) -> Result<(), DumpError> {
        let mut queue = VecDeque::from([root]);
        let mut known = HashSet::from([root]);
        while let Some(pid) = queue.pop_front() {
            let stat = match proc::stat(pid) {
                Ok(s) => s,
                Err(_) if pid == root => return Err(DumpError::NoSuchProcess { pid }),
                // Gone already: reaped by its parent before that was frozen.
                Err(_) => continue,
            };
            let mut p = Proc {
                pid,
                stat,
                threads: Vec::new(),
                scratch: None,
                zombie: false,
                leader_exited: false,
            };
            // A leader that has exited shows as a zombie thread (and the process as a zombie
            // in its stat): with other threads running on, the process is dumped through them
            // (the leader has no state left to read); alone, the process is exiting and is
            // dumped as the zombie it becomes.
            if thread_state(pid, pid) == Some('Z') {
                p.leader_exited = proc::threads(pid)
                    .unwrap_or_default()
                    .into_iter()
                    .any(|t| t != pid && !matches!(thread_state(pid, t), Some('Z' | 'X') | None));
            }
            if !p.leader_exited && (p.stat.state == 'Z' || p.stat.state == 'X') {
                p.zombie = true;
                self.procs.push(p);
                continue;
            }
            if thread_state(pid, pid) == Some('Z') && !p.leader_exited {
                p.zombie = true;
                if let Ok(s) = proc::stat(pid) {
                    p.stat = s;
                }
                self.procs.push(p);
                continue;
            }
            if let Err(e) = seize_threads(&mut p) {
                // Resume what was seized of this process before giving up.
                for t in p.threads.drain(..) {
                    let _ = t.release();
                }
                return Err(e);
            }
            if p.threads.is_empty() {
                // Exited while we looked: it is a zombie now (its parent is frozen).
                match proc::stat(pid) {
                    Ok(s) => {
                        p.stat = s;
                        p.zombie = true;
                    }
                    Err(_) => continue,
                }
                self.procs.push(p);
                continue;
            }
            // The leader may have exited while its threads were being seized.
            p.leader_exited = !p.threads.iter().any(|t| t.tid().0 == pid);
            // Children, now that no thread of this process can fork any more.
            let mut kids = Vec::new();
            for t in &p.threads {
                kids.extend(proc::children(pid, t.tid().0).unwrap_or_default());
            }
            // In the kernel's order (oldest first), which restore forks in.
            for k in kids {
                if known.insert(k) {
                    queue.push_back(k);
                }
            }
            // Threads in tid order, the leader first.
            p.threads.sort_by_key(|t| (t.tid().0 != pid, t.tid().0));
            self.procs.push(p);
        }
        Ok(())
    }

    /// Resumes every task as it was (after a failure).
    pub(crate) fn release_all(&mut self) {
        for p in &mut self.procs {
            if !p.threads.is_empty() {
                let _ = p.unmap_scratch();
            }
            for t in p.threads.drain(..) {
                let _ = t.release();
            }
        }
    }

    pub(crate) fn finish(&mut self, leave_running: bool) -> Result<(), DumpError> {
        // A tree that is killed takes its scratch pages with it.
        for p in self.procs.iter_mut().filter(|_| leave_running) {
            if !p.threads.is_empty() {
                p.unmap_scratch()?;
            }
        }
        for p in &mut self.procs {
            if leave_running {
                for t in p.threads.drain(..) {
                    t.release()?;
                }
            } else if let Some(t) = p.threads.drain(..).next() {
                t.kill_nowait();
            }
        }
        Ok(())
    }
}

/// The state letter of thread `tid` of `pid` (`/proc/PID/task/TID/stat`).
pub(crate) fn thread_state(pid: i32, tid: i32) -> Option<char> {
    let st = proc::read(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    st[st.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Seizes every thread of `p`, re-listing until no new one appears. Threads that exit
/// meanwhile are skipped; a thread that cannot be seized for another reason fails the dump.
fn seize_threads(p: &mut Proc) -> Result<(), DumpError> {
    let pid = p.pid;
    let mut seen = HashSet::new();
    loop {
        let tids = match proc::threads(pid) {
            Ok(t) => t,
            Err(_) if p.threads.is_empty() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let new: Vec<i32> = tids.into_iter().filter(|t| seen.insert(*t)).collect();
        if new.is_empty() {
            return Ok(());
        }
        for tid in new {
            match Tracee::seize(Tid(tid)) {
                Ok(t) => p.threads.push(t),
                // Exited between listing and seizing, or while being seized.
                Err(e) if seize_errno(&e) == Some(libc::ESRCH) => {}
                Err(ParasiteError::Gone { .. }) => {}
                Err(e) => {
                    if thread_state(pid, tid).is_none_or(|s| s == 'Z' || s == 'X') {
                        // An exiting thread: gone by now.
                        continue;
                    }
                    return Err(DumpError::Seize { pid, source: e });
                }
            }
        }
    }
}

/// Image files this dump created, removed again if it fails.
struct Written {
    dir: PathBuf,
    before: Vec<std::ffi::OsString>,
}

impl Written {
    fn new(dir: &ImageDir) -> Written {
        let before = std::fs::read_dir(dir.path())
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
            .unwrap_or_default();
        Written {
            dir: dir.path().to_owned(),
            before,
        }
    }

    fn remove(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let ours = name.to_string_lossy().ends_with(".img")
                || name.to_string_lossy().ends_with(".img.tmp");
            if ours && !self.before.contains(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn write_tree(
    tree: &mut Tree,
    opts: &DumpOpts,
    dir: &ImageDir,
    room: Option<mm::pages::Room>,
    flags: Option<mm::flags::FlagsAhead>,
) -> Result<DumpReport, DumpError> {
    if fault::hit("dump-after-seize") {
        return Err(DumpError::Fault("dump-after-seize"));
    }
    let root = opts.pid;
    let all: Vec<i32> = tree
        .procs
        .iter()
        .filter(|p| !p.zombie)
        .map(Proc::view)
        .collect();
    let root_view = all.first().copied().unwrap_or(root);
    let owned = crate::ns::dump(root, root_view, &all)?;
    let own_pidns = owned.flags & libc::CLONE_NEWPID as u64 != 0;
    let mut pstree = Vec::new();
    let mut pages = 0;
    let in_tree: HashSet<i32> = tree.procs.iter().map(|p| p.pid).collect();
    // Files need the tree's pids to tell pipes leading outside it.
    let mut files = files::FilesCtx::new(dir, opts, &in_tree)?;
    let mut vdso_ips = HashMap::new();
    // Memory of the whole tree (mm::DumpMem): one pages file, shmem objects once, the write
    // trackers of an earlier pre-dump taken back.
    let mut mem = mm::DumpMem::new(
        dir,
        mm::MemOpts {
            prev: opts.prev_images_dir.clone(),
            track: opts.track_mem && opts.leave_running,
            pre_dump: false,
            leave_running: opts.leave_running,
        },
        room,
    )?;
    let live: Vec<i32> = tree
        .procs
        .iter()
        .filter(|p| !p.threads.is_empty())
        .map(|p| p.pid)
        .collect();
    mem.take_back(&live);
    // /proc files of every process, read ahead on a thread of its own while the tasks are
    // dumped one by one here.
    let mut ahead = ProcAhead::start(
        tree.procs
            .iter()
            .filter(|p| !p.zombie && !p.threads.is_empty())
            .map(Proc::view)
            .collect(),
        flags,
    );
    // System V shared memory of the IPC namespace the tree owns, attached or not (ipc).
    if owned.flags & libc::CLONE_NEWIPC as u64 != 0 {
        crate::ipc::dump_shm(root_view, dir, mem.shmem_mut())?;
    }
    for p in &mut tree.procs {
        let ppid = p.stat.ppid;
        // An exited leader keeps its place first: restore recreates it, then lets it exit.
        let tids: Vec<i32> = p
            .leader_exited
            .then_some(p.pid)
            .into_iter()
            .chain(p.threads.iter().map(|t| t.tid().0))
            .collect();
        let mut entry = PstreeEntry {
            pid: p.pid,
            ppid,
            pgid: p.stat.pgid,
            sid: p.stat.sid,
            threads: tids.clone(),
            zombie: p.zombie,
            exit_status: p.stat.exit_code,
            exit_signal: p.stat.exit_signal,
            subreaper: false,
            leader_exited: p.leader_exited,
            ns_pid: 0,
            ns_threads: Vec::new(),
            ns_pgid: 0,
            ns_sid: 0,
            foreground: p.stat.tty_nr != 0 && p.stat.tpgid == p.stat.pgid,
            comm: if p.zombie {
                p.stat.comm.clone()
            } else {
                String::new()
            },
        };
        if own_pidns {
            let inner = |text: &str, path: &str| -> Result<i32, DumpError> {
                let ns = crate::ns::nspids_in(text);
                ns.get(1).copied().ok_or(DumpError::Unsupported {
                    pid: p.pid,
                    what: format!("a task outside the tree's pid namespace ({path}: {ns:?})"),
                })
            };
            // The process's status, read once for its pids, group and session inside.
            let own_path = format!("/proc/{}/status", p.pid);
            let own = proc::read(&own_path);
            let through = (p.view() != p.pid)
                .then(|| proc::read(format!("/proc/{}/status", p.view())).ok())
                .flatten();
            let view = match &through {
                Some(text) => Some(text.as_str()),
                None if p.view() == p.pid => own.as_deref().ok(),
                None => None,
            };
            // Group and session as seen inside (for leaders that are gone, see restore).
            if let Some(text) = view {
                let innermost = |key| {
                    proc::status_field(text, key)
                        .and_then(|v| v.split_whitespace().last()?.parse().ok())
                        .unwrap_or(0)
                };
                entry.ns_pgid = innermost("NSpgid");
                entry.ns_sid = innermost("NSsid");
            }
            if !p.zombie {
                entry.ns_pid = inner(&own?, &own_path)?;
                for &tid in &tids {
                    let path = format!("/proc/{}/task/{tid}/status", p.pid);
                    entry.ns_threads.push(inner(&proc::read(&path)?, &path)?);
                }
            } else {
                entry.ns_pid = own
                    .ok()
                    .and_then(|text| inner(&text, &own_path).ok())
                    .unwrap_or(0);
                if entry.ns_pid == 0 {
                    return Err(DumpError::Unsupported {
                        pid: p.pid,
                        what: "a zombie whose pid inside the namespace is unknown".into(),
                    });
                }
            }
        }
        if p.pid != root && !in_tree.contains(&ppid) {
            return Err(DumpError::Unsupported {
                pid: p.pid,
                what: format!("a task whose parent {ppid} is outside the tree"),
            });
        }
        if !p.zombie {
            let (n, subreaper) = dump_process(
                p,
                opts,
                dir,
                (&mut files, &mut mem),
                &mut vdso_ips,
                &mut ahead,
            )?;
            pages += n;
            entry.subreaper = subreaper;
        }
        pstree.push(entry);
    }
    // Page contents of the shmem objects; the write trackers go to their keeper.
    mem.finish()?;
    if fault::hit("dump-after-pages") {
        return Err(DumpError::Fault("dump-after-pages"));
    }
    // files.img, pipes-data.img and the raw files-data.img; `--link-remap` links are removed
    // again unless the inventory below is written.
    let remaps = files.write(dir)?;
    dir.write(ImageKind::Pstree, None, &pstree)?;
    if fault::hit("dump-before-inventory") {
        return Err(DumpError::Fault("dump-before-inventory"));
    }
    let pids: Vec<i32> = pstree.iter().map(|p| p.pid).collect();
    dir.write_one(
        ImageKind::Inventory,
        None,
        &InventoryEntry {
            format_version: images::FORMAT_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            kernel_release: kernel_release(),
            root_pid: root,
            pids: pids.clone(),
            root_ns_flags: owned.flags,
            hostname: owned.hostname,
            domainname: owned.domainname,
            dump_time_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
        },
    )?;
    remaps.keep();
    Ok(DumpReport { pids, pages })
}

/// The state of one thread, read while it is frozen.
fn dump_thread(t: &mut Tracee, pid: i32, scratch: RemoteAddr) -> Result<ThreadCore, DumpError> {
    let tid = t.tid().0;
    // What only the thread itself can read, in one remote batch.
    let mut batch = Batch::new(scratch);
    let prctl = |op: i32, arg: u64| [op as u64, arg, 0, 0, 0, 0];
    let ss_at = batch.out(24);
    let ss = batch.push("sigaltstack", libc::SYS_sigaltstack, [0, ss_at, 0, 0, 0, 0]);
    const PR_GET_TID_ADDRESS: i32 = 40;
    let tid_addr_at = batch.out(8);
    let tid_addr = batch.push(
        "prctl(PR_GET_TID_ADDRESS)",
        libc::SYS_prctl,
        prctl(PR_GET_TID_ADDRESS, tid_addr_at),
    );
    let no_new_privs = batch.push(
        "prctl(PR_GET_NO_NEW_PRIVS)",
        libc::SYS_prctl,
        prctl(libc::PR_GET_NO_NEW_PRIVS, 0),
    );
    let keepcaps = batch.push(
        "prctl(PR_GET_KEEPCAPS)",
        libc::SYS_prctl,
        prctl(libc::PR_GET_KEEPCAPS, 0),
    );
    let timer_slack_ns = batch.push(
        "prctl(PR_GET_TIMERSLACK)",
        libc::SYS_prctl,
        prctl(libc::PR_GET_TIMERSLACK, 0),
    );
    let ran = batch.run(t, pid)?;
    ran.ok(ss)?;
    let altstack = SigAltStack {
        ss_sp: ran.word(ss_at, 0),
        ss_flags: ran.word(ss_at, 1) as i32,
        ss_size: ran.word(ss_at, 2),
    };
    ran.ok(tid_addr)?;
    let clear_child_tid = ran.word(tid_addr_at, 0);
    let no_new_privs = ran.ok(no_new_privs)? != 0;
    let keepcaps = ran.ok(keepcaps)? != 0;
    let timer_slack_ns = ran.ok(timer_slack_ns)?;
    let (robust_list, robust_list_len) =
        sys::get_robust_list(tid).map_err(|source| DumpError::Io {
            pid,
            path: format!("robust list of thread {tid}").into(),
            source,
        })?;
    let sched = sys::get_sched(tid).map_err(|source| DumpError::Io {
        pid,
        path: format!("scheduling of thread {tid}").into(),
        source,
    })?;
    let comm = proc::read(format!("/proc/{pid}/task/{tid}/comm"))?
        .trim_end_matches('\n')
        .to_string();
    let rseq_conf = t.rseq_configuration()?;
    Ok(ThreadCore {
        tid,
        regs: Some(regs::to_image(t.orig_regs())),
        xsave: t.get_xstate()?,
        sigmask: t.orig_sigmask(),
        pending: siginfos(t.pending_signals(false)?),
        rseq: (rseq_conf.rseq_abi_pointer != 0).then_some(Rseq {
            rseq_abi_pointer: rseq_conf.rseq_abi_pointer,
            rseq_abi_size: rseq_conf.rseq_abi_size,
            flags: rseq_conf.flags,
            signature: rseq_conf.signature,
        }),
        altstack: Some(altstack),
        clear_child_tid,
        robust_list,
        robust_list_len,
        comm,
        sched_policy: sched.policy,
        sched_priority: sched.priority,
        nice: sched.nice,
        cpu_affinity: sched.affinity,
        no_new_privs,
        keepcaps,
        timer_slack_ns,
    })
}

/// `/proc/PID/status`, `maps` and `smaps` of the processes of a frozen tree, read in dump
/// order on a thread of its own (on idle cores only) while the tasks are dumped one by one:
/// nothing in them needs the tracer, and smaps walks every page table entry. Each process's
/// files are read before its dump maps the scratch page, since the dump waits for them
/// first; smaps of a process mapping more than [`LARGE_MM`] is left to its dump, as
/// the walk would hold its mm lock while the dump's first remote batch waits for it.
struct ProcAhead {
    rx: std::sync::mpsc::Receiver<(i32, Ahead)>,
    got: HashMap<i32, Ahead>,
    reader: crate::sys::Idle,
    /// Mapping flags of large processes, learned before the tree was frozen.
    flags: Option<mm::flags::FlagsAhead>,
}

/// Processes mapping more than this have their smaps read beside their page copy
/// ([`ProcAhead`]), or ahead of the freeze in an incremental dump ([`mm::flags`]).
pub(crate) const LARGE_MM: u64 = 256 << 20;

type ProcResult<T> = Result<T, proc::ProcError>;

/// What [`ProcAhead`] read of one process.
struct Ahead {
    status: ProcResult<String>,
    /// Read again once the task is frozen: its mm fields are those of the finished `execve`
    /// (read while an `execve` was still loading the new program, they are zeros).
    stat: ProcResult<proc::Stat>,
    maps: ProcResult<Vec<proc::Vma>>,
    smaps: Option<ProcResult<Vec<proc::Vma>>>,
}

impl Ahead {
    fn read(pid: i32) -> Ahead {
        let status = proc::read(format!("/proc/{pid}/status"));
        let stat = proc::stat(pid);
        let maps = proc::maps(pid);
        let small = maps
            .as_ref()
            .is_ok_and(|m| m.iter().map(|v| v.len()).sum::<u64>() <= LARGE_MM);
        Ahead {
            status,
            stat,
            maps,
            smaps: small.then(|| proc::smaps(pid)),
        }
    }
}

impl ProcAhead {
    fn start(pids: Vec<i32>, flags: Option<mm::flags::FlagsAhead>) -> ProcAhead {
        let (tx, rx) = std::sync::mpsc::channel();
        // On idle cores only: a task in a remote call must never wait for this thread.
        let (reader, _) = crate::sys::Idle::spawn(move || {
            for pid in pids {
                // The dump gave up: stop reading.
                if tx.send((pid, Ahead::read(pid))).is_err() {
                    break;
                }
            }
        });
        ProcAhead {
            rx,
            got: HashMap::new(),
            reader,
            flags,
        }
    }

    /// What was read of `pid`, waiting for it if need be (read here if the reader has none).
    fn take(&mut self, pid: i32) -> Ahead {
        loop {
            if let Some(a) = self.got.remove(&pid) {
                return a;
            }
            // Waited for: the reader is not idle while it is.
            self.reader.urgent(true);
            let got = self.rx.recv();
            self.reader.urgent(false);
            match got {
                Ok((p, a)) => {
                    self.got.insert(p, a);
                }
                Err(_) => return Ahead::read(pid),
            }
        }
    }
}

fn siginfos(v: Vec<[u8; parasite::SIGINFO_SIZE]>) -> Vec<SigInfo> {
    v.into_iter()
        .map(|raw| SigInfo { raw: raw.to_vec() })
        .collect()
}

/// Dumps one live process; returns the number of pages saved and its subreaper flag.
fn dump_process(
    p: &mut Proc,
    opts: &DumpOpts,
    dir: &ImageDir,
    (files, mem): (&mut files::FilesCtx, &mut mm::DumpMem),
    vdso_ips: &mut HashMap<u64, RemoteAddr>,
    ahead: &mut ProcAhead,
) -> Result<(u64, bool), DumpError> {
    // An exited leader has no mm, files or fs left to show: /proc is read through a live
    // thread of the process (its tid names the same process there).
    let pid = p.view();
    let Ahead {
        status,
        stat,
        maps,
        smaps,
    } = ahead.take(pid);
    let status = status?;
    let umask = proc::status_field(&status, "Umask")
        .and_then(|v| u32::from_str_radix(v, 8).ok())
        .unwrap_or(0o022);

    // Layout first (read ahead): the scratch page must not show up in it. The VmFlags come
    // from smaps.
    let mut vmas = maps?;
    for v in &vmas {
        mm::check_dumpable(pid, v)?;
    }
    // Every process maps the kernel's one vDSO: where it sits at the same address, the
    // `syscall` instruction found in it once serves every task (no search per task).
    if let Some(vdso) = vmas.iter().find(|v| v.name == "[vdso]") {
        let ip = match vdso_ips.get(&vdso.start) {
            Some(&ip) => ip,
            None => {
                let ip = p.threads[0].find_syscall_ip()?;
                vdso_ips.insert(vdso.start, ip);
                ip
            }
        };
        p.threads.iter_mut().for_each(|t| t.set_syscall_ip(ip));
    }
    crate::debug!("pid {pid}: layout read");
    let scratch = p.scratch()?;
    crate::debug!("pid {pid}: scratch mapped");

    // The process-wide state the kernel only tells the task itself, in one remote batch.
    let mut batch = Batch::new(scratch);
    let prctl = |op: i32, arg: u64| [op as u64, arg, 0, 0, 0, 0];
    let brk = batch.push("brk(0)", libc::SYS_brk, [0; 6]);
    let pdeath_at = batch.out(8);
    let pdeath = batch.push(
        "prctl(PR_GET_PDEATHSIG)",
        libc::SYS_prctl,
        prctl(libc::PR_GET_PDEATHSIG, pdeath_at),
    );
    let subreaper_at = batch.out(8);
    let subreaper = batch.push(
        "prctl(PR_GET_CHILD_SUBREAPER)",
        libc::SYS_prctl,
        prctl(libc::PR_GET_CHILD_SUBREAPER, subreaper_at),
    );
    let dumpable = batch.push(
        "prctl(PR_GET_DUMPABLE)",
        libc::SYS_prctl,
        prctl(libc::PR_GET_DUMPABLE, 0),
    );
    let personality = batch.push(
        "personality",
        libc::SYS_personality,
        [0xffff_ffff, 0, 0, 0, 0, 0],
    );
    let thp_disable = batch.push(
        "prctl(PR_GET_THP_DISABLE)",
        libc::SYS_prctl,
        prctl(libc::PR_GET_THP_DISABLE, 0),
    );
    let asked_actions = signals::ask_actions(&mut batch, &status);
    let asked_timers = crate::timers::ask(&mut batch);
    let ran = batch.run(&mut p.threads[0], pid)?;
    let brk = ran.ok(brk)?;
    ran.ok(pdeath)?;
    let pdeath_signal = ran.word(pdeath_at, 0) as i32;
    ran.ok(subreaper)?;
    let subreaper = ran.word(subreaper_at, 0) as i32 != 0;
    let dumpable = ran.ok(dumpable)? != 0;
    let personality = ran.ok(personality)? as u32;
    let thp_disable = ran.ok(thp_disable)? != 0;
    let actions = signals::actions_of(&ran, &asked_actions)?;
    let itimers = crate::timers::timers_of(&ran, &asked_timers)?;
    let shared_pending = siginfos(p.threads[0].pending_signals(true)?);
    let mut cores = Vec::with_capacity(p.threads.len());
    for t in &mut p.threads {
        cores.push(dump_thread(t, pid, scratch)?);
    }
    crate::debug!("pid {pid}: task state read");

    let fds = files.dump_task(pid, opts.shell_job)?;
    let cwd = proc::readlink(format!("/proc/{pid}/cwd"))?;
    let fs = FsEntry {
        // A removed working directory is made again at restore (files::ghost).
        cwd_ghost: files.dump_cwd(pid, &cwd)?,
        cwd,
        // A root restore could not bring back by its path is refused here (files::root).
        root: files.dump_root(pid, proc::readlink(format!("/proc/{pid}/root"))?)?,
        umask,
    };
    let limits_path = PathBuf::from(format!("/proc/{pid}/limits"));
    let rlimits = proc::parse_limits(&limits_path, &proc::read(&limits_path)?)?
        .into_iter()
        .map(|(resource, cur, max)| images::pb::RlimitEntry { resource, cur, max })
        .collect::<Vec<_>>();

    // Memory contents.
    crate::debug!("pid {pid}: files read");
    // (mm::DumpMem: the pages go to the tree's pages file, copied beside the smaps read.)
    // The task writes its own scattered pages where it safely can (pages::PagesOut::copy_in_task).
    let in_task = crate::mm::pages::task_may_write(&status, p.threads.len(), &rlimits);
    // A large process's smaps, left by the reader, is read beside the page copy: not before
    // the remote batch (`brk` waits for the mm lock a walk of many page tables holds), nor
    // beside the page scan (both walks take the lock of each page table in turn: they would
    // queue behind each other all the way). Idle cores only, like the reader ahead: the task
    // runs remote calls meanwhile.
    // Or its flags are known from before the freeze (mm::flags).
    let known = match &smaps {
        None => ahead
            .flags
            .as_ref()
            .and_then(|f| f.frozen(p.pid, pid, &vmas)),
        Some(_) => None,
    };
    let mut reading = None;
    let pagemap = mem.dump_pages(
        pid,
        p.stat.ppid,
        &vmas,
        in_task.then_some((&mut p.threads[0], scratch)),
        || {
            if smaps.is_none() && known.is_none() {
                reading = Some(crate::sys::Idle::spawn(move || proc::smaps(pid)));
            }
        },
    )?;
    crate::debug!("pid {pid}: memory scanned: {} runs", pagemap.len());
    let found = match (smaps, known, reading) {
        (Some(r), _, _) => r,
        (None, Some(k), _) => Ok(k),
        (None, None, Some((idle, h))) => {
            idle.urgent(true);
            h.join().expect("smaps reader panicked")
        }
        (None, None, None) => proc::smaps(pid),
    };
    mm::attach_flags(pid, &mut vmas, &found?)?;
    crate::debug!("pid {pid}: smaps read");
    let mm_stat = stat?;
    let mut mm_entry = mem.layout(pid, &mm_stat, brk, &vmas)?;
    mm_entry.track = mem.arm(pid, &mut p.threads[0], scratch, &vmas);

    let id = Some(p.pid as u32);
    write_mm(dir, p.pid, &pagemap, &mm_entry)?;
    let comm = mm_stat.comm.clone();
    let mut task = Some(TaskCore {
        pending_shared: shared_pending,
        personality,
        umask,
        exit_signal: p.stat.exit_signal,
        pdeath_signal,
        dumpable,
        comm,
        itimers,
        thp_disable,
    });
    if p.leader_exited {
        // The exited leader: no thread state but the mask it exited with, only the process's.
        let path = format!("/proc/{}/task/{}/status", p.pid, p.pid);
        let sigmask = proc::status_field(&proc::read(&path)?, "SigBlk")
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(0);
        let leader = ThreadCore {
            tid: p.pid,
            sigmask,
            ..Default::default()
        };
        cores.insert(0, leader);
    }
    for thread in cores {
        let tid = thread.tid as u32;
        let core = CoreEntry {
            thread: Some(thread),
            task: task.take(),
        };
        dir.write_one(ImageKind::Core, Some(tid), &core)?;
    }
    dir.write(ImageKind::Sigacts, id, &actions)?;
    dir.write(ImageKind::Fdinfo, id, &fds)?;
    dir.write_one(ImageKind::Fs, id, &fs)?;
    dir.write(ImageKind::Rlimits, id, &rlimits)?;
    crate::debug!("pid {pid}: images written");
    Ok((pagemap.iter().map(|e| e.nr_pages).sum(), subreaper))
}
