//! Copy-on-write sharing between a parent and its children, restored by inheritance.
//!
//! After fork, parent and child share their private pages until one of them writes. The dump
//! stores such a page once and points the child's pagemap at the parent's copy (see
//! [`super::pages`]). Writing that page into each task separately would double the memory
//! the tree uses, so restore recreates the sharing the only way the kernel allows: the child
//! inherits the mapping through fork.
//!
//! Tasks are forked by crust's own code ([`crate::restore`]) long before crust takes each one
//! over, so the inherited areas are prepared in that window: planned here in crust, they are
//! mapped by each task itself, on its own address space (a copy of crust's), *before* it forks
//! its children:
//!
//! - a parent maps every area that one of its children shares (same range, same flags, at
//!   least one page stored at the same place in the images) with `MAP_FIXED_NOREPLACE`, and
//!   fills it with `pread` from the pages file;
//! - a child finds its parent's areas in its own address space after fork; it keeps those it
//!   shares, writes the pages where its image differs and drops (`MADV_DONTNEED`) those it
//!   does not have; it unmaps the parent's areas it does not share.
//!
//! Siblings may share pages their parent no longer holds (it unmapped or rewrote them after
//! forking them). The dump compares a task's pages with its siblings' too, so such a page is
//! stored once; restore makes the parent a *carrier*: it maps and fills the area with the first
//! sibling's contents as above, the siblings inherit it, and the parent's own take-over unmaps
//! it like any memory that is not its own. A carrier is not made where the parent prepares an
//! area of its own over the same range (that sharing is then restored unshared), and only
//! siblings are linked so, not cousins.
//!
//! Each area has a status word in memory shared by crust and every task: set by the task that
//! prepared it, read by its children (inherit or not) and by crust's take-over, which keeps an
//! area in place instead of mapping and filling it again. An area that could not be prepared
//! (its range taken by crust's own memory in the task, say) is simply restored the ordinary
//! way, unshared: correct, only larger.

use std::collections::HashMap;
use std::sync::Arc;

use images::pb::{MmEntry, VmaEntry, VmaKind};
use images::PAGE_SIZE;

use super::pages::{PageFiles, Run, TaskPages};
use crate::sys::mem::child;
use crate::sys::SharedWords;

const MADV_POPULATE_WRITE: i32 = 23;

/// Status of an area: prepared, holding the task's contents.
pub(crate) const IN_PLACE: u32 = 1;
/// Status of an area: not prepared; nothing of it is mapped by the restore.
pub(crate) const NOT_PLACED: u32 = 2;

/// One step of preparing an area in the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `pread(fd, addr, len, off)`
    Fill {
        addr: u64,
        len: u64,
        fd: i32,
        off: u64,
    },
    /// `madvise(addr, len, MADV_DONTNEED)`: the task has no page there.
    Zap { addr: u64, len: u64 },
}

/// An area a task prepares before it forks.
#[derive(Debug, Clone)]
pub(crate) struct Area {
    pub start: u64,
    pub end: u64,
    /// mmap flags of the VMA (`MAP_PRIVATE | MAP_ANONYMOUS | ...`).
    pub flags: i32,
    /// Kept apart from the VMA before it (see [`super::keep_apart`]).
    pub apart: bool,
    /// The task has no page at the area's start (faulted in only to keep it apart).
    pub first_page_empty: bool,
    /// madvise advice to give right after mapping (huge page policy).
    pub advice: Vec<i32>,
    /// This area's status word.
    pub word: usize,
    /// The parent's status word for the same area, when the task inherits it.
    pub inherit: Option<usize>,
    /// A child inherits it, so it must be prepared even if not inherited.
    pub needed: bool,
    /// Not the task's own memory: prepared only for its children to inherit, and left to
    /// the task's take-over to unmap.
    pub carrier: bool,
    /// Steps when inherited: the pages that differ from the parent's.
    pub fix: Vec<Op>,
    /// Steps when mapped afresh: all the task's pages of the area.
    pub fresh: Vec<Op>,
}

