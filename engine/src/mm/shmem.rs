//! Shmem objects behind mappings: `MAP_SHARED | MAP_ANONYMOUS` memory (`/dev/zero (deleted)`
//! in maps), memfds (`/memfd:NAME (deleted)`) and unlinked tmpfs files (`/dev/shm/x
//! (deleted)`).
//!
//! Such an object outlives any one mapping and is shared by every task that maps it (across
//! fork, or through a descriptor), so it is an object of its own in the images: identified at
//! dump by the (device, inode) of `/proc/PID/map_files/A-B`, its contents are saved once, read
//! straight from the object through that link (`SEEK_DATA`/`SEEK_HOLE` find the pages it
//! holds, whether or not any task has them mapped in its page tables), into
//! the object's section of `pagemap-shmem.img`, with offsets in the object as addresses.
//!
//! Restore creates each object once in crust, fills it with `pwrite`, and hands a descriptor
//! to every task that maps it (with its other service descriptors); the task maps it
//! `MAP_SHARED` (or private) at the saved offset. An anonymous object is made the way the
//! kernel makes one for `MAP_SHARED | MAP_ANONYMOUS` (crust maps such memory itself and opens
//! it through its own `map_files`), so it shows as `/dev/zero (deleted)` again; a memfd gets
//! its name and seals back; an unlinked file is created under its old path and unlinked.
//!
//! In an incremental dump (`--prev-images-dir`, pre-dumps included) an object the parent
//! images hold (same kind and inode) keeps the parent's id, and only its pages whose bytes
//! differ from the parent's copy (resolved through the parent chain) are stored; the others
//! are `PE_IN_PARENT` entries, which restore reads through the chain. Comparing bytes rather
//! than tracking writes keeps it correct whoever wrote the object (another process, `write`
//! on a memfd) at the cost of reading it whole.
//!
//! System V segments ([`crate::ipc`]) save their contents as objects of kind `SHMEM_SYSV`; their
//! attachments are restored by a remote `shmat` ([`attach_sysv`]).
//!
//! A shared mapping of a file that still exists is not a shmem object here: its contents stay
//! in the file (POSIX shared memory under `/dev/shm` included).

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};

use images::pb::PagemapEntry;
use images::pb::{MmEntry, PagemapHead, ShmemKind, ShmemObject, VmaEntry, VmaKind};
use images::{ImageDir, PAGE_SIZE, PE_IN_PARENT, PE_PRESENT};

use super::pages::{self, Job, PagesOut, Source};
use crate::error::{DumpError, RestoreError};
use crate::proc::Vma;
use crate::sys::mem as sysmem;
use parasite::Tracee;

const DELETED: &str = " (deleted)";
const ANON_NAME: &str = "/dev/zero (deleted)";
const MEMFD_PREFIX: &str = "/memfd:";
const SYSV_PREFIX: &str = "/SYSV";
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The kind of a mapping backed by a shmem object, judging by its name, or None.
pub(crate) fn kind_of(v: &Vma) -> Option<VmaKind> {
    if !v.name.ends_with(DELETED) {
        return None;
    }
    // The inode number of a System V segment is its id, 0 included.
    if v.name.starts_with(SYSV_PREFIX) && v.shared {
        return Some(VmaKind::VmaSysvShm);
    }
    if v.ino == 0 {
        return None;
    }
    Some(if v.shared && v.name == ANON_NAME {
        VmaKind::VmaAnonShared
    } else {
        VmaKind::VmaShmem
    })
}

/// Why a mapping that looks like it is backed by a shmem object cannot be saved as one.
pub(crate) fn refuse(pid: i32, v: &Vma) -> Option<&'static str> {
    if kind_of(v)? == VmaKind::VmaSysvShm || v.name == ANON_NAME {
        return None;
    }
    let through = format!("/proc/{pid}/map_files/{:x}-{:x}", v.start, v.end);
    match nix::sys::statfs::statfs(through.as_str()) {
        Ok(fs) if fs.filesystem_type().0 == TMPFS_MAGIC => None,
        Ok(_) if v.name.starts_with(MEMFD_PREFIX) => Some("a memfd of huge pages"),
        Ok(_) => Some("the mapped file is deleted"),
        Err(_) => Some("the mapped object cannot be opened"),
    }
}

struct Object {
    entry: ShmemObject,
    file: File,
    dev: u64,
    ino: u64,
}

/// Objects of an image directory by (kind, inode): (id, size).
type Known = HashMap<(i32, u64), (u32, u64)>;

