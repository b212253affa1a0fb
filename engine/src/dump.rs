//! Dump: freeze → collect → write images → kill (or resume with `--leave-running`).
//!
//! Until the inventory image is written nothing is final: any error resumes the task exactly as
//! it was (registers, signal mask, stop state), removes the image files this dump wrote, and
//! reports. The inventory is written last, so a directory without one is never taken for a
//! complete dump.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use images::pb::{
    CoreEntry, FsEntry, InventoryEntry, PagemapHead, PstreeEntry, Rseq, SigAltStack, SigInfo,
    TaskCore, ThreadCore,
};
use images::{ImageDir, ImageKind};
use parasite::{RemoteAddr, Tid, Tracee};

use crate::error::{fault, DumpError};
use crate::{files, mm, proc, regs, signals};

/// Options of one dump, as `crust dump` takes them.
#[derive(Debug, Clone, Default)]
pub struct DumpOpts {
    pub pid: i32,
    pub images_dir: PathBuf,
    /// Resume the tree after dumping instead of killing it.
    pub leave_running: bool,
    /// The tree is a job of a shell: its terminal, session and group lie outside it.
    pub shell_job: bool,
}

/// What a successful dump wrote.
#[derive(Debug, Clone)]
pub struct DumpReport {
    pub pids: Vec<i32>,
    pub pages: u64,
}

const SCRATCH_LEN: u64 = 4096;

/// Dumps the tree rooted at `opts.pid` into `opts.images_dir`.
pub fn dump(opts: &DumpOpts) -> Result<DumpReport, DumpError> {
    let pid = opts.pid;
    if pid <= 0 || !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(DumpError::NoSuchProcess { pid });
    }
    let threads = proc::threads(pid)?;
    if threads.len() > 1 {
        return Err(DumpError::Unsupported {
            pid,
            what: format!("a multi-threaded process ({} threads)", threads.len()),
        });
    }
    let dir = ImageDir::create(&opts.images_dir)?;
    crate::info!("dumping pid {pid} into {}", opts.images_dir.display());
    let tracee = Tracee::seize(Tid(pid)).map_err(|source| match source {
        parasite::ParasiteError::Seize { ref source, .. }
            if source.raw_os_error() == Some(libc::ESRCH) =>
        {
            DumpError::NoSuchProcess { pid }
        }
        source => DumpError::Seize { pid, source },
    })?;
    let mut task = Frozen {
        pid,
        tracee: Some(tracee),
        scratch: None,
    };
    let written = Written::new(&dir);
    let result = collect_and_write(&mut task, opts, &dir);
    match result {
        Ok(report) => {
            let tracee = task.finish()?;
            if opts.leave_running {
                tracee.release()?;
            } else {
                tracee.kill_nowait();
            }
            crate::info!("dump of pid {pid} done: {} pages", report.pages);
            Ok(report)
        }
        Err(e) => {
            crate::error!("dump of pid {pid} failed: {e}");
            written.remove();
            if let Ok(t) = task.finish() {
                let _ = t.release();
            }
            Err(e)
        }
    }
}

/// The frozen task and the scratch page crust mapped in it.
struct Frozen {
    pid: i32,
    tracee: Option<Tracee>,
    scratch: Option<RemoteAddr>,
}

impl Frozen {
    fn t(&mut self) -> &mut Tracee {
        self.tracee.as_mut().expect("tracee present until finish")
    }

    fn remote(&mut self, what: &'static str, nr: i64, args: [u64; 6]) -> Result<u64, DumpError> {
        let pid = self.pid;
        self.t()
            .syscall_ok(nr, args)
            .map_err(|source| DumpError::Remote { pid, what, source })
    }

