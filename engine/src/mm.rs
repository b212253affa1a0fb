//! Memory: the VMA list, mm fields and page contents, both directions.
//!
//! - [`pages`]: which pages a dump stores (`PAGEMAP_SCAN`, Linux 6.7: present or swapped, not
//!   the shared zero page, not guard markers, for private file mappings only the pages copied
//!   on write), one pages file per dump, copy-on-write sharing with the parent stored once,
//!   incremental dumps against a parent image directory; restore-side resolution of the
//!   parent chain and the parallel fill.
//! - [`shmem`]: shared anonymous memory, memfds and unlinked tmpfs files behind mappings,
//!   saved once per object and created once at restore.
//! - [`inherit`]: copy-on-write sharing restored through fork.
//! - [`track`]: write tracking with an async write-protect userfaultfd, for pre-dumps.
//! - [`vdso`]: the vDSO a restore relies on must be the dumped one.
//!
//! This file holds what ties them together: the kinds of VMA, the mm image of a task
//! ([`DumpMem`] for a dump, [`RestoreMem`] for a restore), and the rebuilding of a task's
//! address space with remote syscalls ([`restore`]): the child's own layout unmapped, the
//! vDSO moved to its saved place, every saved VMA mapped (an anonymous VMA that was moved by
//! `mremap` is mapped at its origin first and moved, so its page offset is the saved one),
//! filled, advised (huge pages, fork behaviour, guard regions, collapse back into huge pages),
//! protected and locked.

pub(crate) mod flags;
pub(crate) mod inherit;
pub(crate) mod pages;
pub(crate) mod shmem;
pub(crate) mod track;
pub(crate) mod vdso;

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use images::pb::{AddrRange, FileId, MmEntry, PagemapEntry, VmaEntry, VmaKind};
use images::{ImageDir, ImageKind, PAGE_SIZE, PE_IN_PARENT, PE_PRESENT};
use parasite::{RemoteAddr, Tracee};

use crate::error::{DumpError, RestoreError};
use crate::proc::{self, Stat, Vma};
use crate::remote::Queue;

pub(crate) use inherit::{PlanTask, Premap};
pub(crate) use pages::{PageFiles, TaskPages, TREE_PAGES_ID};

/// `mmap` type of a droppable mapping (Linux 6.11): its pages may be freed under pressure.
const MAP_DROPPABLE: u32 = 0x08;
const MADV_GUARD_INSTALL: u64 = 102;
const MLOCK_ONFAULT: u64 = 1;
const MADV_POPULATE_WRITE: u64 = 23;

pub(crate) fn vma_kind(v: &Vma) -> VmaKind {
    match v.name.as_str() {
        "[vdso]" => VmaKind::VmaVdso,
        "[vvar]" => VmaKind::VmaVvar,
        "[vvar_vclock]" => VmaKind::VmaVvarVclock,
        "[vsyscall]" => VmaKind::VmaVsyscall,
        "[heap]" => VmaKind::VmaHeap,
        "[stack]" => VmaKind::VmaStack,
        _ => {
            if let Some(k) = shmem::kind_of(v) {
                k
            } else if v.ino != 0 && v.shared {
                VmaKind::VmaFileShared
            } else if v.ino != 0 {
                VmaKind::VmaFilePrivate
            } else if v.shared {
                VmaKind::VmaAnonShared
            } else {
                VmaKind::VmaAnonPrivate
            }
        }
    }
}

fn mmap_flags(v: &Vma, kind: VmaKind) -> u32 {
    let mut f = if v.shared {
        libc::MAP_SHARED as u32
    } else if v.has_flag("dp") {
        MAP_DROPPABLE
    } else {
        libc::MAP_PRIVATE as u32
    };
    if matches!(
        kind,
        VmaKind::VmaAnonPrivate | VmaKind::VmaHeap | VmaKind::VmaStack
    ) {
        f |= libc::MAP_ANONYMOUS as u32;
    }
    if v.has_flag("gd") {
        f |= libc::MAP_GROWSDOWN as u32;
    }
    if v.has_flag("nr") {
        f |= libc::MAP_NORESERVE as u32;
    }
    f
}

/// Identity of a mapped or opened file, taken through the task's own reference to it.
pub(crate) fn file_id(path: &str, through: &str) -> std::io::Result<FileId> {
    let md = std::fs::metadata(through)?;
    Ok(FileId {
        path: path.to_string(),
        dev: md.dev(),
        ino: md.ino(),
        size: md.size(),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        // Read for executables only (files::elf::build_id_at).
        build_id: Vec::new(),
    })
}

/// Attaches the VmFlags read from smaps to the VMAs read from maps. smaps walks every page
/// table entry to count RSS (tens of milliseconds for a GiB), so it is read on a separate
/// thread while pages are copied; maps gives the layout at once.
pub(crate) fn attach_flags(pid: i32, vmas: &mut [Vma], smaps: &[Vma]) -> Result<(), DumpError> {
    for v in vmas.iter_mut() {
        let s = smaps
            .iter()
            .find(|s| s.start == v.start && s.end == v.end)
            .ok_or_else(|| DumpError::UnsupportedVma {
                pid,
                start: v.start,
                end: v.end,
                name: v.name.clone(),
                why: "the mapping changed while the task was frozen",
            })?;
        v.vm_flags = s.vm_flags.clone();
        v.anon_huge_kb = s.anon_huge_kb;
    }
    Ok(())
}

/// Refuses, before any work is done, mappings this engine cannot restore.
pub(crate) fn check_dumpable(pid: i32, v: &Vma) -> Result<(), DumpError> {
    let unsupported = |why| DumpError::UnsupportedVma {
        pid,
        start: v.start,
        end: v.end,
        name: v.name.clone(),
        why,
    };
    if let Some(why) = shmem::refuse(pid, v) {
        return Err(unsupported(why));
    }
    match vma_kind(v) {
        VmaKind::VmaFilePrivate | VmaKind::VmaFileShared if v.name.ends_with(" (deleted)") => {
            Err(unsupported("the mapped file is deleted"))
        }
        VmaKind::VmaFilePrivate | VmaKind::VmaFileShared if !v.name.starts_with('/') => {
            Err(unsupported("mapping of an unnamed file"))
        }
        VmaKind::VmaAnonShared if v.ino == 0 => Err(unsupported("shared memory of no object")),
        _ => Ok(()),
    }
}