/// What one task prepares, and the parent's areas it must drop.
#[derive(Clone, Default)]
pub(crate) struct Premap {
    /// The parent's areas this task does not share: (start, end, parent's word).
    pub drop: Vec<(u64, u64, usize)>,
    pub areas: Vec<Area>,
    pub words: Option<Arc<SharedWords>>,
}

impl Premap {
    /// Whether the area `[start, end)` was prepared by the task and holds its contents.
    pub fn in_place(&self, start: u64, end: u64) -> bool {
        let Some(words) = &self.words else {
            return false;
        };
        self.areas.iter().any(|a| {
            !a.carrier && a.start == start && a.end == end && words.get(a.word) == IN_PLACE
        })
    }

    /// The descriptors (pages files of crust's) the task reads its areas from.
    pub fn fds(&self) -> impl Iterator<Item = i32> + '_ {
        self.areas
            .iter()
            .flat_map(|a| a.fix.iter().chain(&a.fresh))
            .filter_map(|op| match *op {
                Op::Fill { fd, .. } => Some(fd),
                _ => None,
            })
    }

    /// The prepared areas, in place.
    pub fn placed(&self) -> Vec<(u64, u64)> {
        let Some(words) = &self.words else {
            return Vec::new();
        };
        self.areas
            .iter()
            .filter(|a| !a.carrier && words.get(a.word) == IN_PLACE)
            .map(|a| (a.start, a.end))
            .collect()
    }
}

impl std::fmt::Debug for Premap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Premap")
            .field("drop", &self.drop)
            .field("areas", &self.areas)
            .finish()
    }
}

/// A task of the tree as the plan sees it: its parent's index and, when alive, its layout
/// and pages.
pub(crate) struct PlanTask<'a> {
    pub parent: Option<usize>,
    pub image: Option<(&'a MmEntry, &'a TaskPages)>,
}

/// The tasks of a dump whose pages a task with parent `ppid` may still share since fork, among
/// those already dumped (`done`): its parent, then its siblings (`children`: the parent's
/// children, see [`children_of`]). Empty when the parent is not in the dump (the root of the
/// tree).
pub(crate) fn relatives(ppid: i32, children: &[i32], done: impl Fn(i32) -> bool) -> Vec<i32> {
    if !done(ppid) {
        return Vec::new();
    }
    std::iter::once(ppid)
        .chain(children.iter().copied().filter(|&c| c != ppid && done(c)))
        .collect()
}

/// The children of `pid`, of all its threads, in the order /proc shows them.
/// The processes of the tree of `root` as it is now, with their mappings, `root` first: read
/// while it runs, for the work a dump does before freezing it (best effort: a process gone
/// or unreadable meanwhile is left out).
pub(crate) fn running_tree(root: i32) -> Vec<(i32, Vec<crate::proc::Vma>)> {
    let mut out = Vec::new();
    let mut queue = vec![root];
    let mut seen = std::collections::HashSet::new();
    while let Some(pid) = queue.pop() {
        if seen.insert(pid) {
            if let Ok(vmas) = crate::proc::maps(pid) {
                out.push((pid, vmas));
            }
            queue.extend(children_of(pid));
        }
    }
    out
}

pub(crate) fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for tid in crate::proc::threads(pid).unwrap_or_default() {
        out.extend(crate::proc::children(pid, tid).unwrap_or_default());
    }
    out
}

fn candidate(v: &VmaEntry) -> bool {
    matches!(
        v.kind(),
        VmaKind::VmaAnonPrivate | VmaKind::VmaHeap | VmaKind::VmaStack
    ) && v.flags & 0x0f == libc::MAP_PRIVATE as u32
}

