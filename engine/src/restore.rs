//! Restore: crust forks the task itself, with its saved pid (`clone3` with `set_tid`, Linux
//! 5.5), lets the child reopen its files at their numbers (plain crust code, allocation-free),
//! then takes it over as tracer and rebuilds its memory and state with remote syscalls:
//!
//! 1. map a two-page trampoline (`syscall` + a data page) where neither layout has anything;
//! 2. unregister the child's rseq area (glibc's), or the kernel kills the task with SIGSEGV
//!    once that memory is gone;
//! 3. unmap everything else, move `[vvar]`, `[vvar_vclock]`, `[vdso]` to their saved places,
//!    map and fill the saved VMAs (see [`crate::mm`]);
//! 4. `PR_SET_MM_MAP` (mm fields, auxv, exe), signal dispositions, altstack, queued signals,
//!    rlimits, umask, rseq registration, FPU/AVX state;
//! 5. unmap the trampoline from itself; at the single-step trap that follows, set the final
//!    registers and signal mask, and detach.
//!
//! Every image is read and checked before anything is created. A failure after the fork kills
//! what was created; the images are never modified.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use images::pb::{
    CoreEntry, FdinfoEntry, FileEntry, FsEntry, MmEntry, PagemapEntry, PipeData, PstreeEntry,
    RlimitEntry, SigactionEntry,
};
use images::{ImageDir, ImageKind, PAGE_SIZE};
use parasite::{RemoteAddr, StopKind, Tid, Tracee, WaitStatus};

use crate::error::{fault, RestoreError};
use crate::files::{self, FdOp};
use crate::mm::{self, rsys, MmFds};
use crate::sys::{self, child};
use crate::{proc, regs, signals};

/// Options of one restore, as `crust restore` takes them.
#[derive(Debug, Clone, Default)]
pub struct RestoreOpts {
    pub images_dir: PathBuf,
    /// The tree is a job of a shell: its terminal fds are reopened on crust's own terminal.
    pub shell_job: bool,
}

/// The restored tree, running.
#[derive(Debug, Clone)]
pub struct Restored {
    pub root_pid: i32,
}

/// Everything one task's restore needs, read and checked before anything is created.
struct TaskImages {
    pid: i32,
    pstree: PstreeEntry,
    core: CoreEntry,
    mm: MmEntry,
    pagemap: Vec<PagemapEntry>,
    pages_path: Option<PathBuf>,
    fdinfo: Vec<FdinfoEntry>,
    fs: FsEntry,
    sigacts: Vec<SigactionEntry>,
    rlimits: Vec<RlimitEntry>,
}

fn load(dir: &ImageDir) -> Result<(TaskImages, Vec<FileEntry>, Vec<PipeData>), RestoreError> {
    let inv = dir.read_inventory()?;
    let pstree: Vec<PstreeEntry> = dir.read(ImageKind::Pstree, None)?;
    let pstree_path = dir.file_path(ImageKind::Pstree, None);
    let root = pstree
        .iter()
        .find(|p| p.pid == inv.root_pid)
        .cloned()
        .ok_or_else(|| RestoreError::BadImage {
            image: pstree_path.clone(),
            what: format!("no entry for the root pid {}", inv.root_pid),
        })?;
    if pstree.len() != 1 || root.pid <= 0 {
        return Err(RestoreError::BadImage {
            image: pstree_path,
            what: format!("{} tasks (this engine restores one)", pstree.len()),
        });
    }
    let pid = root.pid;
    let id = Some(pid as u32);
    let core: CoreEntry = dir.read_one(ImageKind::Core, id)?;
    let core_path = dir.file_path(ImageKind::Core, id);
    let thread = core.thread.as_ref().ok_or_else(|| RestoreError::BadImage {
        image: core_path.clone(),
        what: "no thread state".into(),
    })?;
    if thread.regs.is_none() || core.task.is_none() {
        return Err(RestoreError::BadImage {
            image: core_path,
            what: "registers or task state missing".into(),
        });
    }
    let mm: MmEntry = dir.read_one(ImageKind::Mm, id)?;
    check_layout(&mm, &dir.file_path(ImageKind::Mm, id))?;
    let (head, pagemap) = dir.read_pagemap(pid as u32)?;
    check_pages_in_vmas(&mm, &pagemap, &dir.file_path(ImageKind::Pagemap, id))?;
    let pages_path = (!pagemap.is_empty()).then(|| dir.pages_path(head.pages_id));
    let images = TaskImages {
        pid,
        pstree: root,
        core,
        mm,
        pagemap,
        pages_path,
        fdinfo: dir.read(ImageKind::Fdinfo, id)?,
        fs: dir.read_one(ImageKind::Fs, id)?,
        sigacts: dir.read(ImageKind::Sigacts, id)?,
        rlimits: dir.read(ImageKind::Rlimits, id)?,
    };
    let files = dir.read(ImageKind::Files, None)?;
    let pipes = dir.read(ImageKind::PipeData, None)?;
    Ok((images, files, pipes))
}

