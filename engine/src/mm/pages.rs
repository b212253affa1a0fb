//! Page contents: which pages a dump saves, where they go, and where restore finds them.
//!
//! # Dump
//!
//! All pages of one dump go to one file, `pages-0.img`, shared by the whole tree, so that a
//! page is stored once however many pagemaps name it:
//!
//! - **Copy-on-write sharing across fork.** A child's private page that is still the very
//!   same physical page as its parent's at the same address (equal PFNs in
//!   `/proc/PID/pagemap`, readable by crust as root) is not stored again: the child's pagemap
//!   entry points at the parent's data. Restore recognises the equal location and lets the
//!   child inherit the page through fork (see [`super::inherit`]), so the footprint stays
//!   what it was.
//! - **Incremental dumps.** With a parent image directory and a write tracker armed in the
//!   task ([`super::track`]), a page that was not written since the parent dump and that the
//!   parent holds becomes a `PE_IN_PARENT` entry; restore reads it through the chain of
//!   parents.
//!
//! Contents are copied task by task, each task's runs in parallel (`process_vm_readv`, or
//! `/proc/PID/mem` for what the task cannot read itself, and for pages it shares with another
//! process: `process_vm_readv` pins pages, and pinning a page shared since fork makes the
//! kernel (5.19+) give the task a private copy, breaking the sharing), beside the read of its
//! smaps. A
//! pre-dump copies after the tree runs again ([`PagesOut::copy`] with `tolerant`): a page
//! changed meanwhile is caught by the tracker armed before, except the pages a child shares
//! with its parent, whose one stored copy must be taken while both are still frozen.
//!
//! # Restore
//!
//! [`TaskPages`] is a task's pagemap resolved through the parent chain to (file, offset) runs;
//! [`fill`] writes them into the task with `process_vm_writev` from a mapping of the pages
//! file, on every core.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use images::pb::{MmEntry, PagemapEntry, VmaKind};
use images::{ImageDir, PAGE_SIZE, PE_IN_PARENT, PE_PRESENT, PE_ZERO};

use crate::error::{DumpError, RestoreError};
use crate::proc::Vma;
use crate::sys::{self, mem as sysmem};

/// The id of the one pages file of a dump.
pub(crate) const TREE_PAGES_ID: u32 = 0;

const COPY_CHUNK: u64 = 4 << 20;
const FILL_CHUNK: u64 = 8 << 20;

/// Where the bytes of a copy job come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A task's memory; `readable` when the task can read it itself (else `/proc/PID/mem`).
    Task { pid: i32, readable: bool },
    /// Shmem object number `index` of the objects passed to [`PagesOut::copy`]; the address
    /// is the offset in it.
    Object { index: u32 },
}

/// `len` bytes at `addr` of `src` go to byte `off` of the pages file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Job {
    pub src: Source,
    pub addr: u64,
    pub len: u64,
    pub off: u64,
}

/// A region of a task found by `PAGEMAP_SCAN`, inside one VMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Region {
    pub start: u64,
    pub end: u64,
    /// Written since the tracker was armed (always true without a tracker).
    pub written: bool,
    pub readable: bool,
    /// Index of its VMA.
    pub vma: usize,
}

/// The pages file of a dump being written.
pub(crate) struct PagesOut {
    file: File,
    /// Next free page.
    next: u64,
}

impl PagesOut {
    pub fn create(dir: &ImageDir) -> Result<PagesOut, DumpError> {
        Ok(PagesOut {
            file: dir.create_pages(TREE_PAGES_ID)?,
            next: 0,
        })
    }

    /// Reserves `len` bytes; returns their first page.
    pub fn alloc(&mut self, len: u64) -> u64 {
        let at = self.next;
        self.next += len / PAGE_SIZE;
        at
    }

    pub fn pages(&self) -> u64 {
        self.next
    }