/// Whether some page of `[start, end)` is stored at the same place for both.
fn shares(a: &TaskPages, b: &TaskPages, start: u64, end: u64) -> bool {
    let bs: Vec<Run> = b.within(start, end).collect();
    let mut j = 0;
    for r in a.within(start, end) {
        while j < bs.len() && bs[j].end() <= r.vaddr {
            j += 1;
        }
        let mut k = j;
        while k < bs.len() && bs[k].vaddr < r.end() {
            let q = bs[k];
            let s = r.vaddr.max(q.vaddr);
            if q.file == r.file && q.off + (s - q.vaddr) == r.off + (s - r.vaddr) {
                return true;
            }
            k += 1;
        }
    }
    false
}

fn fd_of(files: &PageFiles, file: u32) -> i32 {
    use std::os::fd::AsRawFd;
    files.get(file).1.as_raw_fd()
}

/// Steps that turn the parent's contents of `[start, end)` into the child's: pages stored at
/// another place are written, pages the child lacks are dropped.
fn fix_ops(
    child: &TaskPages,
    parent: &TaskPages,
    start: u64,
    end: u64,
    files: &PageFiles,
) -> Vec<Op> {
    // Page by page over the union of both run lists; areas are small enough in practice
    // (and runs long), so walk run boundaries rather than pages.
    let mut cuts: Vec<u64> = vec![start, end];
    let c: Vec<Run> = child.within(start, end).collect();
    let p: Vec<Run> = parent.within(start, end).collect();
    for r in c.iter().chain(&p) {
        cuts.push(r.vaddr);
        cuts.push(r.end());
    }
    cuts.sort_unstable();
    cuts.dedup();
    let at = |runs: &[Run], a: u64| -> Option<(u32, u64)> {
        let i = runs.partition_point(|r| r.end() <= a);
        runs.get(i)
            .filter(|r| r.vaddr <= a)
            .map(|r| (r.file, r.off + (a - r.vaddr)))
    };
    let mut ops: Vec<Op> = Vec::new();
    for w in cuts.windows(2) {
        let (s, e) = (w[0], w[1]);
        if s >= e {
            continue;
        }
        let op = match (at(&c, s), at(&p, s)) {
            (Some(x), Some(y)) if x == y => None,
            (Some((file, off)), _) => Some(Op::Fill {
                addr: s,
                len: e - s,
                fd: fd_of(files, file),
                off,
            }),
            (None, Some(_)) => Some(Op::Zap {
                addr: s,
                len: e - s,
            }),
            (None, None) => None,
        };
        let Some(op) = op else { continue };
        match (ops.last_mut(), op) {
            (
                Some(Op::Fill { addr, len, fd, off }),
                Op::Fill {
                    addr: a2,
                    len: l2,
                    fd: f2,
                    off: o2,
                },
            ) if *addr + *len == a2 && *fd == f2 && *off + *len == o2 => *len += l2,
            (Some(Op::Zap { addr, len }), Op::Zap { addr: a2, len: l2 }) if *addr + *len == a2 => {
                *len += l2
            }
            _ => ops.push(op),
        }
    }
    ops
}

fn fresh_ops(pages: &TaskPages, start: u64, end: u64, files: &PageFiles) -> Vec<Op> {
    pages
        .within(start, end)
        .map(|r| Op::Fill {
            addr: r.vaddr,
            len: r.len,
            fd: fd_of(files, r.file),
            off: r.off,
        })
        .collect()
}

fn advice(v: &VmaEntry) -> Vec<i32> {
    let mut a = Vec::new();
    if v.vm_flags.iter().any(|f| f == "hg") {
        a.push(libc::MADV_HUGEPAGE);
    }
    if v.vm_flags.iter().any(|f| f == "nh") {
        a.push(libc::MADV_NOHUGEPAGE);
    }
    a
}

/// The areas planned so far, and the status words they take.
struct Planner {
    out: Vec<Premap>,
    words: usize,
    /// (task, VMA start) -> index of the task's own area in `out[task].areas`.
    own: HashMap<(usize, u64), usize>,
}