/// The shmem objects of a tree being dumped.
#[derive(Default)]
pub(crate) struct ShmemDump {
    objects: Vec<Object>,
    /// The parent image directory of an incremental dump, and its objects by (kind, inode):
    /// (id, size). An object found there keeps its id, and only its pages that differ from
    /// the parent's are stored.
    parent: Option<(ImageDir, Known)>,
    /// Ids in use (the parent's included), for the next new object.
    max_id: u32,
    /// The System V segments of the IPC namespace the tree owns, by id ([`crate::ipc`]);
    /// None when it does not own one.
    sysv: Option<Vec<i32>>,
}

impl ShmemDump {
    /// The objects of a dump whose parent image directory is `prev`, if any. A parent whose
    /// images cannot be read only makes this dump a full one.
    pub fn new(prev: Option<&ImageDir>) -> ShmemDump {
        let mut d = ShmemDump::default();
        if let Some(p) = prev {
            let known = parent_objects(p);
            d.max_id = known.values().map(|v| v.0).max().unwrap_or(0);
            d.parent = Some((p.clone(), known));
        }
        d
    }

    /// The id of a new object of `kind` and inode `ino`: the parent's, when it has it.
    fn new_id(&mut self, kind: ShmemKind, ino: u64) -> u32 {
        let theirs = self
            .parent
            .as_ref()
            .and_then(|(_, known)| known.get(&(kind as i32, ino)))
            .map(|v| v.0)
            .filter(|id| !self.objects.iter().any(|o| o.entry.id == *id));
        theirs.unwrap_or_else(|| {
            self.max_id += 1;
            self.max_id
        })
    }

    /// The object behind `v` of `pid`, recorded the first time any task shows it.
    pub fn object(&mut self, pid: i32, v: &Vma) -> Result<ShmemObject, DumpError> {
        let through = format!("/proc/{pid}/map_files/{:x}-{:x}", v.start, v.end);
        let io = |source| DumpError::Io {
            pid,
            path: through.clone().into(),
            source,
        };
        let md = std::fs::metadata(&through).map_err(io)?;
        if let Some(o) = self
            .objects
            .iter()
            .find(|o| o.dev == md.dev() && o.ino == md.ino())
        {
            return Ok(o.entry.clone());
        }
        let file = File::open(&through).map_err(io)?;
        let name = v.name.strip_suffix(DELETED).unwrap_or(&v.name);
        let (kind, name) = if v.name == ANON_NAME {
            (ShmemKind::ShmemAnon, String::new())
        } else if let Some(n) = name.strip_prefix(MEMFD_PREFIX) {
            (ShmemKind::ShmemMemfd, n.to_string())
        } else {
            (ShmemKind::ShmemUnlinked, name.to_string())
        };
        let seals = if kind == ShmemKind::ShmemMemfd {
            sysmem::get_seals(file.as_raw_fd()).unwrap_or(0)
        } else {
            0
        };
        let entry = ShmemObject {
            id: self.new_id(kind, md.ino()),
            kind: kind as i32,
            name,
            size: md.size(),
            seals,
            ino: md.ino(),
        };
        crate::debug!(
            "pid {pid}: shmem object {} ({:?} {:?}, {} bytes) at {:#x}",
            entry.id,
            kind,
            entry.name,
            entry.size,
            v.start
        );
        self.objects.push(Object {
            entry: entry.clone(),
            file,
            dev: md.dev(),
            ino: md.ino(),
        });
        Ok(entry)
    }

    /// Records the contents of System V segment `shmid` (`size` bytes, read through `file`)
    /// as an object; returns its id.
    pub fn add_sysv(&mut self, shmid: i32, size: u64, file: File) -> u32 {
        let (dev, ino) = file
            .metadata()
            .map(|m| (m.dev(), m.ino()))
            .unwrap_or((0, shmid as u64));
        // Known by its id from one dump to the next.
        let id = self.new_id(ShmemKind::ShmemSysv, shmid as u64);
        self.objects.push(Object {
            entry: ShmemObject {
                id,
                kind: ShmemKind::ShmemSysv as i32,
                name: String::new(),
                size,
                seals: 0,
                ino: shmid as u64,
            },
            file,
            dev,
            ino,
        });
        id
    }

    /// The segments of the IPC namespace the tree owns, all saved.
    pub fn set_sysv_ids(&mut self, ids: Vec<i32>) {
        self.sysv = Some(ids);
    }