    /// Copies every job to its place. With `tolerant` (a pre-dump of running tasks) what
    /// cannot be read any more (unmapped, the task gone) is stored as zeroes: the tracker
    /// reports those pages as written, so the next dump stores them again.
    ///
    /// Jobs that follow each other in the file are batched: one `process_vm_readv` gathers up
    /// to [`IOV_MAX`] ranges of the task into one buffer, and one `pwrite` stores it, so that
    /// scattered single pages (an incremental dump) do not cost two system calls each.
    pub fn copy(&self, jobs: &[Job], objects: &[File], tolerant: bool) -> Result<(), DumpError> {
        self.file
            .set_len(self.next * PAGE_SIZE)
            .map_err(|source| DumpError::File {
                path: "pages image".into(),
                source,
            })?;
        let mut batches: Vec<Batch> = Vec::new();
        let mut mems: HashMap<i32, Option<File>> = HashMap::new();
        for j in jobs {
            let mut done = 0;
            while done < j.len {
                let n = (j.len - done).min(COPY_CHUNK);
                let (addr, off) = (j.addr + done, j.off + done);
                match batches.last_mut() {
                    Some(b)
                        if b.src == j.src
                            && b.off + b.len == off
                            && b.len + n <= COPY_CHUNK
                            && b.pieces.len() < IOV_MAX =>
                    {
                        b.pieces.push((addr, n));
                        b.len += n;
                    }
                    _ => batches.push(Batch {
                        src: j.src,
                        off,
                        len: n,
                        pieces: vec![(addr, n)],
                    }),
                }
                done += n;
            }
            if let Source::Task { pid, .. } = j.src {
                if let std::collections::hash_map::Entry::Vacant(e) = mems.entry(pid) {
                    let path = format!("/proc/{pid}/mem");
                    match File::open(&path) {
                        Ok(f) => {
                            e.insert(Some(f));
                        }
                        Err(_) if tolerant => {
                            e.insert(None);
                        }
                        Err(source) => {
                            return Err(DumpError::Io {
                                pid,
                                path: path.into(),
                                source,
                            })
                        }
                    }
                }
            }
        }
        let total = batches.iter().map(|b| b.len).sum();
        // Each worker's buffer holds the largest batch, not more: small tasks stay cheap.
        let buf_len = batches.iter().map(|b| b.len).max().unwrap_or(0) as usize;
        crate::par::for_each(
            &batches,
            total,
            || vec![0u8; buf_len],
            |buf, b| {
                let buf = &mut buf[..b.len as usize];
                let got = match b.src {
                    Source::Task { pid, readable } => {
                        let mut got = if readable {
                            // A failure is made up for below, range by range.
                            sysmem::process_vm_read_iov(pid, buf, &b.pieces).unwrap_or_default()
                        } else {
                            0
                        };
                        // What the task could not read itself, through /proc/PID/mem.
                        let mut at = 0usize;
                        for &(addr, len) in &b.pieces {
                            let (start, end) = (at, at + len as usize);
                            at = end;
                            if got >= end {
                                continue;
                            }
                            let from = got.max(start);
                            let mem = mems.get(&pid).and_then(|m| m.as_ref());
                            let r = match mem {
                                Some(mem) => read_fully(
                                    mem,
                                    &mut buf[from..end],
                                    addr + (from - start) as u64,
                                ),
                                None => Ok(0),
                            };
                            match r {
                                Ok(n) if from + n == end => got = end,
                                Ok(_) | Err(_) if tolerant => {
                                    buf[from..end].fill(0);
                                    got = end;
                                }
                                Ok(_) => {
                                    return Err(DumpError::Io {
                                        pid,
                                        path: format!("/proc/{pid}/mem at {addr:#x}").into(),
                                        source: std::io::Error::from_raw_os_error(libc::EFAULT),
                                    })
                                }
                                Err(source) => {
                                    return Err(DumpError::Io {
                                        pid,
                                        path: format!("/proc/{pid}/mem at {addr:#x}").into(),
                                        source,
                                    })
                                }
                            }
                        }
                        got
                    }
                    Source::Object { index } => {
                        let obj = &objects[index as usize];
                        let mut at = 0usize;
                        for &(addr, len) in &b.pieces {
                            let piece = &mut buf[at..at + len as usize];
                            let n =
                                read_fully(obj, piece, addr).map_err(|source| DumpError::File {
                                    path: format!("shmem object {} at offset {addr:#x}", index + 1)
                                        .into(),
                                    source,
                                })?;
                            // Past the end of the object: zeroes.
                            piece[n..].fill(0);
                            at += len as usize;
                        }
                        at
                    }
                };
                buf[got..].fill(0);
                self.file
                    .write_all_at(buf, b.off)
                    .map_err(|source| DumpError::File {
                        path: "pages image".into(),
                        source,
                    })
            },
        )
    }
}

