//! Shmem objects behind mappings: `MAP_SHARED | MAP_ANONYMOUS` memory (`/dev/zero (deleted)`
//! in maps), memfds (`/memfd:NAME (deleted)`) and unlinked tmpfs files (`/dev/shm/x
//! (deleted)`).
//!
//! Such an object outlives any one mapping and is shared by every task that maps it (across
//! fork, or through a descriptor), so it is an object of its own in the images: identified at
//! dump by the (device, inode) of `/proc/PID/map_files/A-B`, its contents are saved once, read
//! straight from the object through that link (`SEEK_DATA`/`SEEK_HOLE` find the pages it
//! holds, whether or not any task has them mapped in its page tables), into
//! `pagemap-shmem-<id>.img` with offsets in the object as addresses.
//!
//! Restore creates each object once in crust, fills it with `pwrite`, and hands a descriptor
//! to every task that maps it (with its other service descriptors); the task maps it
//! `MAP_SHARED` (or private) at the saved offset. An anonymous object is made the way the
//! kernel makes one for `MAP_SHARED | MAP_ANONYMOUS` (crust maps such memory itself and opens
//! it through its own `map_files`), so it shows as `/dev/zero (deleted)` again; a memfd gets
//! its name and seals back; an unlinked file is created under its old path and unlinked.
//!
//! A shared mapping of a file that still exists is not a shmem object here: its contents stay
//! in the file (POSIX shared memory under `/dev/shm` included).

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};

use images::pb::{PagemapHead, ShmemKind, ShmemObject, VmaKind};
use images::{ImageDir, PAGE_SIZE, PE_PRESENT};

use super::pages::{self, Job, PagesOut, Source};
use crate::error::{DumpError, RestoreError};
use crate::proc::Vma;
use crate::sys::mem as sysmem;

const DELETED: &str = " (deleted)";
const ANON_NAME: &str = "/dev/zero (deleted)";
const MEMFD_PREFIX: &str = "/memfd:";
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The kind of a mapping backed by a shmem object, judging by its name, or None.
pub(crate) fn kind_of(v: &Vma) -> Option<VmaKind> {
    if v.ino == 0 || !v.name.ends_with(DELETED) || v.name.starts_with("/SYSV") {
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
    if v.name.starts_with("/SYSV") && v.name.ends_with(DELETED) {
        return Some("System V shared memory");
    }
    kind_of(v)?;
    if v.name == ANON_NAME {
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

/// The shmem objects of a tree being dumped.
#[derive(Default)]
pub(crate) struct ShmemDump {
    objects: Vec<Object>,
}

impl ShmemDump {
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
            id: self.objects.len() as u32 + 1,
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

    /// Plans the copy of every object's data into `out` and writes their pagemaps. The
    /// returned jobs read from [`ShmemDump::files`].
    pub fn plan(&self, dir: &ImageDir, out: &mut PagesOut) -> Result<Vec<Job>, DumpError> {
        let mut jobs = Vec::new();
        for (i, o) in self.objects.iter().enumerate() {
            let mut entries = Vec::new();
            for (start, end) in
                data_ranges(&o.file, o.entry.size).map_err(|source| DumpError::File {
                    path: format!("shmem object {} ({})", o.entry.id, o.entry.name).into(),
                    source,
                })?
            {
                let len = end - start;
                let off = out.alloc(len);
                pages::push_entry(&mut entries, start, len / PAGE_SIZE, off, PE_PRESENT);
                jobs.push(Job {
                    src: Source::Object { index: i as u32 },
                    addr: start,
                    len,
                    off: off * PAGE_SIZE,
                });
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

// ---------------------------------------------------------------------------------------------
// Restore

/// Creates the object `o` and fills it from `pagemap-shmem-<id>.img`.
pub(crate) fn create(dir: &ImageDir, o: &ShmemObject) -> Result<OwnedFd, RestoreError> {
    let image = dir.file_path(images::ImageKind::ShmemPagemap, Some(o.id));
    let bad = |what: String| RestoreError::BadImage {
        image: image.clone(),
        what,
    };
    let what = || format!("shmem object {} ({})", o.id, o.name);
    let io = |source| RestoreError::File {
        path: what(),
        source,
    };
    let (head, entries) = dir.read_shmem_pagemap(o.id)?;
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
    };
    let file = File::from(fd.try_clone().map_err(io)?);
    let pages = dir.pages_path(head.pages_id);
    let src = if entries.is_empty() {
        None
    } else {
        Some(File::open(&pages).map_err(|source| RestoreError::File {
            path: pages.display().to_string(),
            source,
        })?)
    };
    let mut chunks = Vec::new();
    for e in &entries {
        if e.flags != PE_PRESENT {
            return Err(bad(format!(
                "entry at offset {:#x} is not in this image",
                e.vaddr
            )));
        }
        let end = e.vaddr + e.nr_pages * PAGE_SIZE;
        if e.vaddr >= o.size.next_multiple_of(PAGE_SIZE) || end > o.size.next_multiple_of(PAGE_SIZE)
        {
            return Err(bad(format!(
                "data at offset {:#x}-{end:#x} lies past the object's {} bytes",
                e.vaddr, o.size
            )));
        }
        let mut done = 0;
        while done < e.nr_pages * PAGE_SIZE {
            let n = (e.nr_pages * PAGE_SIZE - done).min(8 << 20);
            chunks.push((e.vaddr + done, e.pages_off * PAGE_SIZE + done, n));
            done += n;
        }
    }
    if let Some(src) = &src {
        let total = chunks.iter().map(|c| c.2).sum();
        crate::par::for_each(
            &chunks,
            total,
            || (),
            |_, &(at, off, len)| {
                let map = crate::sys::Mapped::file(src.as_raw_fd(), off, len as usize).map_err(
                    |source| RestoreError::File {
                        path: format!("{} at offset {off}", pages.display()),
                        source,
                    },
                )?;
                // Never write past the object's size: that would grow it.
                let keep = (o.size.saturating_sub(at)).min(len) as usize;
                file.write_all_at(&map.as_slice()[..keep], at).map_err(io)
            },
        )?;
    }
    if o.kind() == ShmemKind::ShmemMemfd && o.seals != 0 {
        sysmem::add_seals(fd.as_raw_fd(), o.seals).map_err(io)?;
    }
    Ok(fd)
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