    /// The segment id of the System V attachment `v` of `pid`. Refused when the segment is
    /// not one of the tree's IPC namespace: it belongs to the host (or another tree).
    pub fn sysv_shmid(&self, pid: i32, v: &Vma) -> Result<u32, DumpError> {
        // The inode number of a segment's file is its id.
        let shmid = v.ino as i32;
        match &self.sysv {
            Some(ids) if ids.contains(&shmid) => Ok(shmid as u32),
            _ => Err(DumpError::SysvShmOutside {
                pid,
                addr: v.start,
                shmid,
            }),
        }
    }

    /// Plans the copy of every object's data into `out` and writes their pagemaps. The
    /// returned jobs read from [`ShmemDump::files`].
    pub fn plan(&self, dir: &ImageDir, out: &mut PagesOut) -> Result<Vec<Job>, DumpError> {
        let mut jobs = Vec::new();
        for (i, o) in self.objects.iter().enumerate() {
            let what = || format!("shmem object {} ({})", o.entry.id, o.entry.name);
            let io = |source| DumpError::File {
                path: what().into(),
                source,
            };
            // What the parent holds of it, when it has it: only pages that differ are stored.
            let theirs = match &self.parent {
                Some((p, known)) => match known.get(&(o.entry.kind, o.entry.ino)) {
                    Some(&(id, size)) if id == o.entry.id => match resolve(p, id, size, 0) {
                        Ok(pieces) => Some(ParentData::open(pieces).map_err(io)?),
                        Err(e) => {
                            crate::warn!("{}: saved in full: parent unreadable: {e}", what());
                            None
                        }
                    },
                    _ => None,
                },
                None => None,
            };
            let mut entries = Vec::new();
            let mut store = |entries: &mut Vec<PagemapEntry>, start: u64, len: u64| {
                let src = Source::Object { index: i as u32 };
                out.place(src, (start, len), entries, 0, &mut jobs);
            };
            for (start, end) in data_ranges(&o.file, o.entry.size).map_err(io)? {
                let Some(theirs) = &theirs else {
                    store(&mut entries, start, end - start);
                    continue;
                };
                let mut at = start;
                while at < end {
                    let n = (end - at).min(COMPARE_CHUNK);
                    let same = theirs
                        .same_pages(&o.file, at, n, o.entry.size)
                        .map_err(io)?;
                    let mut k = 0;
                    while k < same.len() {
                        let mut j = k + 1;
                        while j < same.len() && same[j] == same[k] {
                            j += 1;
                        }
                        let (s, len) = (at + k as u64 * PAGE_SIZE, (j - k) as u64 * PAGE_SIZE);
                        match same[k] {
                            Same::Differs => store(&mut entries, s, len),
                            Same::InParent => {
                                pages::push_entry(&mut entries, s, len / PAGE_SIZE, 0, PE_IN_PARENT)
                            }
                            // Zeroes both here and there: a hole again.
                            Same::Zero => {}
                        }
                        k = j;
                    }
                    at += n;
                }
            }
            if theirs.is_some() {
                crate::debug!(
                    "{}: {} of {} pages stored, the rest in the parent",
                    what(),
                    entries
                        .iter()
                        .filter(|e| e.flags == PE_PRESENT)
                        .map(|e| e.nr_pages)
                        .sum::<u64>(),
                    entries.iter().map(|e| e.nr_pages).sum::<u64>()
                );
            }
            dir.write_shmem_pagemap(
                o.entry.id,
                &PagemapHead {
                    pages_id: pages::TREE_PAGES_ID,
                },
                &entries,
            )?;
        }
        Ok(jobs)
    }

    /// Crust's descriptors of the objects, in id order.
    pub fn files(&self) -> Vec<File> {
        self.objects
            .iter()
            .filter_map(|o| o.file.try_clone().ok())
            .collect()
    }
}