/// Ranges of one source that follow each other in the pages file, copied together.
struct Batch {
    src: Source,
    /// Byte offset in the pages file.
    off: u64,
    len: u64,
    /// (address, length) in the source.
    pieces: Vec<(u64, u64)>,
}

/// Most ranges one `process_vm_readv` takes (the kernel's UIO_MAXIOV).
const IOV_MAX: usize = 1024;

/// `pread` until `buf` is full or the end; the bytes read.
fn read_fully(f: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], at + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Address ranges by VMA index.
pub(crate) type Ranges = HashMap<usize, Vec<(u64, u64)>>;

/// What [`scan`] finds in a task.
pub(crate) struct Scanned {
    pub regions: Vec<Region>,
    /// Ranges backed by transparent huge pages.
    pub huge: Ranges,
    /// Guard regions.
    pub guards: Ranges,
}

/// Scans the VMAs of `pid` whose pages the task pagemap holds. With `tracked`, regions carry
/// the tracker's written state (a VMA not registered for async write-protection counts as
/// written throughout). Returns the regions, and per VMA index the huge-page and guard ranges.
pub(crate) fn scan(pid: i32, vmas: &[Vma], tracked: bool) -> Result<Scanned, DumpError> {
    let path = PathBuf::from(format!("/proc/{pid}/pagemap"));
    let pagemap = File::open(&path).map_err(|source| DumpError::Io {
        pid,
        path: path.clone(),
        source,
    })?;
    let io = |source| DumpError::Io {
        pid,
        path: path.clone(),
        source,
    };
    let fd = pagemap.as_raw_fd();
    let mut regions = Vec::new();
    let mut huge = Ranges::new();
    let mut guards = Ranges::new();
    let mut out = Vec::new();
    for (i, v) in vmas.iter().enumerate() {
        let kind = super::vma_kind(v);
        let guard = sysmem::guard_category();
        let dumped = match kind {
            VmaKind::VmaAnonPrivate | VmaKind::VmaHeap | VmaKind::VmaStack => true,
            VmaKind::VmaFilePrivate | VmaKind::VmaShmem => !v.shared,
            _ => false,
        };
        if !dumped && guard != 0 && kind_has_guards(kind) {
            // Mappings whose pages the images do not hold: one walk for guards alone.
            out.clear();
            let s = sysmem::Scan {
                required: guard,
                report: guard,
                ..Default::default()
            };
            sysmem::scan(fd, v.start, v.end, s, &mut out).map_err(io)?;
            let g: Vec<(u64, u64)> = merge(out.iter().map(|r| (r.start, r.end)));
            if !g.is_empty() {
                guards.insert(i, g);
            }
        }
        if !dumped {
            continue;
        }
        // Guard markers come in the same walk as the pages, told apart by their category.
        let excluded = match kind {
            VmaKind::VmaFilePrivate | VmaKind::VmaShmem => sys::PAGE_IS_PFNZERO | sys::PAGE_IS_FILE,
            _ => sys::PAGE_IS_PFNZERO,
        };
        let report = sys::PAGE_IS_PRESENT
            | sysmem::PAGE_IS_WRITTEN
            | sysmem::PAGE_IS_HUGE
            | sys::PAGE_IS_SWAPPED
            | guard;
        let mut s = sysmem::Scan {
            flags: if tracked {
                sysmem::PM_SCAN_CHECK_WPASYNC
            } else {
                0
            },
            required: 0,
            excluded,
            anyof: sys::PAGE_IS_PRESENT | sys::PAGE_IS_SWAPPED | guard,
            report,
        };
        out.clear();
        let mut trust = tracked;
        if let Err(e) = sysmem::scan(fd, v.start, v.end, s, &mut out) {
            if !(tracked && e.raw_os_error() == Some(libc::EPERM)) {
                return Err(io(e));
            }
            // Not registered with an async write-protect tracker: all of it counts as written.
            trust = false;
            s.flags = 0;
            out.clear();
            sysmem::scan(fd, v.start, v.end, s, &mut out).map_err(io)?;
        }
        let mut h = Vec::new();
        let mut g = Vec::new();
        let first = regions.len();
        for r in &out {
            if r.categories & guard != 0 {
                g.push((r.start, r.end));
                continue;
            }
            if r.categories & sysmem::PAGE_IS_HUGE != 0 && r.categories & sys::PAGE_IS_PRESENT != 0
            {
                h.push((r.start, r.end));
            }
            let written = !trust || r.categories & sysmem::PAGE_IS_WRITTEN != 0;
            // Runs never cross a VMA boundary: restore checks each lies inside one mapping.
            match regions[first..].last_mut() {
                Some(Region {
                    end, written: w, ..
                }) if *end == r.start && *w == written => *end = r.end,
                _ => regions.push(Region {
                    start: r.start,
                    end: r.end,
                    written,
                    readable: v.read,
                    vma: i,
                }),
            }
        }
        let h = merge(h.into_iter());
        if !h.is_empty() {
            huge.insert(i, h);
        }
        let g = merge(g.into_iter());
        if !g.is_empty() {
            guards.insert(i, g);
        }
    }
    Ok(Scanned {
        regions,
        huge,
        guards,
    })
}