const TASK_SIZE: u64 = 0x7fff_ffff_f000;

/// VMAs sorted, page aligned, non-overlapping, inside the user address space.
fn check_layout(mm: &MmEntry, image: &Path) -> Result<(), RestoreError> {
    let bad = |what: String| RestoreError::BadImage {
        image: image.to_owned(),
        what,
    };
    let mut prev_end = 0;
    for v in &mm.vmas {
        if v.kind() == images::pb::VmaKind::VmaVsyscall {
            continue;
        }
        if v.start % PAGE_SIZE != 0 || v.end % PAGE_SIZE != 0 || v.start >= v.end {
            return Err(bad(format!(
                "mapping {:#x}-{:#x} is malformed",
                v.start, v.end
            )));
        }
        if v.start < prev_end || v.end > TASK_SIZE {
            return Err(bad(format!(
                "mapping {:#x}-{:#x} overlaps another or leaves the address space",
                v.start, v.end
            )));
        }
        if v.pgoff % PAGE_SIZE != 0 {
            return Err(bad(format!(
                "mapping {:#x}: unaligned file offset",
                v.start
            )));
        }
        prev_end = v.end;
    }
    Ok(())
}

/// Every page run lies inside one VMA that takes saved pages.
fn check_pages_in_vmas(
    mm: &MmEntry,
    pagemap: &[PagemapEntry],
    image: &Path,
) -> Result<(), RestoreError> {
    use images::pb::VmaKind::*;
    for e in pagemap {
        let end = e.vaddr + e.nr_pages * PAGE_SIZE;
        let ok = mm.vmas.iter().any(|v| {
            v.start <= e.vaddr
                && end <= v.end
                && matches!(
                    v.kind(),
                    VmaAnonPrivate | VmaFilePrivate | VmaStack | VmaHeap
                )
        });
        if !ok {
            return Err(RestoreError::BadImage {
                image: image.to_owned(),
                what: format!("pages at {:#x}-{end:#x} lie outside any mapping", e.vaddr),
            });
        }
    }
    Ok(())
}

/// A step the restore child runs, and what it is called in an error message.
enum Step {
    Fd(FdOp),
    /// Open `path` read-only at service fd `fd`.
    Service {
        path: CString,
        fd: i32,
    },
    Chdir(CString),
    SetName(CString),
    Session {
        pid: i32,
        pgid: i32,
        sid: i32,
    },
}

impl Step {
    fn describe(&self) -> String {
        match self {
            Step::Fd(op) => op.describe(),
            Step::Service { path, .. } => format!("opening {}", path.to_string_lossy()),
            Step::Chdir(p) => format!("cwd {}", p.to_string_lossy()),
            Step::SetName(_) => "comm".into(),
            Step::Session { .. } => "session and process group".into(),
        }
    }

    fn run(&self) -> child::Raw {
        match self {
            Step::Fd(op) => files::run_in_child(op),
            Step::Service { path, fd } => {
                let got = child::open(path, libc::O_RDONLY | libc::O_CLOEXEC, 0)? as i32;
                files::place(got, *fd)
            }
            Step::Chdir(p) => child::chdir(p),
            Step::SetName(n) => child::set_name(n),
            Step::Session { pid, pgid, sid } => child::session(*pid, *pgid, *sid),
        }
    }
}

fn cstring(s: &str, image: &Path) -> Result<CString, RestoreError> {
    CString::new(s).map_err(|_| RestoreError::BadImage {
        image: image.to_owned(),
        what: format!("path {s:?} holds a NUL byte"),
    })
}

