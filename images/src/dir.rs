//! Image directories on disk: atomic, private file creation and strict reads.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use prost::Message;

use crate::codec;
use crate::error::{ImageError, IoOp};
use crate::kind::ImageKind;
use crate::pack::{Pack, PackBuilder, SectionBuilder};
use crate::pagemap::{self, LocatedEntry};
use crate::pb;
use crate::FORMAT_VERSION;

/// Mode of every image file: it may hold a process's whole memory.
const FILE_MODE: u32 = 0o600;
/// Mode of an image directory crust creates.
const DIR_MODE: u32 = 0o700;
/// Suffix of a file being written; renamed away when complete.
const TMP_SUFFIX: &str = ".tmp";

/// Name of the symlink to the parent image directory of an incremental dump
/// (where `PE_IN_PARENT` pages are).
pub const PARENT_LINK: &str = "parent";

fn io_err(op: IoOp, path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |source| {
        if source.kind() == io::ErrorKind::NotFound && matches!(op, IoOp::Open | IoOp::Read) {
            ImageError::Missing {
                path: path.to_owned(),
            }
        } else {
            ImageError::Io {
                op,
                path: path.to_owned(),
                source,
            }
        }
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(TMP_SUFFIX);
    PathBuf::from(s)
}

/// Creates `path` for writing with mode 0600, replacing a stale leftover.
fn create_private(path: &Path) -> Result<File, ImageError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(IoOp::Create, path)(e)),
    }
    // create_new: the mode applies only to a file we create, so never reuse one.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(io_err(IoOp::Create, path))
}

/// A directory of image files.
///
/// Every file is written under `NAME.tmp` and renamed to `NAME` when
/// complete, so a file under its final name is always whole. With
/// [`ImageDir::with_fsync`] the data is also flushed before the rename and
/// the directory after it, so the guarantee survives a crash of the machine.
///
/// Per-task kinds ([`ImageKind::per_task`]) have one file for the whole tree, a section per
/// task (see [`crate::Pack`]). Their sections are kept in memory as they are written and go
/// to disk together at [`ImageDir::commit_sections`], which writing the inventory does first;
/// until then reads through this `ImageDir` (or a clone) see them. Writing a section of a
/// file that exists keeps its other sections. Read images are cached, so the many tasks of a
/// tree cost one read of each file.
#[derive(Debug, Clone)]
pub struct ImageDir {
    path: PathBuf,
    fsync: bool,
    shared: Arc<Mutex<Shared>>,
}

/// What the clones of one `ImageDir` share.
#[derive(Debug, Default)]
struct Shared {
    /// Sections written and not committed yet, by kind and id.
    writing: HashMap<ImageKind, BTreeMap<u32, SectionBuilder>>,
    /// Per-task images read so far; `None` when the file does not exist.
    read: HashMap<ImageKind, Option<Arc<Pack>>>,
    /// The parent directory, once found.
    parent: Option<Option<ImageDir>>,
}

