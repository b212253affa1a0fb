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
//! smaps. Many small runs (the written pages of an incremental dump) are written by the
//! frozen task itself, with remote `pwritev` calls on a descriptor of the pages file passed to
//! it ([`PagesOut::copy_in_task`]), into room an incremental dump allocated in that file
//! before it froze the tree ([`Room`]). What does not fit in the page cache without the kernel
//! throttling the writer goes to the disk with `O_DIRECT`. A
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

use parasite::{RemoteAddr, Tracee};

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

/// `len` bytes at `addr` of `src` go to byte `off` of part `part` of the pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Job {
    pub src: Source,
    pub addr: u64,
    pub len: u64,
    pub part: u32,
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

/// The pages of a dump being written, in parts (`PagemapEntry.part`): a file takes one
/// writer at a time (a buffered write holds its inode lock), so that large copies write a part
/// per worker at once.
pub(crate) struct PagesOut {
    dir: ImageDir,
    parts: Vec<PartOut>,
    /// Bytes of part 0 allocated before the tree was frozen ([`Room`]).
    room: u64,
}

/// One file of a [`PagesOut`].
struct PartOut {
    /// Made when a copy first writes the part (part 0 at once).
    file: Option<File>,
    /// The same file opened with `O_DIRECT` (`None`: the filesystem refuses it), once a copy
    /// is larger than what the page cache takes without throttling.
    direct: std::sync::OnceLock<Option<File>>,
    /// Next free page.
    next: u64,
}

/// Runs of at least this many bytes are spread over the parts of the pages, by [`STRIPE`].
const SPREAD_MIN: u64 = 1 << 20;
/// Pieces in which a large run is spread over the parts of the pages.
const STRIPE: u64 = COPY_CHUNK;