/// Restores the tree saved in `opts.images_dir`; on success it is running.
pub fn restore(opts: &RestoreOpts) -> Result<Restored, RestoreError> {
    let dir = ImageDir::open(&opts.images_dir)?;
    let (img, files_img, pipes) = load(&dir)?;
    let pid = img.pid;
    crate::info!("restoring pid {pid} from {}", opts.images_dir.display());
    if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        return Err(RestoreError::PidTaken {
            pid,
            comm: comm.trim().to_string(),
        });
    }
    let id = Some(pid as u32);
    let fd_ops = files::plan(
        &img.fdinfo,
        &files_img,
        &pipes,
        opts.shell_job,
        &dir.file_path(ImageKind::Fdinfo, id),
    )?;

    // Service descriptors sit above every fd the task will have.
    let max_fd = img.fdinfo.iter().map(|e| e.fd as i32).max().unwrap_or(2);
    let svc_base = max_fd + 1;
    let mut steps: Vec<Step> = Vec::new();
    let mm_path = dir.file_path(ImageKind::Mm, id);
    let mut next_svc = svc_base;
    let mut svc = |path: &str, steps: &mut Vec<Step>| -> Result<i32, RestoreError> {
        let fd = next_svc;
        next_svc += 1;
        steps.push(Step::Service {
            path: cstring(path, &mm_path)?,
            fd,
        });
        Ok(fd)
    };
    let exe = img.mm.exe.clone().unwrap_or_default();
    check_file(&exe)?;
    let exe_fd = svc(&exe.path, &mut steps)?;
    let mut mapped = Vec::new();
    for v in &img.mm.vmas {
        if let Some(f) = &v.file {
            if !mapped.iter().any(|(p, _)| p == &f.path) {
                check_file(f)?;
                let fd = svc(&f.path, &mut steps)?;
                mapped.push((f.path.clone(), fd));
            }
        }
    }
    let ctl_min = next_svc;
    steps.extend(fd_ops.into_iter().map(Step::Fd));
    steps.push(Step::Session {
        pid,
        pgid: img.pstree.pgid,
        sid: img.pstree.sid,
    });
    steps.push(Step::Chdir(cstring(
        &img.fs.cwd,
        &dir.file_path(ImageKind::Fs, id),
    )?));
    let comm = &img.core.task.as_ref().expect("checked in load").comm;
    steps.push(Step::SetName(cstring(
        comm,
        &dir.file_path(ImageKind::Core, id),
    )?));

    let child_pid = spawn(pid, &steps, ctl_min)?;
    let mut tracee = Tracee::from_stopped(Tid(child_pid), StopKind::Interrupted)?;
    let fds = MmFds {
        files: mapped,
        exe: exe_fd,
    };
    match take_over(&mut tracee, &img, &fds, svc_base) {
        Ok(()) => {
            if fault::hit("restore-before-release") {
                let _ = tracee.kill();
                return Err(RestoreError::Fault("restore-before-release"));
            }
            tracee.release()?;
            crate::info!("pid {pid} restored and running");
            Ok(Restored { root_pid: pid })
        }
        Err(e) => {
            crate::error!("restore of pid {pid} failed: {e}");
            let _ = tracee.kill();
            Err(e)
        }
    }
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

/// Creates the task with its saved pid and runs `steps` in it; returns once it sits in its
/// SIGSTOP signal-delivery-stop, seized by crust.
fn spawn(pid: i32, steps: &[Step], ctl_min: i32) -> Result<i32, RestoreError> {
    let (sync_r, sync_w) =
        sys::pipe_cloexec().map_err(|source| RestoreError::Clone { pid, source })?;
    let (err_r, err_w) =
        sys::pipe_cloexec().map_err(|source| RestoreError::Clone { pid, source })?;
    let (sync_r_raw, err_w_raw) = (sync_r.as_raw_fd(), err_w.as_raw_fd());
    let got = sys::fork_with_pid(pid, || child_main(steps, sync_r_raw, err_w_raw, ctl_min));
    match got {
        Ok(child_pid) => {
            drop(sync_r);
            drop(err_w);
            let seized = Tracee::seize_running(Tid(child_pid));
            let _ = nix::unistd::write(&sync_w, &[1]);
            drop(sync_w);
            if let Err(e) = seized {
                sys::kill_and_reap(child_pid);
                return Err(e.into());
            }
            let status = Tracee::wait_stop(Tid(child_pid), "restore setup");
            match status {
                Ok(WaitStatus::Stopped {
                    sig: libc::SIGSTOP,
                    event: 0,
                }) => {
                    if fault::hit("restore-after-fork") {
                        sys::kill_and_reap(child_pid);
                        return Err(RestoreError::Fault("restore-after-fork"));
                    }
                    Ok(child_pid)
                }
                Ok(other) => {
                    sys::kill_and_reap(child_pid);
                    Err(RestoreError::Died {
                        pid,
                        status: format!("{other:?}"),
                    })
                }
                Err(_) => {
                    let mut buf = [0u8; 8];
                    let n = nix::unistd::read(&err_r, &mut buf).unwrap_or(0);
                    if n == 8 {
                        let idx = i32::from_ne_bytes(buf[..4].try_into().expect("4"));
                        let errno = i32::from_ne_bytes(buf[4..].try_into().expect("4"));
                        let what = steps
                            .get(idx as usize)
                            .map(Step::describe)
                            .unwrap_or_else(|| "control descriptors".into());
                        Err(RestoreError::ChildSetup {
                            pid,
                            what,
                            source: std::io::Error::from_raw_os_error(errno),
                        })
                    } else {
                        Err(RestoreError::Died {
                            pid,
                            status: "exited during setup".into(),
                        })
                    }
                }
            }
        }
        Err(source) if source.raw_os_error() == Some(libc::EEXIST) => Err(RestoreError::PidTaken {
            pid,
            comm: "?".into(),
        }),
        Err(source) => Err(RestoreError::Clone { pid, source }),
    }
}

