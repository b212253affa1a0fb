//! Memory: the VMA list, mm fields, and page contents, both directions.
//!
//! Dump finds the pages worth saving with `PAGEMAP_SCAN` (Linux 6.7): present or swapped, not the
//! shared zero page, and for private file mappings only the pages that were copied on write
//! (not `PAGE_IS_FILE`). Contents leave the frozen task with `process_vm_readv` (one copy) or,
//! for areas the task itself cannot read (PROT_NONE), through `/proc/PID/mem`; several threads
//! copy disjoint runs to their precomputed offsets of the pages image.
//!
//! Restore rebuilds the layout with remote `mmap`s inside the restored task and fills each run
//! of pages with a remote `preadv` from the pages image: the kernel copies straight from the
//! page cache into the task, so crust never touches the data.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use images::pb::{FileId, MmEntry, PagemapEntry, VmaEntry, VmaKind};
use images::PAGE_SIZE;
use parasite::Tracee;

use crate::error::{DumpError, RestoreError};
use crate::proc::{self, Stat, Vma};
use crate::sys;

/// Pages of one VMA that must be saved: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub start: u64,
    pub end: u64,
    /// The task can read it itself (process_vm_readv works); else go through /proc/PID/mem.
    pub readable: bool,
}

pub(crate) fn vma_kind(v: &Vma) -> VmaKind {
    match v.name.as_str() {
        "[vdso]" => VmaKind::VmaVdso,
        "[vvar]" => VmaKind::VmaVvar,
        "[vvar_vclock]" => VmaKind::VmaVvarVclock,
        "[vsyscall]" => VmaKind::VmaVsyscall,
        "[heap]" => VmaKind::VmaHeap,
        "[stack]" => VmaKind::VmaStack,
        _ if v.ino != 0 && v.shared => VmaKind::VmaFileShared,
        _ if v.ino != 0 => VmaKind::VmaFilePrivate,
        _ if v.shared => VmaKind::VmaAnonShared,
        _ => VmaKind::VmaAnonPrivate,
    }
}

fn mmap_flags(v: &Vma, kind: VmaKind) -> u32 {
    let mut f = if v.shared {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    };
    if !matches!(kind, VmaKind::VmaFilePrivate | VmaKind::VmaFileShared) {
        f |= libc::MAP_ANONYMOUS;
    }
    if v.has_flag("gd") {
        f |= libc::MAP_GROWSDOWN;
    }
    if v.has_flag("nr") {
        f |= libc::MAP_NORESERVE;
    }
    f as u32
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
    match vma_kind(v) {
        VmaKind::VmaAnonShared => Err(unsupported("shared anonymous memory")),
        VmaKind::VmaFilePrivate | VmaKind::VmaFileShared if v.name.ends_with(" (deleted)") => {
            Err(unsupported("the mapped file is deleted"))
        }
        VmaKind::VmaFilePrivate | VmaKind::VmaFileShared if !v.name.starts_with('/') => {
            Err(unsupported("mapping of an unnamed file"))
        }
        _ => Ok(()),
    }
}

/// Builds the mm image of `pid` from its VMAs (with VmFlags attached) and mm fields.
pub(crate) fn dump_layout(
    pid: i32,
    stat: &Stat,
    brk: u64,
    vmas: &[Vma],
) -> Result<MmEntry, DumpError> {
    let mut entries = Vec::with_capacity(vmas.len());
    for v in vmas {
        let kind = vma_kind(v);
        let unsupported = |why| DumpError::UnsupportedVma {
            pid,
            start: v.start,
            end: v.end,
            name: v.name.clone(),
            why,
        };
        check_dumpable(pid, v)?;
        let file = match kind {
            VmaKind::VmaFilePrivate | VmaKind::VmaFileShared => {
                let through = format!("/proc/{pid}/map_files/{:x}-{:x}", v.start, v.end);
                let id = file_id(&v.name, &through).map_err(|source| DumpError::Io {
                    pid,
                    path: through.into(),
                    source,
                })?;
                match std::fs::metadata(&v.name) {
                    Ok(md) if md.dev() == id.dev && md.ino() == id.ino => {}
                    _ => return Err(unsupported("the path now names another file")),
                }
                Some(id)
            }
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
        });
    }
    let auxv_raw = proc::read_bytes(format!("/proc/{pid}/auxv"))?;
    let auxv = auxv_raw
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("8-byte chunk")))
        .collect();
    let exe_link = format!("/proc/{pid}/exe");
    let exe_path = proc::readlink(&exe_link)?;
    let exe = file_id(&exe_path, &exe_link).map_err(|source| DumpError::Io {
        pid,
        path: exe_link.into(),
        source,
    })?;
    let mm = MmEntry {
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
    };
    Ok(mm)
}