fn ranges(v: Option<&Vec<(u64, u64)>>) -> Vec<AddrRange> {
    v.map(|r| {
        r.iter()
            .map(|&(start, end)| AddrRange { start, end })
            .collect()
    })
    .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Dump

/// How the memory of a dump is taken.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemOpts {
    /// The parent image directory (`--prev-images-dir`), relative to the images directory.
    pub prev: Option<PathBuf>,
    /// Arm write tracking in the tasks, for a later incremental dump (`--track-mem` with
    /// `--leave-running`, and every pre-dump).
    pub track: bool,
    /// A pre-dump: memory only, most of it copied after the tree runs again.
    pub pre_dump: bool,
    /// The tree runs on after the dump (a pre-dump, `--leave-running`); else it is killed.
    pub leave_running: bool,
}

/// Huge-page and guard ranges of one task, by VMA index.
#[derive(Default)]
struct ScanInfo {
    huge: pages::Ranges,
    guards: pages::Ranges,
}

/// The memory side of one dump of a tree: the pages file, the shmem objects, the trackers.
pub(crate) struct DumpMem {
    dir: ImageDir,
    out: pages::PagesOut,
    prev: Option<ImageDir>,
    /// The parent link this dump made (removed again unless the dump completes).
    link: Option<PathBuf>,
    opts: MemOpts,
    /// This dump's pagemap of every process done, for its children.
    done: HashMap<i32, Vec<PagemapEntry>>,
    /// Pages of the pages file that several tasks point at (page ranges).
    shared_slots: Vec<(u32, u64, u64)>,
    jobs: Vec<pages::Job>,
    shmem: shmem::ShmemDump,
    /// Trackers of the previous dump, taken back: they still protect the unchanged pages.
    old: HashMap<i32, OwnedFd>,
    /// Trackers armed by this dump, for its keeper.
    new: Vec<(i32, OwnedFd)>,
    /// Trackers of the previous dump no longer needed (see [`track::retire`]).
    retired: Vec<(i32, OwnedFd)>,
    keeper: String,
    scans: HashMap<i32, ScanInfo>,
    /// Identity of each mapped file met so far, by what maps shows of it (device, inode,
    /// path): the tasks of a tree map the same libraries, looked up once per dump.
    files: HashMap<((u32, u32), u64, String), FileId>,
    /// `/proc/PID/pagemap` of the task being dumped when it has children.
    pagemap: Option<File>,
    /// The children of each parent met, by pid.
    children: HashMap<i32, Vec<i32>>,
    finished: bool,
}