fn kind_has_guards(kind: VmaKind) -> bool {
    matches!(
        kind,
        VmaKind::VmaAnonPrivate
            | VmaKind::VmaHeap
            | VmaKind::VmaStack
            | VmaKind::VmaFilePrivate
            | VmaKind::VmaFileShared
            | VmaKind::VmaShmem
            | VmaKind::VmaAnonShared
    )
}

/// Adjacent ranges joined.
pub(crate) fn merge(it: impl Iterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in it {
        match out.last_mut() {
            Some(l) if l.1 == s => l.1 = e,
            _ => out.push((s, e)),
        }
    }
    out
}

/// Raw `/proc/PID/pagemap` words of `n` pages from `addr`.
pub(crate) fn pagemap_words(f: &File, addr: u64, n: u64) -> std::io::Result<Vec<u64>> {
    let mut raw = vec![0u8; (n * 8) as usize];
    let mut got = 0;
    while got < raw.len() {
        let r = f.read_at(&mut raw[got..], (addr / PAGE_SIZE) * 8 + got as u64)?;
        if r == 0 {
            break;
        }
        got += r;
    }
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

const PM_PRESENT: u64 = 1 << 63;
const PM_MMAP_EXCLUSIVE: u64 = 1 << 56;
const PM_PFN_MASK: u64 = (1 << 55) - 1;

/// The physical page of a pagemap word, if present and visible.
pub(crate) fn pfn(word: u64) -> Option<u64> {
    (word & PM_PRESENT != 0 && word & PM_PFN_MASK != 0).then_some(word & PM_PFN_MASK)
}

/// Whether a present page is mapped by this process only.
pub(crate) fn exclusive(word: u64) -> bool {
    word & PM_MMAP_EXCLUSIVE != 0
}

/// The entry of `entries` (sorted, non-overlapping) covering `addr`, if any.
pub(crate) fn covering(entries: &[PagemapEntry], addr: u64) -> Option<&PagemapEntry> {
    let i = entries.partition_point(|e| e.vaddr + e.nr_pages * PAGE_SIZE <= addr);
    entries
        .get(i)
        .filter(|e| e.vaddr <= addr && addr < e.vaddr + e.nr_pages * PAGE_SIZE)
}

/// Appends a one-page-or-more entry, joining it to the previous one when it continues it.
pub(crate) fn push_entry(out: &mut Vec<PagemapEntry>, vaddr: u64, nr: u64, off: u64, flags: u32) {
    push_entry_after(out, 0, vaddr, nr, off, flags)
}

/// Like [`push_entry`], never joining to entries before index `first` (another VMA's: restore
/// wants every entry inside one mapping).
pub(crate) fn push_entry_after(
    out: &mut Vec<PagemapEntry>,
    first: usize,
    vaddr: u64,
    nr: u64,
    off: u64,
    flags: u32,
) {
    let first = first.min(out.len());
    if let Some(l) = out[first..].last_mut() {
        let l_end = l.vaddr + l.nr_pages * PAGE_SIZE;
        let continues = l.flags == flags
            && l_end == vaddr
            && (flags != PE_PRESENT || l.pages_off + l.nr_pages == off);
        if continues {
            l.nr_pages += nr;
            return;
        }
    }
    out.push(PagemapEntry {
        vaddr,
        nr_pages: nr,
        pages_off: if flags == PE_PRESENT { off } else { 0 },
        flags,
    });
}

// ---------------------------------------------------------------------------------------------
// Restore

/// A run of a task's pages: `len` bytes at `vaddr` are at byte `off` of pages file `file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub vaddr: u64,
    pub len: u64,
    pub file: u32,
    pub off: u64,
}