impl PagesOut {
    /// The pages of a dump into `dir`; part 0 is `room`'s file when room was made ahead.
    pub fn create(dir: &ImageDir, room: Option<Room>) -> Result<PagesOut, DumpError> {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 8);
        Self::with_parts(dir, n, room)
    }

    fn with_parts(dir: &ImageDir, n: usize, room: Option<Room>) -> Result<PagesOut, DumpError> {
        let mut parts: Vec<PartOut> = (0..n)
            .map(|_| PartOut {
                file: None,
                direct: std::sync::OnceLock::new(),
                next: 0,
            })
            .collect();
        let (first, room) = match room {
            Some(r) => (r.file, r.bytes),
            None => (dir.create_pages(TREE_PAGES_ID)?, 0),
        };
        parts[0].file = Some(first);
        Ok(PagesOut {
            dir: dir.clone(),
            parts,
            room,
        })
    }

    /// Reserves `len` bytes of a run of `run` bytes; returns (part, first page). Pieces of
    /// smaller runs go to part 0 (where a task writing its own scattered pages writes:
    /// [`PagesOut::copy_in_task`]), those of larger ones (cut in [`STRIPE`]s by
    /// [`PagesOut::place`]) to the part with the fewest pages so far.
    fn alloc(&mut self, run: u64, len: u64) -> (u32, u64) {
        let (i, p) = if run < SPREAD_MIN {
            (0, &mut self.parts[0])
        } else {
            self.parts
                .iter_mut()
                .enumerate()
                .min_by_key(|(i, p)| (p.next, *i))
                .expect("at least one part")
        };
        let at = p.next;
        p.next += len / PAGE_SIZE;
        (i as u32, at)
    }

    pub fn pages(&self) -> u64 {
        self.parts.iter().map(|p| p.next).sum()
    }

    /// Reserves room for the `len` bytes at `start` of `src` (an address, or an offset in a
    /// shmem object, as its pagemap counts), adds their run to `entries` (after index
    /// `first`: see [`push_entry_after`]) and plans their copy in `jobs`.
    pub fn place(
        &mut self,
        src: Source,
        (start, len): (u64, u64),
        entries: &mut Vec<PagemapEntry>,
        first: usize,
        jobs: &mut Vec<Job>,
    ) {
        let mut at = start;
        while at < start + len {
            let n = (start + len - at).min(STRIPE);
            let (part, off) = self.alloc(len, n);
            push_entry_in(entries, first, at, n / PAGE_SIZE, (part, off), PE_PRESENT);
            jobs.push(Job {
                src,
                addr: at,
                len: n,
                part,
                off: off * PAGE_SIZE,
            });
            at += n;
        }
    }

    /// Gives every part written its final name, after giving back the room made ahead
    /// that the dump did not use.
    pub fn commit(&self) -> Result<(), DumpError> {
        let used = self.parts[0].next * PAGE_SIZE;
        if self.room > used {
            let f = self.file(0);
            let io = |source| DumpError::File {
                path: self.dir.pages_part_path(TREE_PAGES_ID, 0),
                source,
            };
            // Past the end of the file: setting the length it has already drops them on
            // some filesystems (ext4), punching them out on others (tmpfs, which keeps them
            // then; ext4 does not punch past the end).
            f.set_len(used).map_err(io)?;
            sysmem::fallocate(f, PUNCH_UNUSED, used, self.room - used).map_err(io)?;
        }
        for (i, p) in self.parts.iter().enumerate() {
            if p.file.is_some() {
                self.dir.commit_pages_part(TREE_PAGES_ID, i as u32)?;
            }
        }
        Ok(())
    }

    /// The file of part `part`, made if need be, at its full length.
    fn open_part(&mut self, part: u32) -> Result<(), DumpError> {
        let p = &mut self.parts[part as usize];
        if p.file.is_none() {
            p.file = Some(self.dir.create_pages_part(TREE_PAGES_ID, part)?);
        }
        let file = p.file.as_ref().expect("made above");
        file.set_len(p.next * PAGE_SIZE)
            .map_err(|source| DumpError::File {
                path: self.dir.pages_part_path(TREE_PAGES_ID, part),
                source,
            })
    }

    fn file(&self, part: u32) -> &File {
        self.parts[part as usize]
            .file
            .as_ref()
            .expect("opened before the copy")
    }

    /// Copies every job to its place. With `tolerant` (a pre-dump of running tasks) what
    /// cannot be read any more (unmapped, the task gone) is stored as zeroes: the tracker
    /// reports those pages as written, so the next dump stores them again.
    ///
    /// Jobs that follow each other in the file are batched: one `process_vm_readv` gathers up
    /// to [`IOV_MAX`] ranges of the task into one buffer, and one `pwrite` stores it, so that
    /// scattered single pages (an incremental dump) do not cost two system calls each.
    ///
    /// A copy larger than the kernel lets the page cache hold dirty before it throttles
    /// writers to the disk's write-back speed ([`dirty_room`]) writes what does not fit with
    /// `O_DIRECT`: straight from crust's buffers to the disk, a write in flight per worker,
    /// no page cache. What fits goes through the page cache, where a restore on this machine
    /// finds it.
    pub fn copy(
        &mut self,
        jobs: &[Job],
        objects: &[File],
        tolerant: bool,
    ) -> Result<(), DumpError> {
        let total: u64 = jobs.iter().map(|j| j.len).sum();
        let direct_from = match dirty_room() {
            Some(room) if total >= DIRECT_MIN && total > room => {
                // The room shared by the parts written, from the first offset of each.
                let mut first: HashMap<u32, u64> = HashMap::new();
                for j in jobs {
                    let f = first.entry(j.part).or_insert(j.off);
                    *f = (*f).min(j.off);
                }
                let share = room / first.len() as u64 / PAGE_SIZE * PAGE_SIZE;
                first.values_mut().for_each(|f| *f += share);
                Some(first)
            }
            _ => None,
        };
        self.copy_with(jobs, objects, tolerant, direct_from)
    }

    /// [`PagesOut::copy`], writing with `O_DIRECT` (where the filesystem takes it) from file
    /// offset `direct_from` (by part) on.
    fn copy_with(
        &mut self,
        jobs: &[Job],
        objects: &[File],
        tolerant: bool,
        direct_from: Option<HashMap<u32, u64>>,
    ) -> Result<(), DumpError> {
        let mut used: Vec<u32> = jobs.iter().map(|j| j.part).collect();
        used.sort_unstable();
        used.dedup();
        for &p in &used {
            self.open_part(p)?;
        }
        let this = &*self;
        // By part: its O_DIRECT file and the offset from which it is used.
        let direct: HashMap<u32, (&File, u64)> = match &direct_from {
            Some(from) => from
                .iter()
                .filter_map(|(&p, &at)| Some((p, (this.direct_file(p)?, at))))
                .collect(),
            None => HashMap::new(),
        };
        for (p, (_, from)) in &direct {
            crate::debug!("pages image part {p} written with O_DIRECT from offset {from}");
        }
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
                            && b.part == j.part
                            && b.off + b.len == off
                            && b.len + n <= COPY_CHUNK
                            && b.pieces.len() < IOV_MAX =>
                    {
                        b.pieces.push((addr, n));
                        b.len += n;
                    }
                    _ => batches.push(Batch {
                        src: j.src,
                        part: j.part,
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
            // Page aligned, for O_DIRECT.
            || sysmem::PageBuf::new(buf_len),
            |buf, b| {
                let buf = match buf {
                    Ok(buf) => &mut buf.as_mut_slice()[..b.len as usize],
                    Err(e) => {
                        return Err(DumpError::File {
                            path: "pages image: copy buffer".into(),
                            source: std::io::Error::new(e.kind(), e.to_string()),
                        })
                    }
                };
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
                let file = this.file(b.part);
                let written = match direct.get(&b.part) {
                    // Offsets, lengths and the buffer are page aligned; a filesystem wanting
                    // more gets the write through the page cache.
                    Some(&(d, from)) if b.off >= from => match d.write_all_at(buf, b.off) {
                        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                            file.write_all_at(buf, b.off)
                        }
                        r => r,
                    },
                    _ => file.write_all_at(buf, b.off),
                };
                written.map_err(|source| DumpError::File {
                    path: format!(
                        "{} at offset {}",
                        this.dir.pages_part_path(TREE_PAGES_ID, b.part).display(),
                        b.off
                    )
                    .into(),
                    source,
                })
            },
        )
    }

    /// Copies the jobs of frozen task `pid` that are many small runs (an incremental dump:
    /// written pages, scattered) by having the task itself write them: one remote `pwritev`
    /// of up to [`IOV_MAX`] runs into the pages file, on a descriptor of it passed to the
    /// task for the time of the copy. From outside, each run costs `process_vm_readv` a page
    /// pin (a page table walk under the task's mm lock) and crust a second copy; the task
    /// copies straight from its own memory into the page cache. `t` is a stopped thread of
    /// the task, `scratch` its [`crate::remote::SCRATCH_LEN`]-byte scratch area. Returns the
    /// jobs left for [`PagesOut::copy`]: those of other sources, what the task could not
    /// write, all of them when the task cannot take part (seccomp filter, a file size limit,
    /// the descriptor not passed).
    pub fn copy_in_task(
        &self,
        t: &mut Tracee,
        pid: i32,
        scratch: RemoteAddr,
        jobs: Vec<Job>,
    ) -> Result<Vec<Job>, DumpError> {
        // Scattered runs are all in part 0 ([`PagesOut::alloc`]).
        let mine = |j: &Job| {
            j.part == 0
                && j.src
                    == Source::Task {
                        pid,
                        readable: true,
                    }
        };
        let n = jobs.iter().filter(|j| mine(j)).count();
        let bytes: u64 = jobs.iter().filter(|j| mine(j)).map(|j| j.len).sum();
        // Worth it for many small runs only: large ones go faster on every core from here.
        if n < IN_TASK_MIN_RUNS || bytes / n as u64 > IN_TASK_MAX_AVG {
            return Ok(jobs);
        }
        let fd = match pass_fd(t, pid, scratch, self.file(0).as_raw_fd()) {
            Ok(fd) => fd,
            Err(e) => {
                crate::debug!("pid {pid}: pages copied from outside: {e}");
                return Ok(jobs);
            }
        };
        let (mut rest, ours): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| !mine(j));
        let mut failed = None;
        write_in_task(t, fd, scratch, &ours, &mut rest, &mut failed);
        if let Some(e) = failed {
            crate::debug!("pid {pid}: in-task copy stopped: {e}");
        }
        crate::dump::remote_in(
            t,
            pid,
            "close of the pages image descriptor",
            libc::SYS_close,
            [fd, 0, 0, 0, 0, 0],
        )?;
        crate::debug!("pid {pid}: {} runs written by the task", ours.len());
        rest.sort_by_key(|j| (j.off, j.part));
        Ok(rest)
    }

    /// The file of part `part` opened again with `O_DIRECT`, if its filesystem takes it.
    fn direct_file(&self, part: u32) -> Option<&File> {
        self.parts[part as usize]
            .direct
            .get_or_init(|| {
                use std::os::unix::fs::OpenOptionsExt;
                let path = format!("/proc/self/fd/{}", self.file(part).as_raw_fd());
                std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(path)
                    .inspect_err(|e| crate::debug!("pages image: no O_DIRECT: {e}"))
                    .ok()
            })
            .as_ref()
    }
}