/// The page-aligned ranges of `[0, size)` that hold data (`SEEK_DATA`/`SEEK_HOLE`).
fn data_ranges(f: &File, size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    use nix::unistd::{lseek, Whence};
    let end = size.next_multiple_of(PAGE_SIZE);
    let mut out = Vec::new();
    let mut at = 0u64;
    while at < size {
        let data = match lseek(f, at as i64, Whence::SeekData) {
            Ok(d) => d as u64,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = match lseek(f, data as i64, Whence::SeekHole) {
            Ok(h) => h as u64,
            Err(e) => return Err(e.into()),
        };
        let s = data / PAGE_SIZE * PAGE_SIZE;
        let e = hole.next_multiple_of(PAGE_SIZE).min(end);
        if e <= s {
            break;
        }
        match out.last_mut() {
            Some((_, l)) if *l >= s => *l = e,
            _ => out.push((s, e)),
        }
        at = e;
    }
    Ok(out)
}

/// How much of an object is compared with its parent's copy at a time.
const COMPARE_CHUNK: u64 = 1 << 20;

/// Every shmem object of the image directory `dir` by (kind, inode): (id, size). Read from the
/// mm images (mappings) and `ipc-shm.img` (System V segments, known by their id).
fn parent_objects(dir: &ImageDir) -> Known {
    let mut out = HashMap::new();
    for pid in dir.ids(images::ImageKind::Mm).unwrap_or_default() {
        let Ok(mm) = dir.read_one::<MmEntry>(images::ImageKind::Mm, Some(pid)) else {
            continue;
        };
        for o in mm.vmas.iter().filter_map(|v| v.shmem.as_ref()) {
            out.insert((o.kind, o.ino), (o.id, o.size));
        }
    }
    if dir.exists(images::ImageKind::IpcShm, None) {
        if let Ok(segs) = dir.read::<images::pb::SysvShmEntry>(images::ImageKind::IpcShm, None) {
            for s in segs {
                out.insert(
                    (ShmemKind::ShmemSysv as i32, s.shmid as u64),
                    (s.object, s.size),
                );
            }
        }
    }
    out
}

/// `len` bytes of an object at offset `at` are at byte `off` of pages file `pages`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    at: u64,
    len: u64,
    pages: std::path::PathBuf,
    off: u64,
}