impl Run {
    pub fn end(&self) -> u64 {
        self.vaddr + self.len
    }
}

/// A task's pages resolved through the chain of parent image directories, sorted by address.
#[derive(Debug, Clone, Default)]
pub(crate) struct TaskPages {
    pub runs: Vec<Run>,
}

impl TaskPages {
    /// The runs overlapping `[start, end)`, clipped to it.
    pub fn within(&self, start: u64, end: u64) -> impl Iterator<Item = Run> + '_ {
        let i = self.runs.partition_point(|r| r.end() <= start);
        self.runs[i..]
            .iter()
            .take_while(move |r| r.vaddr < end)
            .map(move |r| {
                let s = r.vaddr.max(start);
                let e = r.end().min(end);
                Run {
                    vaddr: s,
                    len: e - s,
                    file: r.file,
                    off: r.off + (s - r.vaddr),
                }
            })
    }
}

/// The pages files restore reads, opened once each, and mapped whole once each for the page
/// fills of every task (a mapping per run would cost an mmap and a munmap, with its TLB
/// shootdown across crust's workers, per run).
#[derive(Default)]
pub(crate) struct PageFiles {
    files: Vec<(PathBuf, File)>,
    maps: Vec<std::sync::OnceLock<sys::Mapped>>,
}

impl PageFiles {
    pub fn index(&mut self, path: &Path) -> Result<u32, RestoreError> {
        // One index per file however it is reached (the parent links): equal indexes and
        // offsets are how copy-on-write sharing is recognised.
        let path = &std::fs::canonicalize(path).map_err(|source| RestoreError::File {
            path: path.display().to_string(),
            source,
        })?;
        if let Some(i) = self.files.iter().position(|(p, _)| p == path) {
            return Ok(i as u32);
        }
        let f = File::open(path).map_err(|source| RestoreError::File {
            path: path.display().to_string(),
            source,
        })?;
        self.files.push((path.to_owned(), f));
        self.maps.push(std::sync::OnceLock::new());
        Ok(self.files.len() as u32 - 1)
    }

    pub fn get(&self, i: u32) -> (&Path, &File) {
        let (p, f) = &self.files[i as usize];
        (p, f)
    }

    /// `len` bytes at `off` of file `i`, through its whole-file mapping (made on first use).
    fn bytes(&self, i: u32, off: u64, len: u64) -> Result<&[u8], RestoreError> {
        let (path, file) = self.get(i);
        let err = |source| RestoreError::File {
            path: format!("{} at offset {off}", path.display()),
            source,
        };
        let map = match self.maps[i as usize].get() {
            Some(m) => m,
            None => {
                let size = file.metadata().map_err(err)?.len();
                let m = sys::Mapped::whole(file.as_raw_fd(), size as usize).map_err(err)?;
                // Another worker may have mapped it meanwhile: either mapping serves.
                let _ = self.maps[i as usize].set(m);
                self.maps[i as usize].get().expect("just set")
            }
        };
        let data = map.as_slice();
        let end = off.checked_add(len).filter(|&e| e <= data.len() as u64);
        match end {
            Some(end) => Ok(&data[off as usize..end as usize]),
            None => Err(err(std::io::Error::from_raw_os_error(libc::EOVERFLOW))),
        }
    }
}