/// The restore child: runs between clone3 and its SIGSTOP. Allocation-free.
fn child_main(steps: &[Step], sync_r: i32, err_w: i32, ctl_min: i32) -> std::convert::Infallible {
    let fail = |idx: i32, errno: i32, err_w: i32| -> ! {
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&idx.to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        let _ = child::write_all(err_w, &msg);
        child::exit(70)
    };
    let mut b = [0u8; 1];
    let _ = child::read(sync_r, &mut b);
    // Keep the error pipe above every fd the task and the service fds will use.
    let err_w = match child::dup_above(err_w, ctl_min) {
        Ok(fd) => fd as i32,
        Err(e) => fail(-1, e, err_w),
    };
    if let Err(e) = child::close_range(0, (ctl_min - 1) as u32) {
        fail(-1, e, err_w);
    }
    // Crust's own dispositions (Rust ignores SIGPIPE) must not leak into the task.
    child::reset_signals(signals::NSIG as i32);
    for (i, s) in steps.iter().enumerate() {
        if let Err(e) = s.run() {
            fail(i as i32, e, err_w);
        }
    }
    let _ = child::stop_self();
    child::exit(71)
}

fn take_over(
    t: &mut Tracee,
    img: &TaskImages,
    fds: &MmFds,
    svc_base: i32,
) -> Result<(), RestoreError> {
    let pid = img.pid;
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
    const MAP_FIXED_NOREPLACE: u64 = 0x100000;
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
        &img.mm,
        &img.pagemap,
        fds,
        img.pages_path.as_deref(),
        (tramp, tramp + tlen),
    )?;
    if fault::hit("restore-after-mm") {
        return Err(RestoreError::Fault("restore-after-mm"));
    }
    set_mm_map(t, pid, &img.mm, fds.exe, data)?;

    let thread = img.core.thread.as_ref().expect("checked in load");
    let task = img.core.task.as_ref().expect("checked in load");
    signals::restore_actions(t, pid, data, &img.sigacts)?;
    if let Some(ss) = &thread.altstack {
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
            || "sigaltstack".into(),
        )?;
    }
    rsys(
        t,
        pid,
        libc::SYS_personality,
        [task.personality as u64, 0, 0, 0, 0, 0],
        || "personality".into(),
    )?;
    rsys(
        t,
        pid,
        libc::SYS_prctl,
        [
            libc::PR_SET_PDEATHSIG as u64,
            task.pdeath_signal as u64,
            0,
            0,
            0,
            0,
        ],
        || "prctl(PR_SET_PDEATHSIG)".into(),
    )?;
    signals::restore_pending(t, pid, pid, data, &thread.pending, false)?;
    signals::restore_pending(t, pid, pid, data, &task.pending_shared, true)?;
    // Service descriptors (pages image, mapped files, exe, control pipes) go away.
    rsys(
        t,
        pid,
        libc::SYS_close_range,
        [svc_base as u64, u32::MAX as u64, 0, 0, 0, 0],
        || "close of service descriptors".into(),
    )?;
    rsys(
        t,
        pid,
        libc::SYS_umask,
        [task.umask as u64, 0, 0, 0, 0, 0],
        || "umask".into(),
    )?;
    restore_rlimits(t, pid, data, &img.rlimits)?;
    if let Some(r) = &thread.rseq {
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
            || "rseq registration".into(),
        )?;
    }
    if !task.dumpable {
        rsys(
            t,
            pid,
            libc::SYS_prctl,
            [libc::PR_SET_DUMPABLE as u64, 0, 0, 0, 0, 0],
            || "prctl(PR_SET_DUMPABLE)".into(),
        )?;
    }
    if !thread.xsave.is_empty() {
        t.set_xstate(&thread.xsave)?;
    }
    // Last remote syscall: the trampoline unmaps itself. The single-step trap after it is
    // where the final registers go in.
    rsys(t, pid, libc::SYS_munmap, [tramp, tlen, 0, 0, 0, 0], || {
        "munmap of the trampoline".into()
    })?;
    t.forget_mem();
    let saved = regs::from_image(thread.regs.as_ref().expect("checked in load"));
    t.set_final_regs(regs::for_resume(&saved));
    t.set_final_sigmask(thread.sigmask);
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