/// Where the saved pages of object `id` (`size` bytes) of `dir` are, following the parent
/// chain for pages left there; sorted, not overlapping. Pages in none are zeroes.
fn resolve(dir: &ImageDir, id: u32, size: u64, depth: u32) -> Result<Vec<Piece>, RestoreError> {
    let image = dir.file_path(images::ImageKind::ShmemPagemap, Some(id));
    let bad = |what: String| RestoreError::BadImage {
        image: image.clone(),
        what,
    };
    if depth > 64 {
        return Err(bad("parent chain too long (a loop?)".into()));
    }
    let (head, entries) = dir.read_shmem_pagemap(id)?;
    let limit = size.next_multiple_of(PAGE_SIZE);
    let mut parent: Option<Vec<Piece>> = None;
    let mut out = Vec::new();
    for e in &entries {
        let len = e.nr_pages * PAGE_SIZE;
        let end = e.vaddr + len;
        if e.vaddr >= limit || end > limit {
            return Err(bad(format!(
                "data at offset {:#x}-{end:#x} lies past the object's {size} bytes",
                e.vaddr
            )));
        }
        match e.flags {
            PE_PRESENT => out.push(Piece {
                at: e.vaddr,
                len,
                pages: dir.pages_part_path(head.pages_id, e.part),
                off: e.pages_off * PAGE_SIZE,
            }),
            PE_IN_PARENT => {
                if parent.is_none() {
                    let p = dir.parent()?.ok_or_else(|| {
                        bad(format!(
                            "offset {:#x} is in the parent, but there is none",
                            e.vaddr
                        ))
                    })?;
                    parent = Some(resolve(&p, id, size, depth + 1)?);
                }
                for q in parent.iter().flatten() {
                    let (s, t) = (q.at.max(e.vaddr), (q.at + q.len).min(end));
                    if s < t {
                        out.push(Piece {
                            at: s,
                            len: t - s,
                            pages: q.pages.clone(),
                            off: q.off + (s - q.at),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Whether a page of an object is the same as in its parent's copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Same {
    Differs,
    /// The same as the parent's saved page.
    InParent,
    /// Zeroes, and the parent has no page there either.
    Zero,
}

/// The parent's saved copy of an object, open for comparison.
struct ParentData {
    pieces: Vec<Piece>,
    files: HashMap<std::path::PathBuf, File>,
}

impl ParentData {
    fn open(pieces: Vec<Piece>) -> std::io::Result<ParentData> {
        let mut files = HashMap::new();
        for p in &pieces {
            if !files.contains_key(&p.pages) {
                files.insert(p.pages.clone(), File::open(&p.pages)?);
            }
        }
        Ok(ParentData { pieces, files })
    }

    /// Compares `len` bytes at `at` of `file` (the object, `size` bytes) with the parent's,
    /// page by page.
    fn same_pages(&self, file: &File, at: u64, len: u64, size: u64) -> std::io::Result<Vec<Same>> {
        let mut mine = vec![0u8; len as usize];
        let n = (size.saturating_sub(at)).min(len) as usize;
        file.read_exact_at(&mut mine[..n], at)?;
        let mut theirs = vec![0u8; len as usize];
        let mut held = vec![false; (len / PAGE_SIZE) as usize];
        let i = self.pieces.partition_point(|p| p.at + p.len <= at);
        for p in &self.pieces[i..] {
            if p.at >= at + len {
                break;
            }
            let (s, e) = (p.at.max(at), (p.at + p.len).min(at + len));
            let f = &self.files[&p.pages];
            f.read_exact_at(
                &mut theirs[(s - at) as usize..(e - at) as usize],
                p.off + (s - p.at),
            )?;
            for h in &mut held[((s - at) / PAGE_SIZE) as usize..((e - at) / PAGE_SIZE) as usize] {
                *h = true;
            }
        }
        Ok(mine
            .chunks(PAGE_SIZE as usize)
            .zip(theirs.chunks(PAGE_SIZE as usize))
            .zip(&held)
            .map(|((a, b), &h)| match (a == b, h) {
                (false, _) => Same::Differs,
                (true, true) => Same::InParent,
                (true, false) => Same::Zero,
            })
            .collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Restore

/// Creates the object `o` and fills it from its section of `pagemap-shmem.img`.
pub(crate) fn create(dir: &ImageDir, o: &ShmemObject) -> Result<OwnedFd, RestoreError> {
    let what = || format!("shmem object {} ({})", o.id, o.name);
    let io = |source| RestoreError::File {
        path: what(),
        source,
    };
    let fd = match o.kind() {
        ShmemKind::ShmemAnon => {
            sysmem::anon_shmem(o.size.next_multiple_of(PAGE_SIZE)).map_err(io)?
        }
        ShmemKind::ShmemMemfd => {
            let fd = sysmem::memfd(&o.name).map_err(io)?;
            File::from(fd.try_clone().map_err(io)?)
                .set_len(o.size)
                .map_err(io)?;
            fd
        }
        ShmemKind::ShmemUnlinked => create_unlinked(&o.name, o.size).map_err(io)?,
        ShmemKind::ShmemSysv => {
            return Err(RestoreError::BadImage {
                image: dir.file_path(images::ImageKind::ShmemPagemap, Some(o.id)),
                what: "a System V segment mapped like a shmem object".into(),
            })
        }
    };
    fill(dir, o, &File::from(fd.try_clone().map_err(io)?))?;
    if o.kind() == ShmemKind::ShmemMemfd && o.seals != 0 {
        sysmem::add_seals(fd.as_raw_fd(), o.seals).map_err(io)?;
    }
    Ok(fd)
}

/// Checks the contents image of object `id` against its size, before anything is created.
pub(crate) fn check_contents(dir: &ImageDir, id: u32, size: u64) -> Result<(), RestoreError> {
    contents(dir, id, size).map(|_| ())
}

/// The chunks of the contents of object `id` of `size` bytes, through the parent chain:
/// (offset in the object, pages file, offset in it, length).
#[allow(clippy::type_complexity)]
fn contents(
    dir: &ImageDir,
    id: u32,
    size: u64,
) -> Result<Vec<(u64, std::path::PathBuf, u64, u64)>, RestoreError> {
    let mut chunks = Vec::new();
    for p in resolve(dir, id, size, 0)? {
        let mut done = 0;
        while done < p.len {
            let n = (p.len - done).min(8 << 20);
            chunks.push((p.at + done, p.pages.clone(), p.off + done, n));
            done += n;
        }
    }
    Ok(chunks)
}

/// Writes the saved contents of System V segment contents object `id` (`size` bytes) into the
/// segment, open as `file`.
pub(crate) fn fill_sysv(
    dir: &ImageDir,
    id: u32,
    size: u64,
    file: &File,
) -> Result<(), RestoreError> {
    let o = ShmemObject {
        id,
        kind: ShmemKind::ShmemSysv as i32,
        size,
        ..Default::default()
    };
    fill(dir, &o, file)
}

/// Writes the saved contents of `o` into `file`, the object created again.
fn fill(dir: &ImageDir, o: &ShmemObject, file: &File) -> Result<(), RestoreError> {
    let what = || format!("shmem object {} ({})", o.id, o.name);
    let io = |source| RestoreError::File {
        path: what(),
        source,
    };
    let chunks = contents(dir, o.id, o.size)?;
    let mut srcs: HashMap<&std::path::Path, File> = HashMap::new();
    for (_, pages, _, _) in &chunks {
        if !srcs.contains_key(pages.as_path()) {
            let f = File::open(pages).map_err(|source| RestoreError::File {
                path: pages.display().to_string(),
                source,
            })?;
            srcs.insert(pages.as_path(), f);
        }
    }
    let total = chunks.iter().map(|c| c.3).sum();
    crate::par::for_each(
        &chunks,
        total,
        || (),
        |_, (at, pages, off, len)| {
            let (at, off, len) = (*at, *off, *len);
            let src = &srcs[pages.as_path()];
            let map =
                crate::sys::Mapped::file(src.as_raw_fd(), off, len as usize).map_err(|source| {
                    RestoreError::File {
                        path: format!("{} at offset {off}", pages.display()),
                        source,
                    }
                })?;
            // Never write past the object's size: that would grow it.
            let keep = (o.size.saturating_sub(at)).min(len) as usize;
            file.write_all_at(&map.as_slice()[..keep], at).map_err(io)
        },
    )?;
    Ok(())
}

/// Attaches the System V segment of `v` in the task being restored: a remote `shmat` at the
/// address the attachment starts at (`v.start - v.pgoff`), read-only when it was (no `mw`),
/// unless an earlier VMA of the same attachment (split by `mprotect`) did it already; the
/// parts of the attachment the task had unmapped are unmapped again. The segment exists in
/// the task's IPC namespace with its saved id ([`crate::ipc`]). Returns whether `v` needs an
/// `mprotect` to its saved protection.
pub(crate) fn attach_sysv(
    t: &mut Tracee,
    pid: i32,
    mm: &MmEntry,
    v: &VmaEntry,
) -> Result<bool, RestoreError> {
    let layout = |what: String| RestoreError::Layout { pid, what };
    let shmid = v
        .sysv_shmid
        .ok_or_else(|| layout(format!("System V mapping {:#x} names no segment", v.start)))?;
    let base = v
        .start
        .checked_sub(v.pgoff)
        .ok_or_else(|| layout(format!("System V mapping {:#x}: offset too large", v.start)))?;
    let group: Vec<&VmaEntry> = mm
        .vmas
        .iter()
        .filter(|u| {
            u.kind() == VmaKind::VmaSysvShm
                && u.sysv_shmid == Some(shmid)
                && u.start.checked_sub(u.pgoff) == Some(base)
        })
        .collect();
    let first = group.first().copied().unwrap_or(v);
    let rdonly = !first.vm_flags.iter().any(|f| f == "mw");
    let exec = first.prot & libc::PROT_EXEC as u32 != 0;
    let mut prot = libc::PROT_READ as u32;
    if !rdonly {
        prot |= libc::PROT_WRITE as u32;
    }
    if exec {
        prot |= libc::PROT_EXEC as u32;
    }
    if first.start == v.start {
        let mut flags = 0u64;
        if rdonly {
            flags |= libc::SHM_RDONLY as u64;
        }
        if exec {
            flags |= libc::SHM_EXEC as u64;
        }
        let at = super::rsys(
            t,
            pid,
            libc::SYS_shmat,
            [shmid as u64, base, flags, 0, 0, 0],
            || format!("shmat of System V segment {shmid} at {base:#x}"),
        )?;
        if at != base {
            return Err(layout(format!(
                "System V segment {shmid} attached at {at:#x}, not {base:#x}"
            )));
        }
        // The parts of the attachment that were not mapped any more.
        let end = crate::proc::maps(pid)?
            .iter()
            .find(|m| m.start == base)
            .map(|m| m.end)
            .unwrap_or(base);
        let mut cur = base;
        let mut holes = Vec::new();
        for u in &group {
            if u.start > cur {
                holes.push((cur, u.start));
            }
            cur = cur.max(u.end);
        }
        if end > cur {
            holes.push((cur, end));
        }
        for (s, e) in holes {
            super::rsys(t, pid, libc::SYS_munmap, [s, e - s, 0, 0, 0, 0], || {
                format!("munmap {s:#x}-{e:#x} of System V segment {shmid}")
            })?;
        }
    }
    Ok(v.prot != prot)
}

/// A file at `path` (or beside it when the name is taken again), of `size` bytes, unlinked.
fn create_unlinked(path: &str, size: u64) -> std::io::Result<OwnedFd> {
    let mut tries = vec![path.to_string()];
    tries.extend((0..8).map(|i| format!("{path}.crust-{}-{i}", std::process::id())));
    for p in tries {
        let c = std::ffi::CString::new(p.clone())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        match sysmem::create_excl(&c, 0o600) {
            Ok(fd) => {
                let _ = std::fs::remove_file(&p);
                if p != path {
                    crate::warn!(
                        "{path} exists again: its unlinked predecessor is restored as {p}"
                    );
                }
                File::from(fd.try_clone()?).set_len(size)?;
                return Ok(fd);
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::EEXIST))
}

/// Every object of the tree, by id, created and filled; a memfd the files of the tree also
/// hold (`memfds`, by inode at dump time) is theirs, opened again read-write.
pub(crate) fn create_all<'a>(
    dir: &ImageDir,
    objects: impl Iterator<Item = &'a ShmemObject>,
    memfds: &HashMap<u64, std::os::fd::RawFd>,
) -> Result<HashMap<u32, OwnedFd>, RestoreError> {
    let mut out = HashMap::new();
    for o in objects {
        if let std::collections::hash_map::Entry::Vacant(e) = out.entry(o.id) {
            let theirs = (o.kind() == ShmemKind::ShmemMemfd)
                .then(|| memfds.get(&o.ino))
                .flatten();
            let fd = match theirs {
                Some(fd) => {
                    let path = format!("/proc/self/fd/{fd}");
                    std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(&path)
                        .map_err(|source| RestoreError::File {
                            path: format!("memfd {} ({path})", o.name),
                            source,
                        })?
                        .into()
                }
                None => create(dir, o)?,
            };
            e.insert(fd);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use images::pb::PagemapEntry;

    fn entry(vaddr: u64, nr_pages: u64, pages_off: u64, flags: u32) -> PagemapEntry {
        PagemapEntry {
            vaddr,
            nr_pages,
            pages_off,
            flags,
            part: 0,
        }
    }

    #[test]
    fn incremental_contents_resolve_through_the_parent_and_compare_by_page() {
        let tmp = tempfile::tempdir().unwrap();
        let head = PagemapHead {
            pages_id: pages::TREE_PAGES_ID,
        };
        // Parent: pages 0-1 hold 1 and 2, page 3 holds 4.
        let pdir = ImageDir::create(&tmp.path().join("pre")).unwrap();
        let pf = pdir.create_pages(pages::TREE_PAGES_ID).unwrap();
        for (k, v) in [1u8, 2, 4].iter().enumerate() {
            pf.write_all_at(&[*v; 4096], k as u64 * PAGE_SIZE).unwrap();
        }
        drop(pf);
        pdir.commit_pages(pages::TREE_PAGES_ID).unwrap();
        pdir.write_shmem_pagemap(
            3,
            &head,
            &[
                entry(0, 2, 0, PE_PRESENT),
                entry(3 * PAGE_SIZE, 1, 2, PE_PRESENT),
            ],
        )
        .unwrap();
        pdir.commit_sections().unwrap();
        // Child: page 0 in the parent, page 1 rewritten (9), page 3 in the parent.
        let cpath = tmp.path().join("dump");
        let cdir = ImageDir::create(&cpath).unwrap();
        std::os::unix::fs::symlink("../pre", cpath.join(images::PARENT_LINK)).unwrap();
        let cf = cdir.create_pages(pages::TREE_PAGES_ID).unwrap();
        cf.write_all_at(&[9u8; 4096], 0).unwrap();
        drop(cf);
        cdir.commit_pages(pages::TREE_PAGES_ID).unwrap();
        cdir.write_shmem_pagemap(
            3,
            &head,
            &[
                entry(0, 1, 0, PE_IN_PARENT),
                entry(PAGE_SIZE, 1, 0, PE_PRESENT),
                entry(3 * PAGE_SIZE, 1, 0, PE_IN_PARENT),
            ],
        )
        .unwrap();
        cdir.commit_sections().unwrap();
        let o = ShmemObject {
            id: 3,
            kind: ShmemKind::ShmemMemfd as i32,
            name: "chain".into(),
            size: 4 * PAGE_SIZE,
            ..Default::default()
        };
        let f = File::from(create(&cdir, &o).unwrap());
        let mut b = [0u8; 1];
        for (page, want) in [(0, 1u8), (1, 9), (2, 0), (3, 4)] {
            f.read_exact_at(&mut b, page * PAGE_SIZE + 7).unwrap();
            assert_eq!(b[0], want, "page {page}");
        }
        // A dump against the child: only the page written since differs.
        let theirs = ParentData::open(resolve(&cdir, 3, o.size, 0).unwrap()).unwrap();
        f.write_all_at(&[5u8; 4096], 3 * PAGE_SIZE).unwrap();
        let same = theirs.same_pages(&f, 0, 4 * PAGE_SIZE, o.size).unwrap();
        assert_eq!(
            same,
            vec![Same::InParent, Same::InParent, Same::Zero, Same::Differs]
        );
        // A parent link missing: an error naming the image, no panic.
        std::fs::remove_file(cpath.join(images::PARENT_LINK)).unwrap();
        let cdir = ImageDir::open(&cpath).unwrap();
        assert!(matches!(
            resolve(&cdir, 3, o.size, 0),
            Err(RestoreError::BadImage { .. })
        ));
    }

    #[test]
    fn data_ranges_follow_written_pages() {
        let f = File::from(sysmem::memfd("crust-test").unwrap());
        f.set_len(64 * PAGE_SIZE + 100).unwrap();
        f.write_all_at(b"x", 3 * PAGE_SIZE + 5).unwrap();
        f.write_all_at(&[1u8; 8192], 10 * PAGE_SIZE).unwrap();
        f.write_all_at(b"tail", 64 * PAGE_SIZE + 10).unwrap();
        let r = data_ranges(&f, 64 * PAGE_SIZE + 100).unwrap();
        assert_eq!(
            r,
            vec![
                (3 * PAGE_SIZE, 4 * PAGE_SIZE),
                (10 * PAGE_SIZE, 12 * PAGE_SIZE),
                (64 * PAGE_SIZE, 65 * PAGE_SIZE)
            ]
        );
    }

    #[test]
    fn created_objects_hold_their_contents_and_size() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ImageDir::create(tmp.path()).unwrap();
        let pf = dir.create_pages(pages::TREE_PAGES_ID).unwrap();
        pf.write_all_at(&[7u8; 4096], 0).unwrap();
        pf.write_all_at(&[9u8; 4096], 4096).unwrap();
        drop(pf);
        dir.commit_pages(pages::TREE_PAGES_ID).unwrap();
        let head = PagemapHead {
            pages_id: pages::TREE_PAGES_ID,
        };
        let entries = [PagemapEntry {
            vaddr: 2 * PAGE_SIZE,
            nr_pages: 2,
            pages_off: 0,
            flags: PE_PRESENT,
            part: 0,
        }];
        dir.write_shmem_pagemap(1, &head, &entries).unwrap();
        let o = ShmemObject {
            id: 1,
            kind: ShmemKind::ShmemMemfd as i32,
            name: "probe".into(),
            size: 3 * PAGE_SIZE + 10,
            seals: libc::F_SEAL_GROW as u32,
            ino: 0,
        };
        let f = File::from(create(&dir, &o).unwrap());
        assert_eq!(f.metadata().unwrap().len(), 3 * PAGE_SIZE + 10);
        let mut b = [0u8; 2];
        f.read_exact_at(&mut b, 2 * PAGE_SIZE).unwrap();
        assert_eq!(b, [7, 7]);
        f.read_exact_at(&mut b, 3 * PAGE_SIZE + 8).unwrap();
        assert_eq!(b, [9, 9]);
        assert_eq!(
            sysmem::get_seals(f.as_raw_fd()).unwrap() & libc::F_SEAL_GROW as u32,
            libc::F_SEAL_GROW as u32
        );
        // An anonymous one.
        let a = ShmemObject {
            id: 1,
            kind: ShmemKind::ShmemAnon as i32,
            size: 4 * PAGE_SIZE,
            ..Default::default()
        };
        let f = File::from(create(&dir, &a).unwrap());
        f.read_exact_at(&mut b, 3 * PAGE_SIZE).unwrap();
        assert_eq!(b, [9, 9]);
        let link = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap();
        assert_eq!(link.to_string_lossy(), "/dev/zero (deleted)");
        // Past the end of the object.
        let small = ShmemObject {
            size: PAGE_SIZE,
            ..a
        };
        assert!(matches!(
            create(&dir, &small),
            Err(RestoreError::BadImage { .. })
        ));
    }
}