/// How deep a chain of parent image directories may go.
const MAX_CHAIN: usize = 64;

/// Resolves `[vaddr, end)` of `pid` in `dir`'s pagemap (`PE_IN_PARENT` runs in its parent,
/// recursively) and appends the runs with data.
struct Resolver<'a> {
    files: &'a mut PageFiles,
    pid: i32,
    /// Each pagemap read once: its pages file and entries.
    cache: HashMap<PathBuf, (u32, Vec<PagemapEntry>)>,
    out: Vec<Run>,
}

impl Resolver<'_> {
    fn resolve(
        &mut self,
        dir: &ImageDir,
        start: u64,
        end: u64,
        depth: usize,
    ) -> Result<(), RestoreError> {
        let pid = self.pid;
        let pm_path = dir.file_path(images::ImageKind::Pagemap, Some(pid as u32));
        if depth > MAX_CHAIN {
            return Err(RestoreError::BadImage {
                image: pm_path,
                what: format!("more than {MAX_CHAIN} parent image directories"),
            });
        }
        if !self.cache.contains_key(&pm_path) {
            let (head, entries) = dir.read_pagemap(pid as u32)?;
            let pages = dir.pages_path(head.pages_id);
            let file = if entries.iter().any(|e| e.flags == PE_PRESENT) {
                self.files.index(&pages)?
            } else {
                u32::MAX
            };
            self.cache.insert(pm_path.clone(), (file, entries));
        }
        let (file, entries) = self.cache[&pm_path].clone();
        let mut cur = start;
        let i = entries.partition_point(|e| e.vaddr + e.nr_pages * PAGE_SIZE <= start);
        for e in &entries[i..] {
            if cur >= end {
                break;
            }
            let e_end = e.vaddr + e.nr_pages * PAGE_SIZE;
            if e.vaddr > cur {
                break;
            }
            let s = cur;
            let t = e_end.min(end);
            match e.flags {
                PE_PRESENT => self.out.push(Run {
                    vaddr: s,
                    len: t - s,
                    file,
                    off: e.pages_off * PAGE_SIZE + (s - e.vaddr),
                }),
                PE_ZERO => {}
                PE_IN_PARENT => {
                    let parent = dir.parent()?.ok_or_else(|| RestoreError::BadImage {
                        image: pm_path.clone(),
                        what: format!(
                            "pages at {s:#x} are in the parent images, but there is no {}",
                            images::PARENT_LINK
                        ),
                    })?;
                    self.resolve(&parent, s, t, depth + 1)?;
                }
                _ => unreachable!("read_pagemap checks the flags"),
            }
            cur = t;
        }
        if cur < end {
            return Err(RestoreError::BadImage {
                image: pm_path,
                what: format!("pages at {cur:#x}-{end:#x} are missing from this incremental image"),
            });
        }
        Ok(())
    }
}