impl ImageDir {
    fn at(path: &Path) -> ImageDir {
        ImageDir {
            path: path.to_owned(),
            fsync: false,
            shared: Arc::default(),
        }
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        // A panic elsewhere leaves nothing half-updated here: every update is one insert.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens `path` for writing, creating it (and missing parents) with mode
    /// 0700 if it does not exist.
    pub fn create(path: &Path) -> Result<ImageDir, ImageError> {
        match fs::metadata(path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(ImageError::NotADirectory {
                    path: path.to_owned(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(path)
                .map_err(io_err(IoOp::Create, path))?,
            Err(e) => return Err(io_err(IoOp::Read, path)(e)),
        }
        Ok(ImageDir::at(path))
    }

    /// Opens an existing image directory.
    pub fn open(path: &Path) -> Result<ImageDir, ImageError> {
        let m = fs::metadata(path).map_err(io_err(IoOp::Open, path))?;
        if !m.is_dir() {
            return Err(ImageError::NotADirectory {
                path: path.to_owned(),
            });
        }
        Ok(ImageDir::at(path))
    }

    /// Whether to fsync every file before renaming it into place, and the
    /// directory after. Off by default: it lengthens a dump, during which
    /// the tree is frozen.
    pub fn with_fsync(mut self, on: bool) -> ImageDir {
        self.fsync = on;
        self
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of the file holding the image of `kind` (for a per-task kind, the file
    /// holding every id's section; see [`ImageKind::file_name`]).
    pub fn file_path(&self, kind: ImageKind, id: Option<u32>) -> PathBuf {
        let _ = id;
        self.path.join(kind.file_name())
    }

    /// Whether the complete image of `kind` (for a per-task kind, `id`'s section) exists.
    pub fn exists(&self, kind: ImageKind, id: Option<u32>) -> bool {
        if !kind.id_fits(id) {
            return false;
        }
        let Some(id) = id else {
            return self.file_path(kind, id).is_file();
        };
        let mut sh = self.shared();
        if let Some(w) = sh.writing.get(&kind) {
            return w.contains_key(&id);
        }
        self.load(&mut sh, kind)
            .is_ok_and(|p| p.is_some_and(|p| p.contains(id)))
    }

    /// The ids that have a section in the per-task image of `kind`, sorted; none if the file
    /// does not exist.
    pub fn ids(&self, kind: ImageKind) -> Result<Vec<u32>, ImageError> {
        if !kind.per_task() {
            return Err(ImageError::BadId { kind, id: None });
        }
        let mut sh = self.shared();
        if let Some(w) = sh.writing.get(&kind) {
            return Ok(w.keys().copied().collect());
        }
        let mut ids = match self.load(&mut sh, kind)? {
            Some(p) => p.ids().to_vec(),
            None => Vec::new(),
        };
        ids.sort_unstable();
        Ok(ids)
    }

    /// The per-task image of `kind` as read from disk, cached.
    fn load(&self, sh: &mut Shared, kind: ImageKind) -> Result<Option<Arc<Pack>>, ImageError> {
        if let Some(p) = sh.read.get(&kind) {
            return Ok(p.clone());
        }
        let path = self.file_path(kind, None);
        let pack = match fs::read(&path) {
            Ok(bytes) => Some(Arc::new(Pack::parse(&path, kind, bytes)?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(IoOp::Read, &path)(e)),
        };
        sh.read.insert(kind, pack.clone());
        Ok(pack)
    }

    /// Runs `f` on the records of `id`'s section of the per-task image of `kind`: written and
    /// not committed yet by this `ImageDir`, or read from the file.
    fn with_section<R>(
        &self,
        kind: ImageKind,
        id: u32,
        f: impl FnOnce(&Path, codec::Records<'_>) -> Result<R, ImageError>,
    ) -> Result<R, ImageError> {
        let path = self.file_path(kind, Some(id));
        let pack = {
            let mut sh = self.shared();
            if let Some(w) = sh.writing.get(&kind) {
                return match w.get(&id) {
                    Some(s) => f(&path, s.records(&path)),
                    None => Err(ImageError::NoSection { path, id }),
                };
            }
            self.load(&mut sh, kind)?
        };
        match pack {
            Some(p) => f(&path, p.records(id)?),
            None => Err(ImageError::Missing { path }),
        }
    }

    /// Writes the sections of per-task images written so far, one file per kind, and forgets
    /// them. Writing the inventory does this first; a pre-dump, which writes no inventory,
    /// calls it itself.
    pub fn commit_sections(&self) -> Result<(), ImageError> {
        let writing = std::mem::take(&mut self.shared().writing);
        let mut kinds: Vec<_> = writing.into_iter().collect();
        kinds.sort_by_key(|(k, _)| *k);
        for (kind, sections) in kinds {
            let path = self.file_path(kind, None);
            let mut b = PackBuilder::new(&path, kind);
            for (id, s) in &sections {
                b.section(*id, s)?;
            }
            let tmp = tmp_path(&path);
            let mut file = create_private(&tmp)?;
            file.write_all(&b.finish())
                .map_err(io_err(IoOp::Write, &tmp))?;
            if self.fsync {
                file.sync_all().map_err(io_err(IoOp::Sync, &tmp))?;
            }
            drop(file);
            rename_into_place(&tmp, &path, self.fsync)?;
            self.shared().read.remove(&kind);
        }
        Ok(())
    }

    fn checked_path(&self, kind: ImageKind, id: Option<u32>) -> Result<PathBuf, ImageError> {
        if kind.id_fits(id) {
            Ok(self.file_path(kind, id))
        } else {
            Err(ImageError::BadId { kind, id })
        }
    }

    /// Starts writing the image of `kind`; records are added with
    /// [`ImageWriter::push`] and the file appears under its name only at
    /// [`ImageWriter::commit`].
    pub fn writer(&self, kind: ImageKind, id: Option<u32>) -> Result<ImageWriter, ImageError> {
        let path = self.checked_path(kind, id)?;
        if let Some(id) = id {
            return Ok(ImageWriter {
                path,
                to: To::Section {
                    dir: self.clone(),
                    kind,
                    id,
                    s: SectionBuilder::default(),
                },
            });
        }
        if kind == ImageKind::Inventory {
            // The inventory says the dump is complete: everything else is on disk first.
            self.commit_sections()?;
        }
        ImageWriter::new(path, kind, self.fsync)
    }

    /// Writes the image of `kind` holding `records`.
    pub fn write<M: Message>(
        &self,
        kind: ImageKind,
        id: Option<u32>,
        records: &[M],
    ) -> Result<(), ImageError> {
        let mut w = self.writer(kind, id)?;
        for r in records {
            w.push(r)?;
        }
        w.commit()
    }

    /// Writes the image of `kind` holding the one `record`.
    pub fn write_one<M: Message>(
        &self,
        kind: ImageKind,
        id: Option<u32>,
        record: &M,
    ) -> Result<(), ImageError> {
        self.write(kind, id, std::slice::from_ref(record))
    }

    /// Writes the pagemap of process `id` (its section of `pagemap.img`): `head`, then
    /// `entries`. The entries are not checked here; [`ImageDir::read_pagemap`] does.
    pub fn write_pagemap(
        &self,
        id: u32,
        head: &pb::PagemapHead,
        entries: &[pb::PagemapEntry],
    ) -> Result<(), ImageError> {
        self.write_pagemap_of(ImageKind::Pagemap, id, head, entries)
    }

    /// Writes the pagemap of shmem object `id` (its section of `pagemap-shmem.img`), entries
    /// addressed by byte offset in the object.
    pub fn write_shmem_pagemap(
        &self,
        id: u32,
        head: &pb::PagemapHead,
        entries: &[pb::PagemapEntry],
    ) -> Result<(), ImageError> {
        self.write_pagemap_of(ImageKind::ShmemPagemap, id, head, entries)
    }

    fn write_pagemap_of(
        &self,
        kind: ImageKind,
        id: u32,
        head: &pb::PagemapHead,
        entries: &[pb::PagemapEntry],
    ) -> Result<(), ImageError> {
        let mut w = self.writer(kind, Some(id))?;
        w.push(head)?;
        for e in entries {
            w.push(e)?;
        }
        w.commit()
    }

    fn read_bytes(&self, path: &Path) -> Result<Vec<u8>, ImageError> {
        fs::read(path).map_err(io_err(IoOp::Read, path))
    }

    /// Reads every record of the image of `kind` as `M`.
    pub fn read<M: Message + Default>(
        &self,
        kind: ImageKind,
        id: Option<u32>,
    ) -> Result<Vec<M>, ImageError> {
        let path = self.checked_path(kind, id)?;
        match id {
            Some(id) => self.with_section(kind, id, |path, recs| {
                recs.map(|r| r.and_then(|r| r.decode(path))).collect()
            }),
            None => {
                let bytes = self.read_bytes(&path)?;
                codec::decode_image(&path, kind, &bytes)
            }
        }
    }

    /// Reads the image of `kind`, which must hold exactly one record.
    pub fn read_one<M: Message + Default>(
        &self,
        kind: ImageKind,
        id: Option<u32>,
    ) -> Result<M, ImageError> {
        let mut v = self.read::<M>(kind, id)?;
        if v.len() != 1 {
            return Err(ImageError::WrongCount {
                path: self.file_path(kind, id),
                id,
                expected: 1,
                got: v.len(),
            });
        }
        Ok(v.remove(0))
    }

    /// Reads `inventory.img` and checks that it is of this format version.
    /// The engine writes the inventory last, so this succeeding means the
    /// directory holds a complete dump.
    pub fn read_inventory(&self) -> Result<pb::InventoryEntry, ImageError> {
        let inv: pb::InventoryEntry = self.read_one(ImageKind::Inventory, None)?;
        if inv.format_version != FORMAT_VERSION {
            return Err(ImageError::BadVersion {
                path: self.file_path(ImageKind::Inventory, None),
                found: inv.format_version,
            });
        }
        Ok(inv)
    }

    /// Reads the pagemap of process `id` and checks its entries against
    /// `pages-<pages_id>.img`: sorted by vaddr, page aligned, non-empty,
    /// non-overlapping in address and in the file, inside the pages file,
    /// no overflow. Errors name the file and the record offset.
    pub fn read_pagemap(
        &self,
        id: u32,
    ) -> Result<(pb::PagemapHead, Vec<pb::PagemapEntry>), ImageError> {
        let (head, entries) = self.read_pagemap_located(id)?;
        Ok((head, entries.into_iter().map(|e| e.entry).collect()))
    }

    /// Like [`ImageDir::read_pagemap`], keeping each entry's record offset.
    pub fn read_pagemap_located(
        &self,
        id: u32,
    ) -> Result<(pb::PagemapHead, Vec<LocatedEntry>), ImageError> {
        self.read_pagemap_located_of(ImageKind::Pagemap, id)
    }

    /// Reads the pagemap of shmem object `id`, checked like [`ImageDir::read_pagemap`].
    pub fn read_shmem_pagemap(
        &self,
        id: u32,
    ) -> Result<(pb::PagemapHead, Vec<pb::PagemapEntry>), ImageError> {
        let (head, entries) = self.read_pagemap_located_of(ImageKind::ShmemPagemap, id)?;
        Ok((head, entries.into_iter().map(|e| e.entry).collect()))
    }

    fn read_pagemap_located_of(
        &self,
        kind: ImageKind,
        id: u32,
    ) -> Result<(pb::PagemapHead, Vec<LocatedEntry>), ImageError> {
        let (head, entries) = self.with_section(kind, id, pagemap::decode_pagemap_records)?;
        let path = self.file_path(kind, Some(id));
        self.check_pagemap(&path, &head, &entries)?;
        Ok((head, entries))
    }

    /// Checks pagemap entries against the pages files the head names.
    fn check_pagemap(
        &self,
        path: &Path,
        head: &pb::PagemapHead,
        entries: &[LocatedEntry],
    ) -> Result<(), ImageError> {
        let mut parts = std::collections::HashMap::new();
        for le in entries.iter().filter(|le| le.entry.is_present()) {
            let part = le.entry.part;
            if parts.contains_key(&part) {
                continue;
            }
            if part >= pagemap::MAX_PARTS {
                return Err(ImageError::BadPart {
                    path: path.to_owned(),
                    offset: le.offset,
                    vaddr: le.entry.vaddr,
                    part,
                });
            }
            let pages_path = self.pages_part_path(head.pages_id, part);
            let pages_len = match fs::metadata(&pages_path) {
                Ok(m) => Some(m.len()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(io_err(IoOp::Read, &pages_path)(e)),
            };
            parts.insert(part, (pages_path, pages_len));
        }
        pagemap::check_entries(path, &parts, entries)
    }

    /// The path of `pages-<pages_id>.img` (part 0 of the pages).
    pub fn pages_path(&self, pages_id: u32) -> PathBuf {
        self.pages_part_path(pages_id, 0)
    }

    /// The path of part `part` of the pages `pages_id` (see `PagemapEntry.part`).
    pub fn pages_part_path(&self, pages_id: u32, part: u32) -> PathBuf {
        self.path.join(pages_file_name(pages_id, part))
    }

    /// Creates `pages-<pages_id>.img.tmp` (mode 0600) for the page writer;
    /// [`ImageDir::commit_pages`] gives it its final name.
    pub fn create_pages(&self, pages_id: u32) -> Result<File, ImageError> {
        self.create_pages_part(pages_id, 0)
    }

    /// Like [`ImageDir::create_pages`], for part `part`.
    pub fn create_pages_part(&self, pages_id: u32, part: u32) -> Result<File, ImageError> {
        create_private(&tmp_path(&self.pages_part_path(pages_id, part)))
    }

    /// Renames `pages-<pages_id>.img.tmp` to `pages-<pages_id>.img`.
    pub fn commit_pages(&self, pages_id: u32) -> Result<(), ImageError> {
        self.commit_pages_part(pages_id, 0)
    }

    /// Like [`ImageDir::commit_pages`], for part `part`.
    pub fn commit_pages_part(&self, pages_id: u32, part: u32) -> Result<(), ImageError> {
        let path = self.pages_part_path(pages_id, part);
        let tmp = tmp_path(&path);
        if self.fsync {
            // fsync flushes the inode whichever descriptor it is called on.
            let f = File::open(&tmp).map_err(io_err(IoOp::Open, &tmp))?;
            f.sync_all().map_err(io_err(IoOp::Sync, &tmp))?;
        }
        rename_into_place(&tmp, &path, self.fsync)
    }

    /// The path of `files-data.img`, the raw contents of files (pipe queues, unlinked files,
    /// memfds) that `files.img` and `pipes-data.img` records point into by byte range.
    pub fn files_data_path(&self) -> PathBuf {
        self.path.join(FILES_DATA)
    }

    /// Creates `files-data.img.tmp` (mode 0600); [`ImageDir::commit_files_data`] gives it its
    /// final name.
    pub fn create_files_data(&self) -> Result<File, ImageError> {
        create_private(&tmp_path(&self.files_data_path()))
    }

    /// Renames `files-data.img.tmp` to `files-data.img`.
    pub fn commit_files_data(&self) -> Result<(), ImageError> {
        let path = self.files_data_path();
        let tmp = tmp_path(&path);
        if self.fsync {
            let f = File::open(&tmp).map_err(io_err(IoOp::Open, &tmp))?;
            f.sync_all().map_err(io_err(IoOp::Sync, &tmp))?;
        }
        rename_into_place(&tmp, &path, self.fsync)
    }

    /// The parent image directory of an incremental dump, if it has one.
    /// The same `ImageDir` is returned every time, with its cache of read images.
    pub fn parent(&self) -> Result<Option<ImageDir>, ImageError> {
        if let Some(p) = &self.shared().parent {
            return Ok(p.clone());
        }
        let link = self.path.join(PARENT_LINK);
        let parent = match fs::symlink_metadata(&link) {
            Ok(_) => Some(ImageDir::open(&link)?.with_fsync(self.fsync)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(IoOp::Read, &link)(e)),
        };
        if parent.is_some() {
            self.shared().parent = Some(parent.clone());
        }
        Ok(parent)
    }

    /// Decodes every image file in the directory as its kind and encodes it
    /// again. Returns the files that did not come out byte-identical (for
    /// example because they hold fields this build does not know). Pagemaps
    /// are also checked against their pages files. A file that is no image
    /// (a leftover `.tmp` included) is an [`ImageError::UnknownFile`]; the
    /// [`PARENT_LINK`] is skipped.
    pub fn verify_roundtrip(&self) -> Result<Vec<PathBuf>, ImageError> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.path).map_err(io_err(IoOp::ReadDir, &self.path))? {
            let entry = entry.map_err(io_err(IoOp::ReadDir, &self.path))?;
            names.push(entry.file_name());
        }
        names.sort();

        let mut differ = Vec::new();
        for name in names {
            let path = self.path.join(&name);
            let Some(name) = name.to_str() else {
                return Err(ImageError::UnknownFile { path });
            };
            if name == PARENT_LINK || name == FILES_DATA || parse_pages_file_name(name).is_some() {
                continue;
            }
            let Some(kind) = ImageKind::from_file_name(name) else {
                return Err(ImageError::UnknownFile { path });
            };
            let bytes = self.read_bytes(&path)?;
            let again = match kind {
                ImageKind::Pagemap | ImageKind::ShmemPagemap => {
                    let pack = Pack::parse(&path, kind, bytes.clone())?;
                    for &id in pack.ids() {
                        let (head, entries) = pack.pagemap(id)?;
                        self.check_pagemap(&path, &head, &entries)?;
                    }
                    pack.reencode()?
                }
                k if k.per_task() => Pack::parse(&path, kind, bytes.clone())?.reencode()?,
                ImageKind::Inventory => reencode::<pb::InventoryEntry>(&path, kind, &bytes)?,
                ImageKind::Pstree => reencode::<pb::PstreeEntry>(&path, kind, &bytes)?,
                ImageKind::Files => reencode::<pb::FileEntry>(&path, kind, &bytes)?,
                ImageKind::PipeData => reencode::<pb::PipeData>(&path, kind, &bytes)?,
                ImageKind::IpcShm => reencode::<pb::SysvShmEntry>(&path, kind, &bytes)?,
                _ => return Err(ImageError::UnknownFile { path }),
            };
            if again != bytes {
                differ.push(path);
            }
        }
        Ok(differ)
    }
}

fn reencode<M: Message + Default>(
    path: &Path,
    kind: ImageKind,
    bytes: &[u8],
) -> Result<Vec<u8>, ImageError> {
    let records: Vec<M> = codec::decode_image(path, kind, bytes)?;
    codec::encode_image(path, kind, &records)
}

/// Name of the raw file contents image (see [`ImageDir::files_data_path`]).
pub const FILES_DATA: &str = "files-data.img";

fn pages_file_name(pages_id: u32, part: u32) -> String {
    match part {
        0 => format!("pages-{pages_id}.img"),
        p => format!("pages-{pages_id}.{p}.img"),
    }
}

/// The id and part of a `pages-<id>.img` or `pages-<id>.<part>.img` name, in the exact form
/// [`pages_file_name`] makes.
fn parse_pages_file_name(name: &str) -> Option<(u32, u32)> {
    let inner = name.strip_prefix("pages-")?.strip_suffix(".img")?;
    let (id, part) = match inner.split_once('.') {
        Some((id, part)) => (id.parse().ok()?, part.parse().ok()?),
        None => (inner.parse().ok()?, 0),
    };
    (pages_file_name(id, part) == name).then_some((id, part))
}

fn rename_into_place(tmp: &Path, path: &Path, fsync: bool) -> Result<(), ImageError> {
    fs::rename(tmp, path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            ImageError::Missing {
                path: tmp.to_owned(),
            }
        } else {
            ImageError::Io {
                op: IoOp::Rename,
                path: tmp.to_owned(),
                source,
            }
        }
    })?;
    if fsync {
        // Make the rename itself durable.
        let dir = path.parent().unwrap_or(Path::new("."));
        let d = File::open(dir).map_err(io_err(IoOp::Open, dir))?;
        d.sync_all().map_err(io_err(IoOp::Sync, dir))?;
    }
    Ok(())
}

/// A record image being written. Dropped without [`ImageWriter::commit`], it leaves nothing
/// (a file image removes its temporary file) and any previous image stays in place.
#[derive(Debug)]
pub struct ImageWriter {
    path: PathBuf,
    to: To,
}

/// Where the records of an [`ImageWriter`] go.
#[derive(Debug)]
enum To {
    /// A file of its own, under a temporary name until committed.
    File {
        tmp: PathBuf,
        out: Option<BufWriter<File>>,
        offset: u64,
        fsync: bool,
        committed: bool,
    },
    /// A section of a per-task image, kept by the directory once committed.
    Section {
        dir: ImageDir,
        kind: ImageKind,
        id: u32,
        s: SectionBuilder,
    },
}

impl ImageWriter {
    fn new(path: PathBuf, kind: ImageKind, fsync: bool) -> Result<ImageWriter, ImageError> {
        let tmp = tmp_path(&path);
        let file = create_private(&tmp)?;
        let mut w = ImageWriter {
            path,
            to: To::File {
                tmp,
                out: Some(BufWriter::new(file)),
                offset: 0,
                fsync,
                committed: false,
            },
        };
        w.write_raw(&codec::encode_header(kind))?;
        Ok(w)
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        if let To::File {
            tmp, out, offset, ..
        } = &mut self.to
        {
            if let Some(out) = out.as_mut() {
                out.write_all(bytes).map_err(io_err(IoOp::Write, tmp))?;
            }
            *offset += bytes.len() as u64;
        }
        Ok(())
    }

    /// The final path of the image.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record.
    pub fn push<M: Message>(&mut self, record: &M) -> Result<(), ImageError> {
        match &mut self.to {
            To::Section { s, .. } => s.push(&self.path, record),
            To::File { offset, .. } => {
                let rec = codec::encode_record(&self.path, *offset, record)?;
                self.write_raw(&rec)
            }
        }
    }

    /// A file image: flushes the file and renames it to its final name. A section: hands it
    /// to the directory, replacing an earlier section of the same id; it reaches the disk at
    /// [`ImageDir::commit_sections`].
    pub fn commit(mut self) -> Result<(), ImageError> {
        match &mut self.to {
            To::Section { dir, kind, id, s } => {
                let mut sh = dir.shared();
                if !sh.writing.contains_key(kind) {
                    // Sections already on disk are kept: the file is written whole again.
                    let old = dir.load(&mut sh, *kind)?;
                    let known = old.iter().flat_map(|p| p.sections()).collect();
                    sh.writing.insert(*kind, known);
                }
                sh.writing
                    .entry(*kind)
                    .or_default()
                    .insert(*id, std::mem::take(s));
                Ok(())
            }
            To::File {
                tmp,
                out,
                fsync,
                committed,
                ..
            } => {
                let Some(out) = out.take() else {
                    return Ok(());
                };
                let file = out
                    .into_inner()
                    .map_err(|e| io_err(IoOp::Write, tmp)(e.into_error()))?;
                if *fsync {
                    file.sync_all().map_err(io_err(IoOp::Sync, tmp))?;
                }
                drop(file);
                rename_into_place(tmp, &self.path, *fsync)?;
                *committed = true;
                Ok(())
            }
        }
    }
}

impl Drop for ImageWriter {
    fn drop(&mut self) {
        if let To::File {
            tmp,
            committed: false,
            ..
        } = &self.to
        {
            // Best effort: the name says it is incomplete either way.
            let _ = fs::remove_file(tmp);
        }
    }
}