/// Finds the runs of pages to save in every VMA.
pub(crate) fn scan(pid: i32, vmas: &[Vma]) -> Result<Vec<Run>, DumpError> {
    let path = PathBuf::from(format!("/proc/{pid}/pagemap"));
    let pagemap = File::open(&path).map_err(|source| DumpError::Io {
        pid,
        path: path.clone(),
        source,
    })?;
    let mut runs = Vec::new();
    let mut regions = Vec::new();
    for v in vmas {
        let kind = vma_kind(v);
        let excluded = match kind {
            VmaKind::VmaAnonPrivate | VmaKind::VmaHeap | VmaKind::VmaStack => sys::PAGE_IS_PFNZERO,
            VmaKind::VmaFilePrivate => sys::PAGE_IS_PFNZERO | sys::PAGE_IS_FILE,
            _ => continue,
        };
        regions.clear();
        let filter = sys::ScanFilter {
            required: 0,
            excluded,
            anyof: sys::PAGE_IS_PRESENT | sys::PAGE_IS_SWAPPED,
        };
        sys::pagemap_scan(pagemap.as_raw_fd(), v.start, v.end, filter, &mut regions).map_err(
            |source| DumpError::Io {
                pid,
                path: path.clone(),
                source,
            },
        )?;
        // Runs never cross a VMA boundary: restore checks each lies inside one mapping.
        runs.extend(regions.iter().map(|r| Run {
            start: r.start,
            end: r.end,
            readable: v.read,
        }));
    }
    Ok(runs)
}

/// Pagemap entries for `runs` laid out one after another in the pages image.
pub(crate) fn pagemap_entries(runs: &[Run]) -> Vec<PagemapEntry> {
    let mut off = 0;
    runs.iter()
        .map(|r| {
            let nr = (r.end - r.start) / PAGE_SIZE;
            let e = PagemapEntry {
                vaddr: r.start,
                nr_pages: nr,
                pages_off: off,
                flags: images::PE_PRESENT,
            };
            off += nr;
            e
        })
        .collect()
}

const COPY_CHUNK: u64 = 4 << 20;