/// Reads the pagemap of `pid`, follows `PE_IN_PARENT` runs through the parents, and checks
/// that every run lies inside one mapping that takes saved pages.
pub(crate) fn load(
    files: &mut PageFiles,
    dir: &ImageDir,
    pid: i32,
    mm: &MmEntry,
) -> Result<TaskPages, RestoreError> {
    let (_, entries) = dir.read_pagemap(pid as u32)?;
    let pm_path = dir.file_path(images::ImageKind::Pagemap, Some(pid as u32));
    let mut r = Resolver {
        files,
        pid,
        cache: HashMap::new(),
        out: Vec::new(),
    };
    for e in &entries {
        let end = e.vaddr + e.nr_pages * PAGE_SIZE;
        let ok = mm.vmas.iter().any(|v| {
            v.start <= e.vaddr
                && end <= v.end
                && (matches!(
                    v.kind(),
                    VmaKind::VmaAnonPrivate
                        | VmaKind::VmaFilePrivate
                        | VmaKind::VmaStack
                        | VmaKind::VmaHeap
                ) || (v.kind() == VmaKind::VmaShmem && v.flags & libc::MAP_SHARED as u32 == 0))
        });
        if !ok {
            return Err(RestoreError::BadImage {
                image: pm_path,
                what: format!("pages at {:#x}-{end:#x} lie outside any mapping", e.vaddr),
            });
        }
        r.resolve(dir, e.vaddr, end, 0)?;
    }
    let runs = r.out;
    // Join runs continuing each other in one file.
    let mut joined: Vec<Run> = Vec::with_capacity(runs.len());
    for r in runs {
        match joined.last_mut() {
            Some(l) if l.file == r.file && l.end() == r.vaddr && l.off + l.len == r.off => {
                l.len += r.len
            }
            _ => joined.push(r),
        }
    }
    Ok(TaskPages { runs: joined })
}

