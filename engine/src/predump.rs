//! `crust pre-dump`: copy a tree's memory while it keeps running, so that the final dump has
//! only the pages written since to save, and the tree is frozen that much shorter.
//!
//! The tree is frozen only to read each task's layout, find its pages, and arm write tracking
//! ([`crate::mm::track`]: an async write-protect userfaultfd, Linux 6.7), then it runs again
//! while the pages are copied. A page written after the tracking was armed is reported as
//! written by the next dump (or pre-dump) and stored again there, so a copy taken while the
//! task changes it is never used. Only pages shared with a child since fork are copied
//! frozen: one stored copy stands for both, and it must be the one they share.
//!
//! A pre-dump directory holds `mm.img` (each process's layout and tracker's descriptor),
//! `pagemap.img` and `pages-0.img`; without an inventory it is not a dump anyone could
//! restore. Chain them with `--prev-images-dir`; the final `crust dump --prev-images-dir`
//! stores pages unchanged since as `PE_IN_PARENT` and restore reads them through the chain.

use std::path::PathBuf;

use images::ImageDir;

use crate::dump::{DumpReport, Tree};
use crate::error::DumpError;
use crate::{mm, proc};

/// Options of one pre-dump, as `crust pre-dump` takes them.
#[derive(Debug, Clone, Default)]
pub struct PreDumpOpts {
    pub pid: i32,
    pub images_dir: PathBuf,
    /// The previous pre-dump (`--prev-images-dir`, relative to the images directory).
    pub prev_images_dir: Option<PathBuf>,
}

/// Pre-dumps the tree rooted at `opts.pid` into `opts.images_dir` and leaves it running with
/// write tracking armed.
pub fn pre_dump(opts: &PreDumpOpts) -> Result<DumpReport, DumpError> {
    let pid = opts.pid;
    crate::dump::check_pid(pid)?;
    let dir = ImageDir::create(&opts.images_dir)?;
    crate::info!(
        "pre-dumping the tree of pid {pid} into {}",
        opts.images_dir.display()
    );
    // While the tree still runs: the mapping flags of its large processes (mm::flags).
    let flags = mm::flags::FlagsAhead::read(&mm::inherit::running_tree(pid), crate::dump::LARGE_MM);
    let frozen_at = std::time::Instant::now();
    let mut tree = crate::dump::freeze_tree(pid)?;
    let mem = match frozen_part(&mut tree, opts, &dir, flags.as_ref()) {
        Ok(m) => m,
        Err(e) => {
            crate::error!("pre-dump of pid {pid} failed: {e}");
            tree.release_all();
            remove_images(&dir);
            return Err(e);
        }
    };
    let pids: Vec<i32> = tree.procs.iter().map(|p| p.pid).collect();
    tree.finish(true)?;
    crate::info!(
        "pre-dump of pid {pid}: tree frozen for {:.1} ms",
        frozen_at.elapsed().as_secs_f64() * 1e3
    );
    // The rest while the tree runs.
    let pages = mem
        .finish()
        .and_then(|pages| Ok(dir.commit_sections().map(|()| pages)?))
        .inspect_err(|_| remove_images(&dir))?;
    crate::info!("pre-dump of pid {pid} done: {pages} pages");
    Ok(DumpReport { pids, pages })
}

/// Everything done while the tree is frozen.
fn frozen_part(
    tree: &mut Tree,
    opts: &PreDumpOpts,
    dir: &ImageDir,
    flags: Option<&mm::flags::FlagsAhead>,
) -> Result<mm::DumpMem, DumpError> {
    let mut mem = mm::DumpMem::new(
        dir,
        mm::MemOpts {
            prev: opts.prev_images_dir.clone(),
            track: true,
            pre_dump: true,
            leave_running: true,
        },
        None,
    )?;
    let live: Vec<i32> = tree
        .procs
        .iter()
        .filter(|p| !p.threads.is_empty())
        .map(|p| p.pid)
        .collect();
    mem.take_back(&live);
    // System V shared memory of the IPC namespace the tree owns, attached or not (ipc).
    if crate::ipc::owns_ipc_ns(opts.pid) {
        crate::ipc::dump_shm(opts.pid, dir, mem.shmem_mut())?;
    }
    for p in tree.procs.iter_mut().filter(|p| !p.threads.is_empty()) {
        // Read through a live thread when the leader has exited (as dump does).
        let pid = p.view();
        let brk = p.remote("brk(0)", libc::SYS_brk, [0; 6])?;
        let mut vmas = proc::maps(pid)?;
        for v in &vmas {
            mm::check_dumpable(pid, v)?;
        }
        let pagemap = mem.dump_pages(pid, p.stat.ppid, &vmas, None, || {})?;
        let smaps = match flags.and_then(|f| f.frozen(p.pid, pid, &vmas)) {
            Some(known) => known,
            None => proc::smaps(pid)?,
        };
        mm::attach_flags(pid, &mut vmas, &smaps)?;
        let scratch = p.scratch()?;
        let mut mm_entry = mem.layout(pid, &p.stat, brk, &vmas)?;
        mm_entry.track = mem.arm(pid, &mut p.threads[0], scratch, &vmas);
        crate::dump::write_mm(dir, p.pid, &pagemap, &mm_entry)?;
    }
    mem.copy_shared_now()?;
    Ok(mem)
}

/// Removes what a failed pre-dump wrote.
fn remove_images(dir: &ImageDir) {
    let Ok(rd) = std::fs::read_dir(dir.path()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".img") || name.ends_with(".img.tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