/// Copies the runs' contents from the frozen task into `out` at their pagemap offsets, with
/// one copy per byte on the way out (process_vm_readv), spread over the available cores.
pub(crate) fn copy_pages(pid: i32, runs: &[Run], out: &File) -> Result<(), DumpError> {
    let mut chunks = Vec::new();
    let mut off = 0u64;
    for r in runs {
        let mut a = r.start;
        while a < r.end {
            let len = (r.end - a).min(COPY_CHUNK);
            chunks.push((a, len, off, r.readable));
            a += len;
            off += len;
        }
    }
    let total = off;
    out.set_len(total).map_err(|source| DumpError::Io {
        pid,
        path: "pages image".into(),
        source,
    })?;
    let mem_path = format!("/proc/{pid}/mem");
    let mem = File::open(&mem_path).map_err(|source| DumpError::Io {
        pid,
        path: mem_path.clone().into(),
        source,
    })?;
    crate::par::for_each(
        &chunks,
        total,
        || vec![0u8; COPY_CHUNK as usize],
        |buf, &(addr, len, off, readable)| {
            let b = &mut buf[..len as usize];
            let io_err = |source| DumpError::Io {
                pid,
                path: format!("{mem_path} at {addr:#x}").into(),
                source,
            };
            let got = if readable {
                sys::process_vm_read(pid, addr, b).map_err(io_err)?
            } else {
                0
            };
            if got < b.len() {
                mem.read_exact_at(&mut b[got..], addr + got as u64)
                    .map_err(io_err)?;
            }
            out.write_all_at(b, off).map_err(|source| DumpError::Io {
                pid,
                path: "pages image".into(),
                source,
            })
        },
    )
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
#[derive(Debug, Clone)]
pub(crate) struct MmFds {
    /// fd of each mapped file, by path.
    pub files: Vec<(String, i32)>,
    pub exe: i32,
}

/// Special mappings the kernel gave the restore child (`[vvar]`, `[vvar_vclock]`, `[vdso]`).
fn special_kind(name: &str) -> Option<VmaKind> {
    match name {
        "[vdso]" => Some(VmaKind::VmaVdso),
        "[vvar]" => Some(VmaKind::VmaVvar),
        "[vvar_vclock]" => Some(VmaKind::VmaVvarVclock),
        _ => None,
    }
}

/// Replaces the address space of the restore child with the saved one. On return the task
/// holds every saved VMA with its final protection and contents, and the trampoline.
pub(crate) fn restore(
    t: &mut Tracee,
    pid: i32,
    mm: &MmEntry,
    pagemap: &[PagemapEntry],
    fds: &MmFds,
    pages: Option<&Path>,
    tramp: (u64, u64),
) -> Result<(), RestoreError> {
    let layout = |what: String| RestoreError::Layout { pid, what };
    let current = proc::maps(pid)?;
    // 1. Drop everything of the child's own layout except the trampoline and the vDSO family.
    let keep: Vec<(u64, u64)> = current
        .iter()
        .filter(|v| special_kind(&v.name).is_some() || (v.start >= tramp.0 && v.end <= tramp.1))
        .map(|v| (v.start, v.end))
        .collect();
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
        rsys(t, pid, libc::SYS_munmap, [s, e - s, 0, 0, 0, 0], || {
            format!("munmap {s:#x}-{e:#x}")
        })?;
    }
    // 2. Move the vDSO family to its saved place. Every saved special mapping must exist here
    // with the same size: the same kernel made both.
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
    for v in &current {
        let Some(kind) = special_kind(&v.name) else {
            continue;
        };
        match saved_special.iter().find(|s| s.kind() == kind) {
            Some(s) if s.end - s.start == v.len() => moves.push((v.start, v.len(), s.start)),
            Some(s) => {
                return Err(layout(format!(
                    "{} is {} bytes here but {} bytes in the image (a different kernel)",
                    v.name,
                    v.len(),
                    s.end - s.start
                )))
            }
            None => {
                rsys(
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
        for &(from, len, to) in &moves {
            mremap(t, pid, from, len, to)?;
        }
        moves.clear();
    }
    let staging = find_free(mm, &current, tramp, moves.iter().map(|m| m.1).sum())
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
    for v in &mm.vmas {
        let kind = v.kind();
        let len = v.end - v.start;
        let fd = match kind {
            VmaKind::VmaVdso | VmaKind::VmaVvar | VmaKind::VmaVvarVclock | VmaKind::VmaVsyscall => {
                continue
            }
            VmaKind::VmaFilePrivate | VmaKind::VmaFileShared => {
                let path = v.file.as_ref().map(|f| f.path.as_str()).unwrap_or("");
                fds.files
                    .iter()
                    .find(|(p, _)| p == path)
                    .map(|(_, fd)| *fd as u64)
                    .ok_or_else(|| layout(format!("no descriptor for mapped file {path}")))?
            }
            _ => u64::MAX,
        };
        let needs_fill = pagemap
            .iter()
            .any(|e| e.vaddr < v.end && e.vaddr + e.nr_pages * PAGE_SIZE > v.start);
        let prot = if needs_fill && kind != VmaKind::VmaFileShared {
            v.prot | (libc::PROT_READ | libc::PROT_WRITE) as u32
        } else {
            v.prot
        };
        let flags = v.flags | libc::MAP_FIXED as u32;
        rsys(
            t,
            pid,
            libc::SYS_mmap,
            [v.start, len, prot as u64, flags as u64, fd, v.pgoff],
            || format!("mmap {:#x}-{:#x}", v.start, v.end),
        )?;
        if prot != v.prot {
            to_protect.push(v);
        }
        for (flag, advice) in [
            ("hg", libc::MADV_HUGEPAGE),
            ("nh", libc::MADV_NOHUGEPAGE),
            ("dc", libc::MADV_DONTFORK),
            ("dd", libc::MADV_DONTDUMP),
            ("wf", libc::MADV_WIPEONFORK),
        ] {
            if v.vm_flags.iter().any(|f| f == flag) {
                rsys(
                    t,
                    pid,
                    libc::SYS_madvise,
                    [v.start, len, advice as u64, 0, 0, 0],
                    || format!("madvise {flag} {:#x}-{:#x}", v.start, v.end),
                )?;
            }
        }
    }
    // 4. Contents.
    if let Some(p) = pages {
        fill_pages(pid, p, pagemap)?;
    }
    // 5. Final protections.
    for v in to_protect {
        rsys(
            t,
            pid,
            libc::SYS_mprotect,
            [v.start, v.end - v.start, v.prot as u64, 0, 0, 0],
            || format!("mprotect {:#x}-{:#x}", v.start, v.end),
        )?;
    }
    Ok(())
}

fn mremap(t: &mut Tracee, pid: i32, from: u64, len: u64, to: u64) -> Result<(), RestoreError> {
    if from == to {
        return Ok(());
    }
    let got = rsys(
        t,
        pid,
        libc::SYS_mremap,
        [
            from,
            len,
            len,
            (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
            to,
            0,
        ],
        || format!("mremap {from:#x} to {to:#x}"),
    )?;
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

/// Fills the task's pages from the pages image: crust maps the image and copies into the
/// task with `process_vm_writev` from several threads, so the first touch of the restored
/// memory (page allocation, the dominant cost) runs on every core at once.
pub(crate) fn fill_pages(
    pid: i32,
    pages: &Path,
    pagemap: &[PagemapEntry],
) -> Result<(), RestoreError> {
    let file = File::open(pages).map_err(|source| RestoreError::File {
        path: pages.display().to_string(),
        source,
    })?;
    let mut chunks = Vec::new();
    for e in pagemap {
        let len = e.nr_pages * PAGE_SIZE;
        let mut done = 0;
        while done < len {
            let n = (len - done).min(FILL_CHUNK);
            chunks.push((e.vaddr + done, e.pages_off * PAGE_SIZE + done, n));
            done += n;
        }
    }
    let fd = file.as_raw_fd();
    let total = chunks.iter().map(|c| c.2).sum();
    crate::par::for_each(
        &chunks,
        total,
        || (),
        |_, &(vaddr, off, len)| {
            let io = |source| RestoreError::File {
                path: format!("{} at offset {off}", pages.display()),
                source,
            };
            let map = sys::Mapped::file(fd, off, len as usize).map_err(io)?;
            let data = map.as_slice();
            let mut done = 0;
            while done < data.len() {
                let at = vaddr + done as u64;
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

const FILL_CHUNK: u64 = 8 << 20;