/// Fills the task's pages from the pages files: crust maps each piece and copies it into the
/// task with `process_vm_writev` from several threads, so the first touch of the restored
/// memory (page allocation, the dominant cost) runs on every core at once.
pub(crate) fn fill(
    pid: i32,
    files: &PageFiles,
    runs: impl Iterator<Item = Run>,
) -> Result<(), RestoreError> {
    let mut chunks = Vec::new();
    for r in runs {
        let mut done = 0;
        while done < r.len {
            let n = (r.len - done).min(FILL_CHUNK);
            chunks.push(Run {
                vaddr: r.vaddr + done,
                len: n,
                file: r.file,
                off: r.off + done,
            });
            done += n;
        }
    }
    let total = chunks.iter().map(|c| c.len).sum();
    crate::par::for_each(
        &chunks,
        total,
        || (),
        |_, r| {
            let data = files.bytes(r.file, r.off, r.len)?;
            let mut done = 0;
            while done < data.len() {
                let at = r.vaddr + done as u64;
                let n = sys::process_vm_write(pid, at, &data[done..]).map_err(|source| {
                    RestoreError::Layout {
                        pid,
                        what: format!("writing pages at {at:#x}: {source}"),
                    }
                })?;
                if n == 0 {
                    return Err(RestoreError::Layout {
                        pid,
                        what: format!("no progress writing pages at {at:#x}"),
                    });
                }
                done += n;
            }
            Ok(())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(vaddr: u64, nr: u64, off: u64, flags: u32) -> PagemapEntry {
        PagemapEntry {
            vaddr,
            nr_pages: nr,
            pages_off: off,
            flags,
        }
    }

    #[test]
    fn entries_join_only_when_contiguous_in_memory_and_file() {
        let mut v = Vec::new();
        push_entry(&mut v, 0x1000, 1, 0, PE_PRESENT);
        push_entry(&mut v, 0x2000, 2, 1, PE_PRESENT);
        push_entry(&mut v, 0x4000, 1, 7, PE_PRESENT);
        push_entry(&mut v, 0x5000, 1, 0, PE_IN_PARENT);
        push_entry(&mut v, 0x6000, 1, 0, PE_IN_PARENT);
        assert_eq!(
            v,
            vec![
                e(0x1000, 3, 0, PE_PRESENT),
                e(0x4000, 1, 7, PE_PRESENT),
                e(0x5000, 2, 0, PE_IN_PARENT)
            ]
        );
        assert_eq!(covering(&v, 0x3fff).map(|x| x.vaddr), Some(0x1000));
        assert_eq!(covering(&v, 0x4000).map(|x| x.vaddr), Some(0x4000));
        assert_eq!(covering(&v, 0x7000), None);
        assert_eq!(covering(&v, 0x0), None);
    }

    fn write_dir(path: &Path, pid: u32, entries: &[PagemapEntry], pages: u64) -> ImageDir {
        let dir = ImageDir::create(path).unwrap();
        let f = dir.create_pages(TREE_PAGES_ID).unwrap();
        f.set_len(pages * PAGE_SIZE).unwrap();
        drop(f);
        dir.commit_pages(TREE_PAGES_ID).unwrap();
        dir.write_pagemap(
            pid,
            &images::PagemapHead {
                pages_id: TREE_PAGES_ID,
            },
            entries,
        )
        .unwrap();
        dir.commit_sections().unwrap();
        dir
    }

    fn mm_with(start: u64, end: u64) -> MmEntry {
        MmEntry {
            vmas: vec![images::pb::VmaEntry {
                start,
                end,
                prot: 3,
                flags: (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u32,
                kind: VmaKind::VmaAnonPrivate as i32,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn in_parent_runs_resolve_through_the_chain() {
        let tmp = tempfile::tempdir().unwrap();
        let p1 = tmp.path().join("pre-1");
        let p2 = tmp.path().join("pre-2");
        let d = tmp.path().join("dump");
        write_dir(&p1, 7, &[e(0x10000, 4, 0, PE_PRESENT)], 4);
        write_dir(
            &p2,
            7,
            &[e(0x10000, 1, 0, PE_PRESENT), e(0x11000, 3, 0, PE_IN_PARENT)],
            1,
        );
        std::os::unix::fs::symlink("../pre-1", p2.join("parent")).unwrap();
        let dir = write_dir(
            &d,
            7,
            &[
                e(0x10000, 2, 0, PE_IN_PARENT),
                e(0x12000, 1, 0, PE_PRESENT),
                e(0x13000, 1, 0, PE_ZERO),
            ],
            1,
        );
        std::os::unix::fs::symlink("../pre-2", d.join("parent")).unwrap();
        let mut files = PageFiles::default();
        let pages = load(&mut files, &dir, 7, &mm_with(0x10000, 0x20000)).unwrap();
        let name = |r: &Run| {
            files
                .get(r.file)
                .0
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        };
        let got: Vec<(u64, u64, String, u64)> = pages
            .runs
            .iter()
            .map(|r| (r.vaddr, r.len, name(r), r.off))
            .collect();
        assert_eq!(
            got,
            vec![
                (0x10000, 0x1000, "pre-2".into(), 0),
                (0x11000, 0x1000, "pre-1".into(), 0x1000),
                (0x12000, 0x1000, "dump".into(), 0),
            ]
        );
        let clipped: Vec<Run> = pages.within(0x10800, 0x11800).collect();
        assert_eq!(clipped.len(), 2);
        assert_eq!((clipped[0].vaddr, clipped[0].len), (0x10800, 0x800));
        assert_eq!((clipped[1].off, clipped[1].len), (0x1000, 0x800));
    }

    #[test]
    fn a_parent_without_the_pages_is_a_bad_image() {
        let tmp = tempfile::tempdir().unwrap();
        let p1 = tmp.path().join("pre-1");
        let d = tmp.path().join("dump");
        write_dir(&p1, 7, &[e(0x10000, 1, 0, PE_PRESENT)], 1);
        let dir = write_dir(&d, 7, &[e(0x10000, 2, 0, PE_IN_PARENT)], 0);
        let mut files = PageFiles::default();
        // No parent link at all.
        let err = load(&mut files, &dir, 7, &mm_with(0x10000, 0x20000)).unwrap_err();
        assert!(matches!(err, RestoreError::BadImage { .. }), "{err}");
        std::os::unix::fs::symlink("../pre-1", d.join("parent")).unwrap();
        let err = load(&mut files, &dir, 7, &mm_with(0x10000, 0x20000)).unwrap_err();
        assert!(
            matches!(&err, RestoreError::BadImage { what, .. } if what.contains("0x11000")),
            "{err}"
        );
        // Outside every mapping.
        let err = load(&mut files, &dir, 7, &mm_with(0x30000, 0x40000)).unwrap_err();
        assert!(
            matches!(&err, RestoreError::BadImage { what, .. } if what.contains("outside")),
            "{err}"
        );
    }
}