impl Planner {
    /// A new area of task `t` for `v` (of the layout `mm`, with contents `pages`); `carrier`
    /// when it is not the task's own memory.
    fn push(
        &mut self,
        t: usize,
        (mm, pages): (&MmEntry, &TaskPages),
        v: &VmaEntry,
        carrier: bool,
        files: &PageFiles,
    ) -> usize {
        self.out[t].areas.push(Area {
            start: v.start,
            end: v.end,
            flags: v.flags as i32,
            apart: {
                let i = mm.vmas.iter().position(|x| x.start == v.start).unwrap_or(0);
                i > 0 && super::keep_apart(mm.vmas.get(i - 1), v)
            },
            first_page_empty: pages.within(v.start, v.start + PAGE_SIZE).next().is_none(),
            advice: advice(v),
            word: self.words,
            inherit: None,
            needed: carrier,
            carrier,
            fix: Vec::new(),
            fresh: fresh_ops(pages, v.start, v.end, files),
        });
        self.words += 1;
        self.out[t].areas.len() - 1
    }

    /// Task `t`'s own area for `v`, made on first use.
    fn ensure(
        &mut self,
        t: usize,
        image: (&MmEntry, &TaskPages),
        v: &VmaEntry,
        files: &PageFiles,
    ) -> usize {
        if let Some(&i) = self.own.get(&(t, v.start)) {
            return i;
        }
        let i = self.push(t, image, v, false, files);
        self.own.insert((t, v.start), i);
        i
    }

    /// The own area of `t` at `start`, if it inherits one.
    fn inherited(&self, t: usize, start: u64) -> bool {
        self.own
            .get(&(t, start))
            .is_some_and(|&i| self.out[t].areas[i].inherit.is_some())
    }
}

/// The VMA of `other` that is the same candidate as `v`.
fn same_vma<'a>(v: &VmaEntry, other: &'a MmEntry) -> Option<&'a VmaEntry> {
    other
        .vmas
        .iter()
        .find(|u| u.start == v.start && u.end == v.end && u.flags == v.flags && candidate(u))
}