    fn scratch(&mut self) -> Result<RemoteAddr, DumpError> {
        if let Some(s) = self.scratch {
            return Ok(s);
        }
        let addr = self.remote(
            "mmap of a scratch page",
            libc::SYS_mmap,
            [
                0,
                SCRATCH_LEN,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                // Shared: it never merges with a neighbouring private mapping, so the
                // layout read beside it stays exact.
                (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )?;
        self.scratch = Some(RemoteAddr(addr));
        Ok(RemoteAddr(addr))
    }

    /// Unmaps the scratch page; the tracee is handed back for release or kill.
    fn finish(&mut self) -> Result<Tracee, DumpError> {
        if let Some(s) = self.scratch.take() {
            self.remote(
                "munmap of the scratch page",
                libc::SYS_munmap,
                [s.0, SCRATCH_LEN, 0, 0, 0, 0],
            )?;
        }
        Ok(self.tracee.take().expect("finish called once"))
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

fn collect_and_write(
    task: &mut Frozen,
    opts: &DumpOpts,
    dir: &ImageDir,
) -> Result<DumpReport, DumpError> {
    let pid = task.pid;
    if fault::hit("dump-after-seize") {
        return Err(DumpError::Fault("dump-after-seize"));
    }
    let children = proc::children(pid, pid)?;
    if !children.is_empty() {
        return Err(DumpError::Unsupported {
            pid,
            what: format!("a process with children ({children:?})"),
        });
    }
    let stat = proc::stat(pid)?;
    let status = proc::read(format!("/proc/{pid}/status"))?;
    let umask = proc::status_field(&status, "Umask")
        .and_then(|v| u32::from_str_radix(v, 8).ok())
        .unwrap_or(0o022);

    // Layout first: the scratch page must not show up in it. The VmFlags come from smaps,
    // read beside the page copy below.
    let brk = task.remote("brk(0)", libc::SYS_brk, [0; 6])?;
    let mut vmas = proc::maps(pid)?;
    for v in &vmas {
        mm::check_dumpable(pid, v)?;
    }

    crate::debug!("layout read");
    // The scratch page before smaps: mmap needs the mm lock smaps holds while it walks.
    let scratch = task.scratch()?;
    let smaps = std::thread::spawn(move || proc::smaps(pid));
    let actions = signals::dump_actions(task.t(), pid, scratch)?;
    task.remote(
        "sigaltstack",
        libc::SYS_sigaltstack,
        [0, scratch.0, 0, 0, 0, 0],
    )?;
    let mut ss = [0u8; 24];
    task.t().read_mem(scratch, &mut ss)?;
    let altstack = SigAltStack {
        ss_sp: u64::from_ne_bytes(ss[0..8].try_into().expect("8")),
        ss_flags: i32::from_ne_bytes(ss[8..12].try_into().expect("4")),
        ss_size: u64::from_ne_bytes(ss[16..24].try_into().expect("8")),
    };
    task.remote(
        "prctl(PR_GET_PDEATHSIG)",
        libc::SYS_prctl,
        [libc::PR_GET_PDEATHSIG as u64, scratch.0, 0, 0, 0, 0],
    )?;
    let mut pd = [0u8; 4];
    task.t().read_mem(scratch, &mut pd)?;
    let pdeath_signal = i32::from_ne_bytes(pd);
    let dumpable = task.remote(
        "prctl(PR_GET_DUMPABLE)",
        libc::SYS_prctl,
        [libc::PR_GET_DUMPABLE as u64, 0, 0, 0, 0, 0],
    )? != 0;
    let personality = task.remote(
        "personality",
        libc::SYS_personality,
        [0xffff_ffff, 0, 0, 0, 0, 0],
    )? as u32;

    crate::debug!("remote state read");
    let t = task.t();
    let xsave = t.get_xstate()?;
    let rseq_conf = t.rseq_configuration()?;
    let thread_pending = t.pending_signals(false)?;
    let shared_pending = t.pending_signals(true)?;
    let sigmask = t.orig_sigmask();
    let regs = regs::to_image(t.orig_regs());
    let to_siginfo = |v: Vec<[u8; parasite::SIGINFO_SIZE]>| {
        v.into_iter()
            .map(|raw| SigInfo { raw: raw.to_vec() })
            .collect::<Vec<_>>()
    };
    let core = CoreEntry {
        thread: Some(ThreadCore {
            tid: pid,
            regs: Some(regs),
            xsave,
            sigmask,
            pending: to_siginfo(thread_pending),
            rseq: (rseq_conf.rseq_abi_pointer != 0).then_some(Rseq {
                rseq_abi_pointer: rseq_conf.rseq_abi_pointer,
                rseq_abi_size: rseq_conf.rseq_abi_size,
                flags: rseq_conf.flags,
                signature: rseq_conf.signature,
            }),
            altstack: Some(altstack),
            comm: stat.comm.clone(),
            ..Default::default()
        }),
        task: Some(TaskCore {
            pending_shared: to_siginfo(shared_pending),
            personality,
            umask,
            exit_signal: stat.exit_signal,
            pdeath_signal,
            dumpable,
            comm: stat.comm.clone(),
        }),
    };

    crate::debug!("registers read");
    let mut next_id = 1;
    let fds = files::dump(pid, opts.shell_job, &mut next_id)?;
    let fs = FsEntry {
        cwd: proc::readlink(format!("/proc/{pid}/cwd"))?,
        root: proc::readlink(format!("/proc/{pid}/root"))?,
        umask,
    };
    let limits_path = PathBuf::from(format!("/proc/{pid}/limits"));
    let rlimits = proc::parse_limits(&limits_path, &proc::read(&limits_path)?)?
        .into_iter()
        .map(|(resource, cur, max)| images::pb::RlimitEntry { resource, cur, max })
        .collect::<Vec<_>>();

    // Memory contents.
    crate::debug!("collected task state");
    let runs = mm::scan(pid, &vmas)?;
    crate::debug!("scanned memory: {} runs", runs.len());
    let pagemap = mm::pagemap_entries(&runs);
    let pages_id = pid as u32;
    let pages_file = dir.create_pages(pages_id)?;
    mm::copy_pages(pid, &runs, &pages_file)?;
    drop(pages_file);
    dir.commit_pages(pages_id)?;
    crate::debug!("pages written");
    let smaps = smaps.join().expect("smaps reader panicked")?;
    mm::attach_flags(pid, &mut vmas, &smaps)?;
    let mm_entry = mm::dump_layout(pid, &stat, brk, &vmas)?;
    if fault::hit("dump-after-pages") {
        return Err(DumpError::Fault("dump-after-pages"));
    }
    let id = Some(pid as u32);
    dir.write_pagemap(pid as u32, &PagemapHead { pages_id }, &pagemap)?;
    dir.write_one(ImageKind::Mm, id, &mm_entry)?;
    dir.write_one(ImageKind::Core, id, &core)?;
    dir.write(ImageKind::Sigacts, id, &actions)?;
    dir.write(ImageKind::Fdinfo, id, &fds.fdinfo)?;
    dir.write(ImageKind::Files, None, &fds.files)?;
    dir.write(ImageKind::PipeData, None, &fds.pipes)?;
    dir.write_one(ImageKind::Fs, id, &fs)?;
    dir.write(ImageKind::Rlimits, id, &rlimits)?;
    dir.write(
        ImageKind::Pstree,
        None,
        &[PstreeEntry {
            pid,
            ppid: stat.ppid,
            pgid: stat.pgid,
            sid: stat.sid,
            threads: vec![pid],
        }],
    )?;
    if fault::hit("dump-before-inventory") {
        return Err(DumpError::Fault("dump-before-inventory"));
    }
    let pages: u64 = pagemap.iter().map(|e| e.nr_pages).sum();
    dir.write_one(
        ImageKind::Inventory,
        None,
        &InventoryEntry {
            format_version: images::FORMAT_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            kernel_release: kernel_release(),
            root_pid: pid,
            pids: vec![pid],
            dump_time_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
        },
    )?;
    Ok(DumpReport {
        pids: vec![pid],
        pages,
    })
}