/// `fallocate` mode giving back blocks without changing the length.
const PUNCH_UNUSED: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;

/// Part 0 of the pages of an incremental dump, allocated before the tree is frozen for the
/// pages it will store there: the scattered runs written since the parent dump
/// ([`PagesOut::alloc`]). Writing into allocated pages of a file costs the frozen tasks about
/// half of writing into new ones (no page to allocate, charge and add to the cache), and the
/// allocation is done while the tree still runs.
pub(crate) struct Room {
    file: File,
    bytes: u64,
}

impl Room {
    /// Room for `tree` (the running tree, [`super::inherit::running_tree`]), from the runs
    /// its tasks wrote since the parent dump as
    /// their trackers show them now, with a margin for what they write until frozen. `None`
    /// when there is nothing to make room for, or the filesystem cannot allocate ahead; a
    /// failure here never fails the dump (the copy then allocates as it writes).
    pub fn ahead(dir: &ImageDir, tree: &[(i32, Vec<Vma>)]) -> Option<Room> {
        let expected = scattered_bytes(tree);
        if expected == 0 {
            return None;
        }
        let bytes = expected + expected / ROOM_MARGIN + ROOM_MIN_MARGIN;
        let file = dir
            .create_pages(TREE_PAGES_ID)
            .inspect_err(|e| crate::debug!("no room made ahead: {e}"))
            .ok()?;
        match sysmem::fallocate(&file, libc::FALLOC_FL_KEEP_SIZE, 0, bytes) {
            Ok(()) => {
                crate::debug!("room made ahead for {} pages", bytes / PAGE_SIZE);
                Some(Room { file, bytes })
            }
            Err(e) => {
                crate::debug!("no room made ahead: {e}");
                // The empty file is what PagesOut would have made.
                Some(Room { file, bytes: 0 })
            }
        }
    }
}