impl DumpMem {
    /// `room`: part 0 of the pages, made ahead ([`pages::Room`]).
    pub fn new(
        dir: &ImageDir,
        opts: MemOpts,
        room: Option<pages::Room>,
    ) -> Result<DumpMem, DumpError> {
        let mut link = None;
        let prev = match &opts.prev {
            None => None,
            Some(p) => {
                // Relative to the images directory, like the link that will name it.
                let target = dir.path().join(p);
                match std::fs::metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        return Err(DumpError::Image(images::ImageError::NotADirectory {
                            path: target,
                        }))
                    }
                    Err(source) => {
                        return Err(DumpError::File {
                            path: target,
                            source,
                        })
                    }
                }
                let at = dir.path().join(images::PARENT_LINK);
                let io = |source| DumpError::File {
                    path: at.clone(),
                    source,
                };
                match std::fs::symlink_metadata(&at) {
                    Ok(_) => std::fs::remove_file(&at).map_err(io)?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(e)),
                }
                std::os::unix::fs::symlink(p, &at).map_err(io)?;
                link = Some(at);
                let parent = dir.parent()?;
                if let Some(pd) = &parent {
                    // Anything but a directory of images is refused now, not at restore.
                    std::fs::read_dir(pd.path()).map_err(|source| DumpError::File {
                        path: pd.path().to_owned(),
                        source,
                    })?;
                }
                parent
            }
        };
        // Shmem objects the parent saved keep their ids; only changed pages are stored.
        let shmem = shmem::ShmemDump::new(prev.as_ref());
        Ok(DumpMem {
            dir: dir.clone(),
            out: pages::PagesOut::create(dir, room)?,
            prev,
            link,
            opts,
            done: HashMap::new(),
            shared_slots: Vec::new(),
            jobs: Vec::new(),
            shmem,
            old: HashMap::new(),
            new: Vec::new(),
            retired: Vec::new(),
            keeper: track::keeper_name(),
            scans: HashMap::new(),
            files: HashMap::new(),
            pagemap: None,
            children: HashMap::new(),
            finished: false,
        })
    }

    /// The shmem objects of the dump, for the System V segments ([`crate::ipc`]).
    pub fn shmem_mut(&mut self) -> &mut shmem::ShmemDump {
        &mut self.shmem
    }

    /// A dump that kills the tree when it succeeds: trackers are only borrowed from the
    /// previous dump's keeper (a dump that fails leaves the tree running, still tracked by
    /// it), and none are armed for a dump after this one.
    fn kills(&self) -> bool {
        !self.opts.pre_dump && !self.opts.leave_running
    }

    /// Takes back the write trackers the previous dump left with its keeper, so that pages
    /// unchanged since it need not be stored again. `pids`: the tree, frozen.
    pub fn take_back(&mut self, pids: &[i32]) {
        let Some(prev) = &self.prev else { return };
        let name = pids.iter().find_map(|&pid| {
            if !prev.exists(ImageKind::Mm, Some(pid as u32)) {
                return None;
            }
            prev.read_one::<MmEntry>(ImageKind::Mm, Some(pid as u32))
                .ok()
                .and_then(|m| m.track)
        });
        if let Some(name) = name {
            self.old = track::take_back(&name, self.kills()).into_iter().collect();
        }
    }

    /// Finds the pages of a frozen task to save and returns its pagemap. A dump copies them at
    /// once; a pre-dump plans their copy for [`DumpMem::finish`], after the tree runs again.
    ///
    /// `task`: a stopped thread of the task and its scratch area, through which the task
    /// writes the scattered runs of an incremental dump itself
    /// ([`pages::PagesOut::copy_in_task`]). `copying` runs once the page tables are walked,
    /// before the copy is planned and made (in a dump; never in a pre-dump).
    pub fn dump_pages(
        &mut self,
        pid: i32,
        ppid: i32,
        vmas: &[Vma],
        task: Option<(&mut Tracee, RemoteAddr)>,
        copying: impl FnOnce(),
    ) -> Result<Vec<PagemapEntry>, DumpError> {
        let prev_entries = match (&self.prev, self.old.contains_key(&pid)) {
            (Some(p), true) if p.exists(ImageKind::Pagemap, Some(pid as u32)) => {
                Some(p.read_pagemap(pid as u32)?.1)
            }
            _ => None,
        };
        let tracked = prev_entries.is_some();
        let pages::Scanned {
            regions,
            huge,
            guards,
        } = pages::scan(pid, vmas, tracked)?;
        crate::debug!("pid {pid}: {} regions found", regions.len());
        if !self.opts.pre_dump {
            copying();
        }
        self.scans.insert(pid, ScanInfo { huge, guards });
        let io = |pid: i32, source| DumpError::Io {
            pid,
            path: format!("/proc/{pid}/pagemap").into(),
            source,
        };
        // The parent in this dump, then the siblings done before it, for pages still shared
        // with one of them since fork (siblings: see [`inherit`]).
        let relatives = if self.done.contains_key(&ppid) {
            // Each parent's children read once: the tree is frozen.
            let kids = self
                .children
                .entry(ppid)
                .or_insert_with(|| inherit::children_of(ppid));
            inherit::relatives(ppid, kids, |r| self.done.contains_key(&r))
        } else {
            Vec::new()
        };
        let cow = if relatives.is_empty() {
            None
        } else {
            let mine = File::open(format!("/proc/{pid}/pagemap")).map_err(|e| io(pid, e))?;
            Some((mine, relatives))
        };
        // A process with children in the tree may share pages with them.
        let has_children = !self
            .children
            .entry(pid)
            .or_insert_with(|| inherit::children_of(pid))
            .is_empty();
        self.pagemap = if has_children {
            Some(File::open(format!("/proc/{pid}/pagemap")).map_err(|e| io(pid, e))?)
        } else {
            None
        };
        // Sized once: growing these by doubling faults in fresh pages at every step.
        let written = regions.iter().filter(|r| r.written).count();
        self.jobs.reserve(written);
        let mut entries = Vec::with_capacity(regions.len());
        let mut vma = usize::MAX;
        let mut first = 0;
        let mut pieces = Vec::new();
        for r in &regions {
            if r.vma != vma {
                vma = r.vma;
                first = entries.len();
            }
            // Unchanged since the parent dump, and there: not stored again.
            pieces.clear();
            match &prev_entries {
                Some(pe) if !r.written => {
                    let mut cur = r.start;
                    while cur < r.end {
                        let e = pages::covering(pe, cur);
                        let next = match e {
                            Some(e) => (e.vaddr + e.nr_pages * PAGE_SIZE).min(r.end),
                            None => {
                                let i = pe.partition_point(|x| x.vaddr <= cur);
                                pe.get(i).map_or(r.end, |x| x.vaddr.min(r.end))
                            }
                        };
                        pieces.push((cur, next, e.is_some()));
                        cur = next;
                    }
                }
                _ => pieces.push((r.start, r.end, false)),
            }
            for &(s, e, in_parent) in &pieces {
                if in_parent {
                    let nr = (e - s) / PAGE_SIZE;
                    pages::push_entry_after(&mut entries, first, s, nr, 0, PE_IN_PARENT);
                    continue;
                }
                self.store(pid, r.readable, (s, e), first, cow.as_ref(), &mut entries)?;
            }
        }
        // Kept for the children and later siblings that may share pages with this task.
        let relatives_ahead = has_children || self.done.contains_key(&ppid);
        self.done.insert(
            pid,
            if relatives_ahead {
                entries.clone()
            } else {
                Vec::new()
            },
        );
        if !self.opts.pre_dump {
            // Now, while smaps is read beside (the tree stays frozen until the end anyway).
            let mut jobs = std::mem::take(&mut self.jobs);
            crate::debug!("pid {pid}: {} runs to copy", jobs.len());
            if let Some((t, scratch)) = task {
                jobs = self.out.copy_in_task(t, pid, scratch, jobs)?;
            }
            self.out.copy(&jobs, &[], false)?;
        }
        Ok(entries)
    }

    /// Plans `[s, e)` of `pid`: pages the parent or a sibling holds at the same physical page
    /// point at its data, the rest gets room in the pages file.
    fn store(
        &mut self,
        pid: i32,
        readable: bool,
        (s, e): (u64, u64),
        first: usize,
        cow: Option<&(File, Vec<i32>)>,
        entries: &mut Vec<PagemapEntry>,
    ) -> Result<(), DumpError> {
        let n = (e - s) / PAGE_SIZE;
        if cow.is_none() && self.pagemap.is_none() {
            // No other process of the tree can share these pages: one run to copy.
            let src = pages::Source::Task { pid, readable };
            self.out
                .place(src, (s, e - s), entries, first, &mut self.jobs);
            return Ok(());
        }
        let io = |pid: i32, source| DumpError::Io {
            pid,
            path: format!("/proc/{pid}/pagemap").into(),
            source,
        };
        // Per page: the parent's page in the pages (part, page), when shared with it.
        let mut shared: Vec<Option<(u32, u64)>> = vec![None; n as usize];
        // Per page: mapped by other processes too. Such a page is read through /proc/PID/mem:
        // process_vm_readv pins pages, and pinning a page shared since fork makes the kernel
        // give the task a copy of its own (5.19+), which would break the very sharing this
        // dump saves (and grow a task left running).
        let mut careful = vec![false; n as usize];
        let words = match (cow, &self.pagemap) {
            (Some((mine, _)), _) | (None, Some(mine)) => {
                let w = pages::pagemap_words(mine, s, n).map_err(|e| io(pid, e))?;
                for (c, &w) in careful.iter_mut().zip(&w) {
                    *c = pages::pfn(w).is_some() && !pages::exclusive(w);
                }
                w
            }
            (None, None) => Vec::new(),
        };
        // The parent first, then each sibling, while some page shared with another process is
        // not accounted for.
        for &r in cow.map_or(&[][..], |(_, rs)| &rs[..]) {
            let Some(pe) = self.done.get(&r) else {
                continue;
            };
            if !(0..n as usize).any(|i| careful[i] && shared[i].is_none()) {
                break;
            }
            let theirs = File::open(format!("/proc/{r}/pagemap")).map_err(|e| io(r, e))?;
            let pw = pages::pagemap_words(&theirs, s, n).map_err(|e| io(r, e))?;
            for i in 0..n as usize {
                if shared[i].is_some() {
                    continue;
                }
                let (Some(a), Some(b)) = (pages::pfn(words[i]), pages::pfn(pw[i])) else {
                    continue;
                };
                if a != b {
                    continue;
                }
                let addr = s + i as u64 * PAGE_SIZE;
                if let Some(pe) = pages::covering(pe, addr) {
                    if pe.flags == PE_PRESENT {
                        shared[i] = Some((pe.part, pe.pages_off + (addr - pe.vaddr) / PAGE_SIZE));
                    }
                }
            }
        }
        let mut i = 0usize;
        while i < n as usize {
            let mut j = i + 1;
            match shared[i] {
                Some((part, off)) => {
                    while j < n as usize && shared[j] == Some((part, off + (j - i) as u64)) {
                        j += 1;
                    }
                    let addr = s + i as u64 * PAGE_SIZE;
                    let nr = (j - i) as u64;
                    pages::push_entry_in(entries, first, addr, nr, (part, off), PE_PRESENT);
                    self.shared_slots.push((part, off, off + nr));
                }
                None => {
                    while j < n as usize && shared[j].is_none() && careful[j] == careful[i] {
                        j += 1;
                    }
                    let addr = s + i as u64 * PAGE_SIZE;
                    let len = (j - i) as u64 * PAGE_SIZE;
                    let src = pages::Source::Task {
                        pid,
                        readable: readable && !careful[i],
                    };
                    self.out
                        .place(src, (addr, len), entries, first, &mut self.jobs);
                }
            }
            i = j;
        }
        Ok(())
    }

    /// The mm image of `pid` from its VMAs (with VmFlags attached) and mm fields.
    pub fn layout(
        &mut self,
        pid: i32,
        stat: &Stat,
        brk: u64,
        vmas: &[Vma],
    ) -> Result<MmEntry, DumpError> {
        let info = self.scans.remove(&pid).unwrap_or_default();
        let mut entries = Vec::with_capacity(vmas.len());
        for (i, v) in vmas.iter().enumerate() {
            let kind = vma_kind(v);
            let unsupported = |why| DumpError::UnsupportedVma {
                pid,
                start: v.start,
                end: v.end,
                name: v.name.clone(),
                why,
            };
            // (Every VMA passed `check_dumpable` before the pages were copied.)
            let (file, shmem) = match kind {
                VmaKind::VmaFilePrivate | VmaKind::VmaFileShared => {
                    let key = (v.dev, v.ino, v.name.clone());
                    let id = match self.files.get(&key) {
                        Some(id) => id.clone(),
                        None => {
                            let through =
                                format!("/proc/{pid}/map_files/{:x}-{:x}", v.start, v.end);
                            let id =
                                file_id(&v.name, &through).map_err(|source| DumpError::Io {
                                    pid,
                                    path: through.into(),
                                    source,
                                })?;
                            match std::fs::metadata(&v.name) {
                                Ok(md) if md.dev() == id.dev && md.ino() == id.ino => {}
                                _ => return Err(unsupported("the path now names another file")),
                            }
                            self.files.insert(key.clone(), id.clone());
                            id
                        }
                    };
                    // The ELF build-id of executable mappings, checked at restore
                    // (files::elf); the cached identity keeps it for the next ones.
                    let mut id = id;
                    if v.exec && id.build_id.is_empty() {
                        let through = format!("/proc/{pid}/map_files/{:x}-{:x}", v.start, v.end);
                        id.build_id = crate::files::elf::build_id_at(&through);
                        if !id.build_id.is_empty() {
                            self.files.insert(key, id.clone());
                        }
                    }
                    (Some(id), None)
                }
                VmaKind::VmaAnonShared | VmaKind::VmaShmem => {
                    (None, Some(self.shmem.object(pid, v)?))
                }
                _ => (None, None),
            };
            // A System V attachment names its segment (saved by crate::ipc, or refused).
            let sysv_shmid = match kind {
                VmaKind::VmaSysvShm => Some(self.shmem.sysv_shmid(pid, v)?),
                _ => None,
            };
            entries.push(VmaEntry {
                start: v.start,
                end: v.end,
                prot: v.prot(),
                flags: mmap_flags(v, kind),
                pgoff: v.pgoff * PAGE_SIZE,
                kind: kind as i32,
                file,
                vm_flags: v.vm_flags.clone(),
                shmem,
                huge: ranges(info.huge.get(&i)),
                guards: ranges(info.guards.get(&i)),
                sysv_shmid,
            });
        }
        let auxv_raw = proc::read_bytes(format!("/proc/{pid}/auxv"))?;
        let auxv = auxv_raw
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().expect("8-byte chunk")))
            .collect();
        let exe_link = format!("/proc/{pid}/exe");
        let exe_path = proc::readlink(&exe_link)?;
        let mut exe = file_id(&exe_path, &exe_link).map_err(|source| DumpError::Io {
            pid,
            path: exe_link.clone().into(),
            source,
        })?;
        exe.build_id = crate::files::elf::build_id_at(&exe_link);
        // Every mapping of a file carries the build-id one executable mapping of it found.
        let ids: HashMap<String, Vec<u8>> = entries
            .iter()
            .filter_map(|e| e.file.as_ref())
            .filter(|f| !f.build_id.is_empty())
            .map(|f| (f.path.clone(), f.build_id.clone()))
            .collect();
        for f in entries.iter_mut().filter_map(|e| e.file.as_mut()) {
            if let Some(id) = ids.get(&f.path) {
                f.build_id.clone_from(id);
            }
        }
        Ok(MmEntry {
            start_code: stat.start_code,
            end_code: stat.end_code,
            start_data: stat.start_data,
            end_data: stat.end_data,
            start_brk: stat.start_brk,
            brk,
            start_stack: stat.start_stack,
            arg_start: stat.arg_start,
            arg_end: stat.arg_end,
            env_start: stat.env_start,
            env_end: stat.env_end,
            auxv,
            exe: Some(exe),
            vmas: entries,
            vdso: vdso::dump(pid, vmas)?,
            track: None,
        })
    }

    /// Arms write tracking in the frozen task when this dump asks for it, after its pages were
    /// scanned. Returns the name of the keeper that will hold the tracker. Tracking is best
    /// effort: a task where it cannot be armed is dumped in full next time.
    pub fn arm(
        &mut self,
        pid: i32,
        t: &mut Tracee,
        scratch: RemoteAddr,
        vmas: &[Vma],
    ) -> Option<String> {
        let old = self.old.remove(&pid);
        if (!self.opts.track && !self.opts.pre_dump) || self.kills() {
            if let Some(fd) = old {
                self.retired.push((pid, fd));
            }
            return None;
        }
        let ranges: Vec<(u64, u64)> = vmas
            .iter()
            .filter(|v| {
                let k = vma_kind(v);
                let private_pages = matches!(
                    k,
                    VmaKind::VmaAnonPrivate
                        | VmaKind::VmaHeap
                        | VmaKind::VmaStack
                        | VmaKind::VmaFilePrivate
                ) || (k == VmaKind::VmaShmem && !v.shared);
                private_pages && !v.has_flag("dp") && !v.has_flag("io") && !v.has_flag("pf")
            })
            .map(|v| (v.start, v.end))
            .collect();
        if let Some(fd) = old {
            match track::rearm(pid, &fd, &ranges) {
                Ok(()) => {
                    crate::debug!("pid {pid}: write tracking armed again");
                    self.new.push((pid, fd));
                    return Some(self.keeper.clone());
                }
                // The old one goes (the kernel lifts its protection), a new one comes.
                Err(e) => crate::debug!("pid {pid}: tracker not armed again: {e}"),
            }
        }
        match track::arm(t, pid, scratch, &ranges) {
            Ok(fd) => {
                crate::debug!("pid {pid}: write tracking armed");
                self.new.push((pid, fd));
                Some(self.keeper.clone())
            }
            Err(e) => {
                crate::warn!("pid {pid}: write tracking not armed, next dump is full: {e}");
                None
            }
        }
    }

    /// Pre-dump, before the tree runs again: copies the pages several tasks point at, which
    /// must be one consistent copy.
    pub fn copy_shared_now(&mut self) -> Result<(), DumpError> {
        let mut all = std::mem::take(&mut self.shared_slots);
        if all.is_empty() {
            return Ok(());
        }
        all.sort_unstable();
        // By part: the page ranges pointed at, joined.
        let mut by_part: HashMap<u32, Vec<(u64, u64)>> = HashMap::new();
        for (part, s, e) in all {
            by_part.entry(part).or_default().push((s, e));
        }
        let by_part: HashMap<u32, Vec<(u64, u64)>> = by_part
            .into_iter()
            .map(|(p, v)| (p, pages::merge(v.into_iter())))
            .collect();
        let mut now = Vec::new();
        let mut later = Vec::new();
        for j in std::mem::take(&mut self.jobs) {
            let Some(slots) = by_part.get(&j.part) else {
                later.push(j);
                continue;
            };
            let (a, b) = (j.off / PAGE_SIZE, (j.off + j.len) / PAGE_SIZE);
            let mut cut = vec![a, b];
            for &(s, e) in slots {
                if s < b && e > a {
                    cut.push(s.max(a));
                    cut.push(e.min(b));
                }
            }
            cut.sort_unstable();
            cut.dedup();
            for w in cut.windows(2) {
                let piece = pages::Job {
                    src: j.src,
                    addr: j.addr + (w[0] - a) * PAGE_SIZE,
                    len: (w[1] - w[0]) * PAGE_SIZE,
                    part: j.part,
                    off: w[0] * PAGE_SIZE,
                };
                if slots.iter().any(|&(s, e)| s <= w[0] && w[1] <= e) {
                    now.push(piece);
                } else {
                    later.push(piece);
                }
            }
        }
        self.out.copy(&now, &[], false)?;
        self.jobs = later;
        Ok(())
    }

    /// Copies everything planned (in a pre-dump, from tasks running again), saves the shmem
    /// objects (against the parent's copy in an incremental dump) and commits the pages file.
    /// Returns the number of pages stored.
    pub fn finish(mut self) -> Result<u64, DumpError> {
        let mut jobs = std::mem::take(&mut self.jobs);
        // Shmem objects too, in a pre-dump (copied while the tree runs): a later dump stores
        // only the pages that differ from these.
        jobs.extend(self.shmem.plan(&self.dir, &mut self.out)?);
        let objects = self.shmem.files();
        self.out.copy(&jobs, &objects, self.opts.pre_dump)?;
        let n = self.out.pages();
        self.out.commit()?;
        self.finished = true;
        track::keep(&self.keeper, &std::mem::take(&mut self.new));
        let mut retired = std::mem::take(&mut self.retired);
        retired.extend(std::mem::take(&mut self.old));
        track::retire(retired, self.kills());
        Ok(n)
    }
}