/// Plans which areas each task prepares. `tasks` is in tree order (parents first), indexed
/// like the result.
///
/// A child shares an area with its parent when some page of it is stored at the same place
/// for both (the dump found the same physical page): the parent prepares the area and the
/// child inherits it. Siblings that share an area their parent does not hold (the parent
/// unmapped or rewrote it after forking them) inherit it from a *carrier*: the parent maps the
/// area with the first sibling's contents before forking them, without it being part of its
/// own memory: its own take-over unmaps it, leaving the siblings the only holders of the
/// pages, as they were at dump.
pub(crate) fn plan(tasks: &[PlanTask<'_>], files: &PageFiles) -> std::io::Result<Vec<Premap>> {
    let mut pl = Planner {
        out: (0..tasks.len()).map(|_| Premap::default()).collect(),
        words: 0,
        own: HashMap::new(),
    };
    // Child and parent.
    for (t, task) in tasks.iter().enumerate() {
        let (Some(p), Some((mm, pages))) = (task.parent, task.image) else {
            continue;
        };
        let Some((pmm, ppages)) = tasks[p].image else {
            continue;
        };
        for v in mm.vmas.iter().filter(|v| candidate(v)) {
            let Some(u) = same_vma(v, pmm) else {
                continue;
            };
            if !shares(pages, ppages, v.start, v.end) {
                continue;
            }
            let pa = pl.ensure(p, (pmm, ppages), u, files);
            pl.out[p].areas[pa].needed = true;
            let pword = pl.out[p].areas[pa].word;
            let ca = pl.ensure(t, (mm, pages), v, files);
            pl.out[t].areas[ca].inherit = Some(pword);
            pl.out[t].areas[ca].fix = fix_ops(pages, ppages, v.start, v.end, files);
        }
    }
    // Siblings, through a carrier in their parent: (parent, start, end, flags) -> (area index
    // in the parent, the pages of the sibling whose contents it holds).
    let mut carriers: HashMap<(usize, u64, u64, u32), (usize, &TaskPages)> = HashMap::new();
    for (t, task) in tasks.iter().enumerate() {
        let (Some(p), Some((mm, pages))) = (task.parent, task.image) else {
            continue;
        };
        if tasks[p].image.is_none() {
            continue;
        }
        for v in mm.vmas.iter().filter(|v| candidate(v)) {
            if pl.inherited(t, v.start) {
                continue;
            }
            let key = (p, v.start, v.end, v.flags);
            let (carrier, dpages) = match carriers.get(&key) {
                Some(&(ci, dpages)) => {
                    if !shares(pages, dpages, v.start, v.end) {
                        continue;
                    }
                    (ci, dpages)
                }
                None => {
                    // The first earlier sibling with the same area, not inherited from the
                    // parent, sharing a page with this one.
                    let donor = (0..t).find_map(|d| {
                        let (Some(dp), Some((dmm, dpages))) = (tasks[d].parent, tasks[d].image)
                        else {
                            return None;
                        };
                        let dv = same_vma(v, dmm)?;
                        (dp == p
                            && !pl.inherited(d, v.start)
                            && shares(pages, dpages, v.start, v.end))
                        .then_some((d, dmm, dpages, dv))
                    });
                    let Some((d, dmm, dpages, dv)) = donor else {
                        continue;
                    };
                    // Never over an area the parent prepares anyway.
                    if pl.out[p]
                        .areas
                        .iter()
                        .any(|a| a.start < v.end && v.start < a.end)
                    {
                        continue;
                    }
                    let ci = pl.push(p, (dmm, dpages), dv, true, files);
                    carriers.insert(key, (ci, dpages));
                    let cword = pl.out[p].areas[ci].word;
                    let da = pl.ensure(d, (dmm, dpages), dv, files);
                    pl.out[d].areas[da].inherit = Some(cword);
                    pl.out[d].areas[da].fix = Vec::new();
                    (ci, dpages)
                }
            };
            let cword = pl.out[p].areas[carrier].word;
            let ca = pl.ensure(t, (mm, pages), v, files);
            pl.out[t].areas[ca].inherit = Some(cword);
            pl.out[t].areas[ca].fix = fix_ops(pages, dpages, v.start, v.end, files);
        }
    }
    let Planner { mut out, words, .. } = pl;
    if words == 0 {
        return Ok(out);
    }
    // Drops: every parent area the child does not inherit.
    for (t, task) in tasks.iter().enumerate() {
        let Some(p) = task.parent else { continue };
        let inherited: Vec<usize> = out[t].areas.iter().filter_map(|a| a.inherit).collect();
        let drop: Vec<(u64, u64, usize)> = out[p]
            .areas
            .iter()
            .filter(|a| !inherited.contains(&a.word))
            .map(|a| (a.start, a.end, a.word))
            .collect();
        out[t].drop = drop;
    }
    let shared = Arc::new(SharedWords::new(words)?);
    for p in &mut out {
        p.words = Some(shared.clone());
    }
    Ok(out)
}

fn run(ops: &[Op]) -> Result<(), i32> {
    for op in ops {
        match *op {
            Op::Fill { addr, len, fd, off } => child::read_into(fd, addr, len, off)?,
            Op::Zap { addr, len } => child::advise(addr, len, libc::MADV_DONTNEED)?,
        }
    }
    Ok(())
}

/// Maps `a` afresh at its place, never over anything (crust's own memory in the task).
fn map_fresh(a: &Area) -> Result<(), i32> {
    let len = a.end - a.start;
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let flags = a.flags & !libc::MAP_ANONYMOUS & !libc::MAP_FIXED;
    child::map_anon_at(a.start, len, prot, flags)?;
    if a.apart {
        // Mapped elsewhere (not in its place, taken) and moved in over it, so that it does not
        // merge with the area before it.
        // Faulted in: an area without anon_vma takes the page offset of wherever it moves.
        let at = match child::map_anon_anywhere(len, prot, flags).and_then(|at| {
            child::advise(at, PAGE_SIZE, MADV_POPULATE_WRITE)
                .map(|_| at)
                .inspect_err(|_| {
                    let _ = child::unmap(at, len);
                })
        }) {
            Ok(at) => at,
            Err(e) => {
                let _ = child::unmap(a.start, len);
                return Err(e);
            }
        };
        if let Err(e) = child::move_to(at, len, a.start) {
            let _ = child::unmap(at, len);
            let _ = child::unmap(a.start, len);
            return Err(e);
        }
    }
    Ok(())
}

/// Runs in the restore child, on its own address space, before it forks its children.
pub(crate) fn prepare(p: &Premap) {
    let Some(words) = &p.words else {
        return;
    };
    for &(start, end, word) in &p.drop {
        if words.get(word) == IN_PLACE {
            let _ = child::unmap(start, end - start);
        }
    }
    for a in &p.areas {
        let inherited = a.inherit.is_some_and(|w| words.get(w) == IN_PLACE);
        let len = a.end - a.start;
        let ok = if inherited {
            let r = run(&a.fix);
            if r.is_err() {
                let _ = child::unmap(a.start, len);
            }
            r.is_ok()
        } else if a.needed && map_fresh(a).is_ok() {
            for &adv in &a.advice {
                let _ = child::advise(a.start, len, adv);
            }
            if a.apart && a.first_page_empty {
                let _ = child::advise(a.start, PAGE_SIZE, libc::MADV_DONTNEED);
            }
            let r = run(&a.fresh);
            if r.is_err() {
                let _ = child::unmap(a.start, len);
            }
            r.is_ok()
        } else {
            false
        };
        words.set(a.word, if ok { IN_PLACE } else { NOT_PLACED });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_at(vaddr: u64, pages: u64, file: u32, off_page: u64) -> Run {
        Run {
            vaddr,
            len: pages * PAGE_SIZE,
            file,
            off: off_page * PAGE_SIZE,
        }
    }

    #[test]
    fn fix_writes_only_what_differs_and_drops_what_the_child_lacks() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("pages-0.img");
        std::fs::write(&path, vec![0u8; 64 * 4096]).unwrap();
        let mut files = PageFiles::default();
        let f = files.index(&path).unwrap();
        let fd = fd_of(&files, f);
        let base = 0x10_0000;
        let parent = TaskPages {
            runs: vec![run_at(base, 4, f, 0), run_at(base + 6 * PAGE_SIZE, 2, f, 4)],
        };
        // Page 0-1 shared, page 2 own copy, page 3 absent, pages 6-7 shared, page 8 own.
        let child = TaskPages {
            runs: vec![
                run_at(base, 2, f, 0),
                run_at(base + 2 * PAGE_SIZE, 1, f, 10),
                run_at(base + 6 * PAGE_SIZE, 2, f, 4),
                run_at(base + 8 * PAGE_SIZE, 1, f, 11),
            ],
        };
        assert!(shares(&child, &parent, base, base + 16 * PAGE_SIZE));
        let ops = fix_ops(&child, &parent, base, base + 16 * PAGE_SIZE, &files);
        assert_eq!(
            ops,
            vec![
                Op::Fill {
                    addr: base + 2 * PAGE_SIZE,
                    len: PAGE_SIZE,
                    fd,
                    off: 10 * PAGE_SIZE
                },
                Op::Zap {
                    addr: base + 3 * PAGE_SIZE,
                    len: PAGE_SIZE
                },
                Op::Fill {
                    addr: base + 8 * PAGE_SIZE,
                    len: PAGE_SIZE,
                    fd,
                    off: 11 * PAGE_SIZE
                },
            ]
        );
        let other = TaskPages {
            runs: vec![run_at(base, 4, f, 20)],
        };
        assert!(!shares(&other, &parent, base, base + 16 * PAGE_SIZE));
    }

    #[test]
    fn plan_links_a_child_to_its_parent_area() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("pages-0.img");
        std::fs::write(&path, vec![0u8; 16 * 4096]).unwrap();
        let mut files = PageFiles::default();
        let f = files.index(&path).unwrap();
        let vma = |start: u64, end: u64| VmaEntry {
            start,
            end,
            prot: 3,
            flags: (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u32,
            kind: VmaKind::VmaAnonPrivate as i32,
            ..Default::default()
        };
        let mm = MmEntry {
            vmas: vec![vma(0x10000, 0x20000), vma(0x40000, 0x50000)],
            ..Default::default()
        };
        let parent = TaskPages {
            runs: vec![run_at(0x10000, 2, f, 0), run_at(0x40000, 1, f, 2)],
        };
        let child = TaskPages {
            runs: vec![run_at(0x10000, 2, f, 0), run_at(0x40000, 1, f, 3)],
        };
        let tasks = [
            PlanTask {
                parent: None,
                image: Some((&mm, &parent)),
            },
            PlanTask {
                parent: Some(0),
                image: Some((&mm, &child)),
            },
            PlanTask {
                parent: Some(0),
                image: None,
            },
        ];
        let plan = plan(&tasks, &files).unwrap();
        assert_eq!(plan[0].areas.len(), 1, "{:?}", plan[0]);
        assert!(plan[0].areas[0].needed && plan[0].areas[0].inherit.is_none());
        assert_eq!(plan[0].areas[0].fresh.len(), 1);
        assert_eq!(plan[1].areas.len(), 1);
        assert_eq!(plan[1].areas[0].inherit, Some(plan[0].areas[0].word));
        assert!(plan[1].areas[0].fix.is_empty());
        assert!(plan[1].drop.is_empty());
        // The zombie drops nothing it does not have; the parent's area is dropped by it.
        assert_eq!(plan[2].drop.len(), 1);
        assert!(!plan[1].in_place(0x10000, 0x20000));
    }

    #[test]
    fn siblings_inherit_through_a_carrier_their_parent_does_not_keep() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("pages-0.img");
        std::fs::write(&path, vec![0u8; 16 * 4096]).unwrap();
        let mut files = PageFiles::default();
        let f = files.index(&path).unwrap();
        let fd = fd_of(&files, f);
        let vma = |start: u64, end: u64| VmaEntry {
            start,
            end,
            prot: 3,
            flags: (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u32,
            kind: VmaKind::VmaAnonPrivate as i32,
            ..Default::default()
        };
        // The parent has neither area any more; its children share 0x10000 (the second one
        // with a page of its own), the third child has the area with contents of its own.
        let pmm = MmEntry {
            vmas: vec![vma(0x80000, 0x90000)],
            ..Default::default()
        };
        let mm = MmEntry {
            vmas: vec![vma(0x10000, 0x20000), vma(0x80000, 0x90000)],
            ..Default::default()
        };
        let parent = TaskPages {
            runs: vec![run_at(0x80000, 1, f, 9)],
        };
        let b = TaskPages {
            runs: vec![run_at(0x10000, 3, f, 0), run_at(0x80000, 1, f, 10)],
        };
        let c = TaskPages {
            runs: vec![
                run_at(0x10000, 2, f, 0),
                run_at(0x12000, 1, f, 5),
                run_at(0x80000, 1, f, 11),
            ],
        };
        let d = TaskPages {
            runs: vec![run_at(0x10000, 1, f, 6), run_at(0x80000, 1, f, 12)],
        };
        let tasks = [
            PlanTask {
                parent: None,
                image: Some((&pmm, &parent)),
            },
            PlanTask {
                parent: Some(0),
                image: Some((&mm, &b)),
            },
            PlanTask {
                parent: Some(0),
                image: Some((&mm, &c)),
            },
            PlanTask {
                parent: Some(0),
                image: Some((&mm, &d)),
            },
        ];
        let plan = plan(&tasks, &files).unwrap();
        // The parent carries the area, with B's contents.
        assert_eq!(plan[0].areas.len(), 1, "{:?}", plan[0]);
        let carrier = &plan[0].areas[0];
        assert!(carrier.carrier && carrier.needed && carrier.inherit.is_none());
        assert_eq!((carrier.start, carrier.end), (0x10000, 0x20000));
        assert_eq!(
            carrier.fresh,
            vec![Op::Fill {
                addr: 0x10000,
                len: 3 * PAGE_SIZE,
                fd,
                off: 0
            }]
        );
        // B inherits it as it is, C writes its own page, D drops it.
        assert_eq!(plan[1].areas.len(), 1);
        assert_eq!(plan[1].areas[0].inherit, Some(carrier.word));
        assert!(plan[1].areas[0].fix.is_empty() && !plan[1].areas[0].carrier);
        assert_eq!(plan[2].areas[0].inherit, Some(carrier.word));
        assert_eq!(
            plan[2].areas[0].fix,
            vec![Op::Fill {
                addr: 0x12000,
                len: PAGE_SIZE,
                fd,
                off: 5 * PAGE_SIZE
            }]
        );
        assert!(plan[3].areas.is_empty());
        assert_eq!(plan[3].drop, vec![(0x10000, 0x20000, carrier.word)]);
        assert!(plan[1].drop.is_empty() && plan[2].drop.is_empty());
        // Once prepared, a carrier is never part of the parent's own memory.
        let words = plan[0].words.as_ref().unwrap();
        words.set(carrier.word, IN_PLACE);
        words.set(plan[1].areas[0].word, IN_PLACE);
        assert!(!plan[0].in_place(0x10000, 0x20000));
        assert!(plan[0].placed().is_empty());
        assert!(plan[1].in_place(0x10000, 0x20000));
        assert_eq!(plan[1].placed(), vec![(0x10000, 0x20000)]);
    }

    #[test]
    fn no_carrier_over_an_area_the_parent_prepares_for_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("pages-0.img");
        std::fs::write(&path, vec![0u8; 16 * 4096]).unwrap();
        let mut files = PageFiles::default();
        let f = files.index(&path).unwrap();
        let vma = VmaEntry {
            start: 0x10000,
            end: 0x20000,
            prot: 3,
            flags: (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u32,
            kind: VmaKind::VmaAnonPrivate as i32,
            ..Default::default()
        };
        let mm = MmEntry {
            vmas: vec![vma],
            ..Default::default()
        };
        // A shares page 0 with its parent; B and C share page 1, which the parent rewrote.
        let parent = TaskPages {
            runs: vec![run_at(0x10000, 1, f, 0), run_at(0x11000, 1, f, 1)],
        };
        let a = TaskPages {
            runs: vec![run_at(0x10000, 1, f, 0)],
        };
        let bc = TaskPages {
            runs: vec![run_at(0x11000, 1, f, 2)],
        };
        let tasks = [
            PlanTask {
                parent: None,
                image: Some((&mm, &parent)),
            },
            PlanTask {
                parent: Some(0),
                image: Some((&mm, &a)),
            },
            PlanTask {
                parent: Some(0),
                image: Some((&mm, &bc)),
            },
            PlanTask {
                parent: Some(0),
                image: Some((&mm, &bc)),
            },
        ];
        let plan = plan(&tasks, &files).unwrap();
        assert_eq!(plan[0].areas.len(), 1, "{:?}", plan[0]);
        assert!(!plan[0].areas[0].carrier);
        assert_eq!(plan[1].areas[0].inherit, Some(plan[0].areas[0].word));
        assert!(plan[2].areas.is_empty() && plan[3].areas.is_empty());
    }
}