/// The room made ahead is this fraction larger than what the trackers showed...
const ROOM_MARGIN: u64 = 16;
/// ... and this much more.
const ROOM_MIN_MARGIN: u64 = 64 * PAGE_SIZE;

/// Bytes of the runs smaller than [`SPREAD_MIN`] the tasks of the tree of `root` wrote since
/// their trackers were armed (all of them where no tracker is armed), read while the tree
/// runs: what an incremental dump will copy into part 0. Tasks that cannot be read count
/// nothing.
fn scattered_bytes(tree: &[(i32, Vec<Vma>)]) -> u64 {
    let mut total = 0;
    for (pid, vmas) in tree {
        let Ok(found) = scan(*pid, vmas, true) else {
            continue;
        };
        total += found
            .regions
            .iter()
            .filter(|r| r.written && r.end - r.start < SPREAD_MIN)
            .map(|r| r.end - r.start)
            .sum::<u64>();
    }
    total
}

/// Fewest runs worth the set-up of an in-task copy ([`PagesOut::copy_in_task`]).
const IN_TASK_MIN_RUNS: usize = 256;
/// Largest average run an in-task copy takes.
const IN_TASK_MAX_AVG: u64 = 64 << 10;
/// Runs per remote `pwritev`: its iovec array fills the scratch area.
const IN_TASK_IOV: usize = (crate::remote::SCRATCH_LEN / 16) as usize;