impl Drop for DumpMem {
    fn drop(&mut self) {
        if !self.finished {
            if let Some(l) = &self.link {
                let _ = std::fs::remove_file(l);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Restore

/// A remote syscall that must succeed, with the restore error naming what it was for.
pub(crate) fn rsys(
    t: &mut Tracee,
    pid: i32,
    nr: i64,
    args: [u64; 6],
    what: impl FnOnce() -> String,
) -> Result<u64, RestoreError> {
    t.syscall_ok(nr, args)
        .map_err(|source| RestoreError::Remote {
            pid,
            what: what(),
            source,
        })
}

/// Where the service descriptors of the restored task sit while crust works on it.
#[derive(Debug, Clone, Default)]
pub(crate) struct MmFds {
    /// fd of each mapped file, by path.
    pub files: Vec<(String, i32)>,
    /// fd of each shmem object, by id.
    pub shmem: Vec<(u32, i32)>,
    pub exe: i32,
    /// fd of each pages file, by index, when the task reads its pages itself.
    pub pages: Vec<(u32, i32)>,
}

/// The memory side of one restore: pages files, shmem objects, inheritance plan.
#[derive(Default)]
pub(crate) struct RestoreMem {
    pub files: PageFiles,
    shmem: HashMap<u32, OwnedFd>,
}

impl RestoreMem {
    /// Reads and checks everything memory of one task needs: its pages through the parent
    /// chain, each inside a mapping that takes them, and its vDSO against this kernel's.
    pub fn load_task(
        &mut self,
        dir: &ImageDir,
        pid: i32,
        mm: &MmEntry,
    ) -> Result<TaskPages, RestoreError> {
        vdso::check(pid, mm)?;
        let image = dir.file_path(ImageKind::Mm, Some(pid as u32));
        for v in &mm.vmas {
            let kind = v.kind();
            let object_kind = matches!(kind, VmaKind::VmaAnonShared | VmaKind::VmaShmem);
            if object_kind != v.shmem.is_some() {
                return Err(RestoreError::BadImage {
                    image,
                    what: format!("mapping {:#x}: shmem object missing or misplaced", v.start),
                });
            }
            for r in v.huge.iter().chain(&v.guards) {
                if r.start < v.start || r.end > v.end || r.start >= r.end {
                    return Err(RestoreError::BadImage {
                        image,
                        what: format!(
                            "mapping {:#x}-{:#x}: range {:#x}-{:#x} outside it",
                            v.start, v.end, r.start, r.end
                        ),
                    });
                }
            }
        }
        pages::load(&mut self.files, dir, pid, mm)
    }

    /// Creates and fills every shmem object of the tree, and plans the areas each task
    /// inherits from its parent. `tasks` is in tree order, like the result.
    /// `memfds`: the memfds the files of the tree opened, by inode at dump time; a mapping
    /// of one of them maps that very memfd.
    pub fn prepare(
        &mut self,
        dir: &ImageDir,
        tasks: &[PlanTask<'_>],
        memfds: &HashMap<u64, RawFd>,
    ) -> Result<Vec<Premap>, RestoreError> {
        let objects = tasks
            .iter()
            .filter_map(|t| t.image)
            .flat_map(|(mm, _)| mm.vmas.iter().filter_map(|v| v.shmem.as_ref()));
        self.shmem = shmem::create_all(dir, objects, memfds)?;
        inherit::plan(tasks, &self.files).map_err(|source| RestoreError::File {
            path: "shared memory for the status of inherited areas".into(),
            source,
        })
    }

    /// Crust's descriptors of the shmem objects, for the tasks to copy (after this,
    /// [`RestoreMem::shmem_fd`] finds none).
    pub fn take_shmem(&mut self) -> Vec<OwnedFd> {
        self.shmem.drain().map(|(_, fd)| fd).collect()
    }

    /// The pages files, for the take-over of every task.
    pub fn into_files(self) -> PageFiles {
        self.files
    }

    /// Crust's descriptor of shmem object `id`.
    pub fn shmem_fd(&self, id: u32) -> Option<RawFd> {
        self.shmem.get(&id).map(|f| f.as_raw_fd())
    }
}

/// Most bytes of pages a task reads itself (`pread` from the pages files, queued with the
/// calls that map its memory): one remote round trip less than crust writing them
/// ([`pages::fill`]), which takes over for more, where copying on every core pays.
pub(crate) const FILL_IN_TASK_MAX: u64 = 1 << 20;

/// Special mappings the kernel gave the restore child (`[vvar]`, `[vvar_vclock]`, `[vdso]`).
pub(crate) fn special_kind(name: &str) -> Option<VmaKind> {
    match name {
        "[vdso]" => Some(VmaKind::VmaVdso),
        "[vvar]" => Some(VmaKind::VmaVvar),
        "[vvar_vclock]" => Some(VmaKind::VmaVvarVclock),
        _ => None,
    }
}

/// What [`restore`] works from, for one task.
pub(crate) struct TaskMem<'a> {
    pub mm: &'a MmEntry,
    pub pages: &'a TaskPages,
    pub files: &'a PageFiles,
    pub fds: &'a MmFds,
    pub premap: &'a Premap,
}

/// Replaces the address space of the restore child with the saved one. Once the calls left
/// in `q` have run, the task holds every saved VMA with its final protection and contents,
/// and the trampoline.
/// `current` is the child's layout as read before the trampoline `tramp` was mapped (only its
/// special mappings and busy ranges are used, and the trampoline is kept by its range).
pub(crate) fn restore(
    t: &mut Tracee,
    pid: i32,
    m: &TaskMem<'_>,
    (tramp, current): ((u64, u64), &[Vma]),
    q: &mut Queue,
) -> Result<(), RestoreError> {
    let mm = m.mm;
    let layout = |what: String| RestoreError::Layout { pid, what };
    let placed = m.premap.placed();
    // 1. Drop everything of the child's own layout except the trampoline, the vDSO family
    // and the areas it prepared (inherited through fork).
    let mut keep: Vec<(u64, u64)> = current
        .iter()
        .filter(|v| special_kind(&v.name).is_some())
        .map(|v| (v.start, v.end))
        .collect();
    keep.push(tramp);
    keep.extend(&placed);
    keep.sort_unstable();
    let mut cursor = PAGE_SIZE;
    const TASK_SIZE: u64 = 0x7fff_ffff_f000;
    let mut holes = Vec::new();
    for &(s, e) in &keep {
        if s > cursor {
            holes.push((cursor, s));
        }
        cursor = cursor.max(e);
    }
    if cursor < TASK_SIZE {
        holes.push((cursor, TASK_SIZE));
    }
    for (s, e) in holes {
        q.push(t, pid, libc::SYS_munmap, [s, e - s, 0, 0, 0, 0], || {
            format!("munmap {s:#x}-{e:#x}")
        })?;
    }
    // 2. Move the vDSO family to its saved place. Every saved special mapping must exist here
    // with the same size: the same kernel made both (checked against the symbols at plan).
    let saved_special: Vec<&VmaEntry> = mm
        .vmas
        .iter()
        .filter(|v| {
            matches!(
                v.kind(),
                VmaKind::VmaVdso | VmaKind::VmaVvar | VmaKind::VmaVvarVclock
            )
        })
        .collect();
    let mut moves = Vec::new();
    for v in current {
        let Some(kind) = special_kind(&v.name) else {
            continue;
        };
        match saved_special.iter().find(|s| s.kind() == kind) {
            Some(s) if s.end - s.start == v.len() => moves.push((v.start, v.len(), s.start)),
            Some(s) => {
                return Err(RestoreError::Vdso {
                    pid,
                    what: format!(
                        "{} is {} bytes here but {} bytes in the image",
                        v.name,
                        v.len(),
                        s.end - s.start
                    ),
                })
            }
            None => {
                q.push(
                    t,
                    pid,
                    libc::SYS_munmap,
                    [v.start, v.len(), 0, 0, 0, 0],
                    || format!("munmap {}", v.name),
                )?;
            }
        }
    }
    // Straight to the saved places when none of them is occupied by another special mapping;
    // otherwise two passes through a free staging area, so that moves never overlap.
    let clash = moves.iter().any(|&(_, len, to)| {
        moves
            .iter()
            .any(|&(from2, len2, to2)| to2 != to && to < from2 + len2 && from2 < to + len)
    });
    if !clash {
        for &(from, len, to) in moves.iter().filter(|m| m.0 != m.2) {
            // MREMAP_FIXED: the area lands at `to` or the call fails.
            q.push(t, pid, libc::SYS_mremap, mremap_args(from, len, to), || {
                format!("mremap {from:#x} to {to:#x}")
            })?;
        }
        moves.clear();
    } else {
        // The staging area must be free: the unmapping above done.
        q.flush(t, pid)?;
    }
    let staging = find_free(mm, current, tramp, moves.iter().map(|m| m.1).sum())
        .ok_or_else(|| layout("no room to move the vDSO".into()))?;
    let mut at = staging;
    let mut staged = Vec::new();
    for &(from, len, to) in &moves {
        mremap(t, pid, from, len, at)?;
        staged.push((at, len, to));
        at += len;
    }
    for (from, len, to) in staged {
        mremap(t, pid, from, len, to)?;
    }
    // 3. Map every saved VMA, writable while it is filled.
    let mut to_protect = Vec::new();
    // First pages faulted in only to keep an area apart, with nothing of the image there.
    let mut faulted = Vec::new();
    let mut last: Option<&VmaEntry> = None;
    for v in &mm.vmas {
        let prev = last.replace(v);
        let kind = v.kind();
        let len = v.end - v.start;
        let premapped = m.premap.in_place(v.start, v.end);
        let needs_fill = !premapped && m.pages.within(v.start, v.end).next().is_some();
        let prot = if needs_fill {
            v.prot | (libc::PROT_READ | libc::PROT_WRITE) as u32
        } else {
            v.prot
        };
        match kind {
            VmaKind::VmaVdso | VmaKind::VmaVvar | VmaKind::VmaVvarVclock | VmaKind::VmaVsyscall => {
                continue
            }
            _ if premapped => {
                // Prepared read-write before the fork; only its protection is left to set.
                if v.prot != (libc::PROT_READ | libc::PROT_WRITE) as u32 {
                    to_protect.push(v);
                }
            }
            VmaKind::VmaFilePrivate | VmaKind::VmaFileShared => {
                let path = v.file.as_ref().map(|f| f.path.as_str()).unwrap_or("");
                let fd = m
                    .fds
                    .files
                    .iter()
                    .find(|(p, _)| p == path)
                    .map(|(_, fd)| *fd as u64)
                    .ok_or_else(|| layout(format!("no descriptor for mapped file {path}")))?;
                map_at(t, pid, q, v, prot, v.flags, fd, v.pgoff)?;
                if prot != v.prot {
                    to_protect.push(v);
                }
            }
            VmaKind::VmaSysvShm => {
                // shmat of the segment, recreated with its id in the task's IPC namespace,
                // once the calls queued so far have run.
                q.flush(t, pid)?;
                if shmem::attach_sysv(t, pid, mm, v)? {
                    to_protect.push(v);
                }
            }
            VmaKind::VmaAnonShared | VmaKind::VmaShmem => {
                let id = v.shmem.as_ref().map_or(0, |o| o.id);
                let fd = m
                    .fds
                    .shmem
                    .iter()
                    .find(|(i, _)| *i == id)
                    .map(|(_, fd)| *fd as u64)
                    .ok_or_else(|| layout(format!("no descriptor for shmem object {id}")))?;
                let flags = v.flags & !(libc::MAP_ANONYMOUS as u32);
                map_at(t, pid, q, v, prot, flags, fd, v.pgoff)?;
                if prot != v.prot {
                    to_protect.push(v);
                }
            }
            _ => {
                let apart = keep_apart(prev, v);
                let prot = if apart {
                    prot | (libc::PROT_READ | libc::PROT_WRITE) as u32
                } else {
                    prot
                };
                map_anon(t, pid, q, v, prot, apart)?;
                if apart
                    && m.pages
                        .within(v.start, v.start + PAGE_SIZE)
                        .next()
                        .is_none()
                {
                    faulted.push(v.start);
                }
                if prot != v.prot {
                    to_protect.push(v);
                }
            }
        }
        for (flag, advice) in [
            ("hg", libc::MADV_HUGEPAGE),
            ("nh", libc::MADV_NOHUGEPAGE),
            ("dc", libc::MADV_DONTFORK),
            ("dd", libc::MADV_DONTDUMP),
            ("wf", libc::MADV_WIPEONFORK),
            ("rr", libc::MADV_RANDOM),
            ("sr", libc::MADV_SEQUENTIAL),
            ("mg", libc::MADV_MERGEABLE),
        ] {
            if v.vm_flags.iter().any(|f| f == flag) {
                q.push(
                    t,
                    pid,
                    libc::SYS_madvise,
                    [v.start, len, advice as u64, 0, 0, 0],
                    || format!("madvise {flag} {:#x}-{:#x}", v.start, v.end),
                )?;
            }
        }
    }
    // 4. Contents, except where the task prepared them itself.
    let runs: Vec<pages::Run> = m
        .pages
        .runs
        .iter()
        .copied()
        .filter(|r| !placed.iter().any(|&(s, e)| s <= r.vaddr && r.end() <= e))
        .collect();
    let fd_of = |file: u32| m.fds.pages.iter().find(|(f, _)| *f == file).map(|p| p.1);
    if runs.iter().all(|r| fd_of(r.file).is_some()) {
        // Read by the task, after the calls that map the areas.
        for r in &runs {
            let fd = fd_of(r.file).expect("checked above") as u64;
            q.push_expect(
                t,
                pid,
                libc::SYS_pread64,
                [fd, r.vaddr, r.len, r.off, 0, 0],
                Some(r.len),
                || format!("read of pages {:#x}-{:#x}", r.vaddr, r.end()),
            )?;
        }
    } else {
        // The areas exist before they are filled.
        q.flush(t, pid)?;
        pages::fill(pid, m.files, runs.into_iter())?;
    }
    for at in faulted {
        q.push(
            t,
            pid,
            libc::SYS_madvise,
            [at, PAGE_SIZE, libc::MADV_DONTNEED as u64, 0, 0, 0],
            || format!("madvise DONTNEED {at:#x}"),
        )?;
    }
    // 5. Huge pages where there were (best effort), guard regions.
    let collapse = mm
        .vmas
        .iter()
        .any(|v| !v.huge.is_empty() && !m.premap.in_place(v.start, v.end));
    if collapse {
        // The collapse needs the pages written and the calls above done.
        q.flush(t, pid)?;
    }
    for v in &mm.vmas {
        if !v.huge.is_empty() && !m.premap.in_place(v.start, v.end) {
            for r in &v.huge {
                const MADV_COLLAPSE: u64 = 25;
                if let Err(e) = t.syscall_ok(
                    libc::SYS_madvise,
                    [r.start, r.end - r.start, MADV_COLLAPSE, 0, 0, 0],
                ) {
                    crate::debug!(
                        "pid {pid}: {:#x}-{:#x} not collapsed into huge pages: {e}",
                        r.start,
                        r.end
                    );
                }
            }
        }
    }
    for v in &mm.vmas {
        for r in &v.guards {
            q.push(
                t,
                pid,
                libc::SYS_madvise,
                [r.start, r.end - r.start, MADV_GUARD_INSTALL, 0, 0, 0],
                || format!("guard region {:#x}-{:#x}", r.start, r.end),
            )?;
        }
    }
    // 6. Final protections, then locks (which fault the whole area in).
    for v in to_protect {
        q.push(
            t,
            pid,
            libc::SYS_mprotect,
            [v.start, v.end - v.start, v.prot as u64, 0, 0, 0],
            || format!("mprotect {:#x}-{:#x}", v.start, v.end),
        )?;
    }
    for v in &mm.vmas {
        if v.vm_flags.iter().any(|f| f == "lo") {
            let flags = if v.vm_flags.iter().any(|f| f == "lf") {
                MLOCK_ONFAULT
            } else {
                0
            };
            q.push(
                t,
                pid,
                libc::SYS_mlock2,
                [v.start, v.end - v.start, flags, 0, 0, 0],
                || format!("mlock {:#x}-{:#x}", v.start, v.end),
            )?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn map_at(
    t: &mut Tracee,
    pid: i32,
    q: &mut Queue,
    v: &VmaEntry,
    prot: u32,
    flags: u32,
    fd: u64,
    off: u64,
) -> Result<(), RestoreError> {
    q.push(
        t,
        pid,
        libc::SYS_mmap,
        [
            v.start,
            v.end - v.start,
            prot as u64,
            (flags | libc::MAP_FIXED as u32) as u64,
            fd,
            off,
        ],
        || format!("mmap {:#x}-{:#x}", v.start, v.end),
    )?;
    Ok(())
}

/// Whether `v` must be kept apart from the VMA before it: both anonymous and alike in every
/// saved attribute, yet two VMAs. The kernel would merge them if `v` were mapped in place (they
/// were apart because of where `v` came from, by `mremap`, which maps do not show), so it is
/// mapped elsewhere and moved in, which gives it a page offset of its own as well.
pub(crate) fn keep_apart(prev: Option<&VmaEntry>, v: &VmaEntry) -> bool {
    let anon = |x: &VmaEntry| {
        matches!(
            x.kind(),
            VmaKind::VmaAnonPrivate | VmaKind::VmaHeap | VmaKind::VmaStack
        )
    };
    prev.is_some_and(|p| {
        p.end == v.start
            && anon(p)
            && anon(v)
            && p.prot == v.prot
            && p.flags == v.flags
            && p.vm_flags == v.vm_flags
    })
}

/// Maps an anonymous private VMA, apart from the one before it if `apart`: it is mapped
/// elsewhere, given an anon_vma by faulting its first page in (the kernel gives an unfaulted
/// area the page offset of wherever it moves, and merges it), and moved in. The caller maps
/// it read-write in that case and drops the first page again if the image has none there.
fn map_anon(
    t: &mut Tracee,
    pid: i32,
    q: &mut Queue,
    v: &VmaEntry,
    prot: u32,
    apart: bool,
) -> Result<(), RestoreError> {
    if !apart {
        return map_at(t, pid, q, v, prot, v.flags, u64::MAX, 0);
    }
    // Its place is taken first, so that the kernel does not put the one to move in there.
    map_at(t, pid, q, v, prot, v.flags, u64::MAX, 0)?;
    // The move below needs the answers.
    q.flush(t, pid)?;
    let len = v.end - v.start;
    let flags = (v.flags & !(libc::MAP_FIXED as u32)) as u64;
    let at = rsys(
        t,
        pid,
        libc::SYS_mmap,
        [0, len, prot as u64, flags, u64::MAX, 0],
        || format!("mmap of {:#x}-{:#x} to move in", v.start, v.end),
    )?;
    rsys(
        t,
        pid,
        libc::SYS_madvise,
        [at, PAGE_SIZE, MADV_POPULATE_WRITE, 0, 0, 0],
        || format!("fault in {at:#x}"),
    )?;
    crate::debug!(
        "pid {pid}: {:#x}-{:#x} moved in from {at:#x}, apart from the area before it",
        v.start,
        v.end
    );
    mremap(t, pid, at, len, v.start)
}

/// `mremap(from, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, to)`.
fn mremap_args(from: u64, len: u64, to: u64) -> [u64; 6] {
    let flags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
    [from, len, len, flags, to, 0]
}

fn mremap(t: &mut Tracee, pid: i32, from: u64, len: u64, to: u64) -> Result<(), RestoreError> {
    if from == to {
        return Ok(());
    }
    let got = rsys(t, pid, libc::SYS_mremap, mremap_args(from, len, to), || {
        format!("mremap {from:#x} to {to:#x}")
    })?;
    if got != to {
        return Err(RestoreError::Layout {
            pid,
            what: format!("mremap of {from:#x} landed at {got:#x}, not {to:#x}"),
        });
    }
    Ok(())
}

/// A free range of `len` bytes in both the saved layout and the current one.
pub(crate) fn find_free(mm: &MmEntry, current: &[Vma], tramp: (u64, u64), len: u64) -> Option<u64> {
    let mut busy: Vec<(u64, u64)> = mm.vmas.iter().map(|v| (v.start, v.end)).collect();
    busy.extend(current.iter().map(|v| (v.start, v.end)));
    busy.push(tramp);
    busy.sort_unstable();
    // Prefer low addresses: executables and libraries of 64-bit processes live high.
    let mut cand = 0x1000_0000u64;
    for (s, e) in busy {
        if e <= cand {
            continue;
        }
        if s >= cand + len {
            return Some(cand);
        }
        cand = e.max(cand);
    }
    (cand + len <= 0x7fff_ffff_f000).then_some(cand)
}

/// The open mode a mapped file needs: writable for a shared mapping that may write (`mw`).
pub(crate) fn file_needs_write(mm: &MmEntry, path: &str) -> bool {
    mm.vmas.iter().any(|v| {
        v.kind() == VmaKind::VmaFileShared
            && v.file.as_ref().is_some_and(|f| f.path == path)
            && v.vm_flags.iter().any(|f| f == "mw")
    })
}