/// The remote `pwritev` calls of [`PagesOut::copy_in_task`]: `ours` by groups following each
/// other in the file; what is not written goes to `rest`, the first failure to `failed` (the
/// groups after it go to `rest` whole).
fn write_in_task(
    t: &mut Tracee,
    fd: u64,
    scratch: RemoteAddr,
    ours: &[Job],
    rest: &mut Vec<Job>,
    failed: &mut Option<String>,
) {
    // Runs that follow each other in the file, by up to IOV_MAX (what the scratch area holds
    // too).
    let mut i = 0;
    while i < ours.len() {
        let mut k = i + 1;
        while k < ours.len()
            && k - i < IN_TASK_IOV
            && ours[k].off == ours[k - 1].off + ours[k - 1].len
        {
            k += 1;
        }
        let group = &ours[i..k];
        i = k;
        if failed.is_some() {
            rest.extend_from_slice(group);
            continue;
        }
        let mut iov = Vec::with_capacity(group.len() * 16);
        for j in group {
            iov.extend_from_slice(&j.addr.to_ne_bytes());
            iov.extend_from_slice(&j.len.to_ne_bytes());
        }
        let len: u64 = group.iter().map(|j| j.len).sum();
        let done = match t.write_mem(scratch, &iov) {
            Ok(()) => t
                .syscall_ok(
                    libc::SYS_pwritev,
                    [fd, scratch.0, group.len() as u64, group[0].off, 0, 0],
                )
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let done = match done {
            Ok(d) => d.min(len),
            Err(e) => {
                *failed = Some(e);
                0
            }
        };
        if done < len {
            // What the task could not read (a short write stops at the first fault) is
            // copied from outside.
            let mut at = 0;
            for j in group {
                if at + j.len > done {
                    let skip = done.saturating_sub(at) / PAGE_SIZE * PAGE_SIZE;
                    rest.push(Job {
                        src: j.src,
                        addr: j.addr + skip,
                        len: j.len - skip,
                        part: j.part,
                        off: j.off + skip,
                    });
                }
                at += j.len;
            }
        }
    }
}

/// Whether a frozen task can write the pages file itself ([`PagesOut::copy_in_task`]), from
/// its `/proc/PID/status` text, its thread count and its limits: no seccomp filter (a remote
/// call it forbids could kill it), no file size limit (a write past it would signal it), a
/// single thread (with several, the in-task copy broke a thread blocked in `futex` across a
/// restore of `threads_futex`, not understood yet).
pub(crate) fn task_may_write(
    status: &str,
    threads: usize,
    rlimits: &[images::pb::RlimitEntry],
) -> bool {
    threads == 1
        && crate::proc::status_field(status, "Seccomp") == Some("0")
        && rlimits
            .iter()
            .any(|r| r.resource == libc::RLIMIT_FSIZE && r.cur == libc::RLIM_INFINITY)
}

/// Installs crust's descriptor `fd` in the frozen task: a remote `socketpair`, crust takes
/// one end (`pidfd_getfd`) and sends `fd` over it, a remote `recvmsg` receives it on the
/// other; both ends are closed again. Returns the task's descriptor number.
fn pass_fd(t: &mut Tracee, pid: i32, scratch: RemoteAddr, fd: i32) -> Result<u64, DumpError> {
    let remote = |t: &mut Tracee, what, nr, args| crate::dump::remote_in(t, pid, what, nr, args);
    let io = |what: &str, source| DumpError::Io {
        pid,
        path: format!("{what} for the in-task copy").into(),
        source,
    };
    remote(
        t,
        "socketpair for the pages image descriptor",
        libc::SYS_socketpair,
        [
            libc::AF_UNIX as u64,
            (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as u64,
            0,
            scratch.0,
            0,
            0,
        ],
    )?;
    let mut pair = [0u8; 8];
    t.read_mem(scratch, &mut pair)
        .map_err(|e| io("reading the socket pair", std::io::Error::other(e)))?;
    let a = i32::from_ne_bytes(pair[..4].try_into().expect("4 bytes")) as u64;
    let b = i32::from_ne_bytes(pair[4..].try_into().expect("4 bytes")) as u64;
    let received = (|| {
        let pidfd = sys::pidfd_open(pid).map_err(|e| io("pidfd", e))?;
        let peer = sysmem::pidfd_getfd(pidfd.as_raw_fd(), b as i32)
            .map_err(|e| io("taking the socket", e))?;
        sysmem::send_fd(peer.as_raw_fd(), fd).map_err(|e| io("sending the descriptor", e))?;
        // msghdr at 0, its one iovec at 64 (one byte at 128), the control buffer at 256.
        let base = scratch.0;
        let mut m = Vec::with_capacity(136);
        for w in [0u64, 0, base + 64, 1, base + 256, CMSG_ONE_FD, 0] {
            m.extend_from_slice(&w.to_ne_bytes());
        }
        m.resize(64, 0);
        m.extend_from_slice(&(base + 128).to_ne_bytes());
        m.extend_from_slice(&1u64.to_ne_bytes());
        m.resize(256 + CMSG_ONE_FD as usize, 0);
        t.write_mem(scratch, &m)
            .map_err(|e| io("writing the message header", std::io::Error::other(e)))?;
        remote(
            t,
            "recvmsg of the pages image descriptor",
            libc::SYS_recvmsg,
            [a, base, libc::MSG_CMSG_CLOEXEC as u64, 0, 0, 0],
        )?;
        let mut c = [0u8; 20];
        t.read_mem(RemoteAddr(base + 256), &mut c)
            .map_err(|e| io("reading the control message", std::io::Error::other(e)))?;
        let level = i32::from_ne_bytes(c[8..12].try_into().expect("4 bytes"));
        let kind = i32::from_ne_bytes(c[12..16].try_into().expect("4 bytes"));
        if level != libc::SOL_SOCKET || kind != libc::SCM_RIGHTS {
            return Err(io(
                "receiving the descriptor",
                std::io::Error::from_raw_os_error(libc::EPROTO),
            ));
        }
        Ok(i32::from_ne_bytes(c[16..20].try_into().expect("4 bytes")) as u64)
    })();
    for s in [a, b] {
        remote(
            t,
            "close of the descriptor passing socket",
            libc::SYS_close,
            [s, 0, 0, 0, 0, 0],
        )?;
    }
    received
}

/// `CMSG_SPACE(sizeof(int))`: a control message with one descriptor.
const CMSG_ONE_FD: u64 = 24;

/// Below this, a copy never bothers with `O_DIRECT`.
const DIRECT_MIN: u64 = 256 << 20;

/// How many more bytes the page cache takes dirty before the kernel throttles writers
/// (`balance_dirty_pages`: halfway between the background and the hard dirty thresholds,
/// of the memory available), from `/proc/sys/vm/dirty_*` and `/proc/meminfo`; `None` if
/// unknown. Past it, buffered writes go at the disk's write-back speed.
fn dirty_room() -> Option<u64> {
    let num = |name: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/proc/sys/vm/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    // "Key:   123 kB", as in /proc/PID/status.
    let field = |key: &str| -> Option<u64> {
        let kb: u64 = crate::proc::status_field(&meminfo, key)?
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb << 10)
    };
    let available = field("MemAvailable")?;
    let limit = |bytes: &str, ratio: &str| -> Option<u64> {
        match num(bytes)? {
            0 => Some(available / 100 * num(ratio)?),
            b => Some(b),
        }
    };
    let hard = limit("dirty_bytes", "dirty_ratio")?;
    let background = limit("dirty_background_bytes", "dirty_background_ratio")?;
    let dirty = field("Dirty")? + field("Writeback")?;
    Some(((hard + background) / 2).saturating_sub(dirty))
}

/// Ranges of one source that follow each other in a part of the pages, copied together.
struct Batch {
    src: Source,
    part: u32,
    /// Byte offset in the part's file.
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
        regions.reserve(out.len());
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
    push_entry_in(out, first, vaddr, nr, (0, off), flags)
}

/// Like [`push_entry_after`], the data at page `off` of part `part` of the pages.
pub(crate) fn push_entry_in(
    out: &mut Vec<PagemapEntry>,
    first: usize,
    vaddr: u64,
    nr: u64,
    (part, off): (u32, u64),
    flags: u32,
) {
    let first = first.min(out.len());
    if let Some(l) = out[first..].last_mut() {
        let l_end = l.vaddr + l.nr_pages * PAGE_SIZE;
        let continues = l.flags == flags
            && l_end == vaddr
            && (flags != PE_PRESENT || (l.part == part && l.pages_off + l.nr_pages == off));
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
        part: if flags == PE_PRESENT { part } else { 0 },
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
    /// Each pagemap read once: the file index of each part of its pages (`u32::MAX` for a
    /// part it does not use) and its entries.
    cache: HashMap<PathBuf, (Vec<u32>, Vec<PagemapEntry>)>,
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
            // (read_pagemap checked every part named against images::pagemap::MAX_PARTS.)
            let mut files = Vec::new();
            for e in entries.iter().filter(|e| e.flags == PE_PRESENT) {
                let part = e.part as usize;
                if files.len() <= part {
                    files.resize(part + 1, u32::MAX);
                }
                if files[part] == u32::MAX {
                    files[part] = self
                        .files
                        .index(&dir.pages_part_path(head.pages_id, e.part))?;
                }
            }
            self.cache.insert(pm_path.clone(), (files, entries));
        }
        let (files, entries) = self.cache[&pm_path].clone();
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
                    file: files[e.part as usize],
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
            part: 0,
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
    fn large_runs_are_spread_over_the_parts_and_read_back_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ImageDir::create(tmp.path()).unwrap();
        let mut out = PagesOut::with_parts(&dir, 3, None).unwrap();
        let len = 5 * STRIPE + 3 * PAGE_SIZE;
        let src: Vec<u8> = (0..len).map(|i| (i / 4093) as u8).collect();
        let me = std::process::id() as i32;
        let (mut entries, mut jobs) = (Vec::new(), Vec::new());
        // A small run first: part 0, whole.
        let task = Source::Task {
            pid: me,
            readable: true,
        };
        let base = src.as_ptr() as u64;
        out.place(task, (base, 2 * PAGE_SIZE), &mut entries, 0, &mut jobs);
        assert_eq!((jobs.len(), jobs[0].part), (1, 0));
        out.place(
            task,
            (base + 2 * PAGE_SIZE, len - 2 * PAGE_SIZE),
            &mut entries,
            0,
            &mut jobs,
        );
        // Every part takes some; no piece is larger than a stripe.
        let mut parts: Vec<u32> = jobs.iter().map(|j| j.part).collect();
        parts.sort_unstable();
        parts.dedup();
        assert_eq!(parts, [0, 1, 2]);
        assert!(jobs.iter().all(|j| j.len <= STRIPE));
        assert_eq!(
            entries.iter().map(|e| e.nr_pages).sum::<u64>(),
            len / PAGE_SIZE
        );
        out.copy(&jobs, &[], false).unwrap();
        out.commit().unwrap();
        for p in 1..3 {
            assert!(dir.pages_part_path(TREE_PAGES_ID, p).exists());
        }
        // Each entry's pages are where it says, in its part.
        for e in &entries {
            let part = std::fs::read(dir.pages_part_path(TREE_PAGES_ID, e.part)).unwrap();
            let at = (e.pages_off * PAGE_SIZE) as usize;
            let n = (e.nr_pages * PAGE_SIZE) as usize;
            let from = (e.vaddr - base) as usize;
            assert!(part[at..at + n] == src[from..from + n], "entry {e:?}");
        }
    }

    #[test]
    fn direct_writes_keep_the_bytes() {
        // Under /tmp: tmpfs takes O_DIRECT as a buffered write, a disk filesystem for real.
        let tmp = tempfile::tempdir_in("/tmp").unwrap();
        let dir = ImageDir::create(tmp.path()).unwrap();
        let mut out = PagesOut::create(&dir, None).unwrap();
        let pages = 300u64;
        let src: Vec<u8> = (0..pages * PAGE_SIZE).map(|i| (i / 4093) as u8).collect();
        let me = std::process::id() as i32;
        // Every other page, scattered in memory, one after the other in the file.
        let mut jobs = Vec::new();
        for i in (0..pages).step_by(2) {
            let (part, off) = out.alloc(PAGE_SIZE, PAGE_SIZE);
            jobs.push(Job {
                src: Source::Task {
                    pid: me,
                    readable: true,
                },
                addr: src.as_ptr() as u64 + i * PAGE_SIZE,
                len: PAGE_SIZE,
                part,
                off: off * PAGE_SIZE,
            });
        }
        // The first ten pages through the page cache, the rest with O_DIRECT.
        out.copy_with(&jobs, &[], false, Some([(0, 10 * PAGE_SIZE)].into()))
            .unwrap();
        drop(out);
        dir.commit_pages(TREE_PAGES_ID).unwrap();
        let written = std::fs::read(dir.pages_path(TREE_PAGES_ID)).unwrap();
        for (k, j) in jobs.iter().enumerate() {
            let i = (j.addr - src.as_ptr() as u64) as usize;
            let at = k * PAGE_SIZE as usize;
            assert!(written[at..at + PAGE_SIZE as usize] == src[i..i + PAGE_SIZE as usize]);
        }
        // Back into memory, from a file the page cache does not hold.
        let mut files = PageFiles::default();
        let f = files.index(&dir.pages_path(TREE_PAGES_ID)).unwrap();
        let mut back = vec![0u8; written.len()];
        let run = Run {
            vaddr: back.as_mut_ptr() as u64,
            len: written.len() as u64,
            file: f,
            off: 0,
        };
        fill(me, &files, std::iter::once(run)).unwrap();
        assert!(back == written);
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
