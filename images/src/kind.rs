//! The kinds of record image and how their files are named.

use std::fmt;

/// A kind of record image: fixes the file name, the magic number and the
/// message type of the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageKind {
    /// `inventory.img`: one [`crate::pb::InventoryEntry`].
    Inventory,
    /// `pstree.img`: [`crate::pb::PstreeEntry`] records.
    Pstree,
    /// `core.img`: one [`crate::pb::CoreEntry`] per thread (id: tid).
    Core,
    /// `mm.img`: one [`crate::pb::MmEntry`] per process (id: pid).
    Mm,
    /// `pagemap.img`: per process (id: pid), a [`crate::pb::PagemapHead`], then
    /// [`crate::pb::PagemapEntry`] records.
    Pagemap,
    /// `fdinfo.img`: [`crate::pb::FdinfoEntry`] records per process (id: pid).
    Fdinfo,
    /// `files.img`: [`crate::pb::FileEntry`] records.
    Files,
    /// `pipes-data.img`: [`crate::pb::PipeData`] records.
    PipeData,
    /// `fs.img`: one [`crate::pb::FsEntry`] per process (id: pid).
    Fs,
    /// `sigacts.img`: [`crate::pb::SigactionEntry`] records per process (id: pid).
    Sigacts,
    /// `rlimits.img`: [`crate::pb::RlimitEntry`] records per process (id: pid).
    Rlimits,
    /// `pagemap-shmem.img`: per shmem object (id: the object's id), its contents
    /// (anonymous shared memory, a memfd, an unlinked tmpfs file) saved once
    /// for every mapping of it: a [`crate::pb::PagemapHead`], then
    /// [`crate::pb::PagemapEntry`] records whose `vaddr` is the byte offset
    /// in the object.
    ShmemPagemap,
    /// `ipc-shm.img`: [`crate::pb::SysvShmEntry`] records, the System V shared
    /// memory segments of the IPC namespace the tree owns.
    IpcShm,
}

/// A magic number whose little-endian bytes spell `tag`, so a hex dump of a
/// file shows its kind.
const fn tag(tag: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*tag)
}

impl ImageKind {
    /// Every kind, in a fixed order.
    pub const ALL: [ImageKind; 13] = [
        ImageKind::Inventory,
        ImageKind::Pstree,
        ImageKind::Core,
        ImageKind::Mm,
        ImageKind::Pagemap,
        ImageKind::Fdinfo,
        ImageKind::Files,
        ImageKind::PipeData,
        ImageKind::Fs,
        ImageKind::Sigacts,
        ImageKind::Rlimits,
        ImageKind::ShmemPagemap,
        ImageKind::IpcShm,
    ];

    /// The magic number opening every file of this kind.
    pub const fn magic(self) -> u32 {
        match self {
            ImageKind::Inventory => tag(b"cINV"),
            ImageKind::Pstree => tag(b"cPST"),
            ImageKind::Core => tag(b"cCOR"),
            ImageKind::Mm => tag(b"cMM_"),
            ImageKind::Pagemap => tag(b"cPGM"),
            ImageKind::Fdinfo => tag(b"cFDI"),
            ImageKind::Files => tag(b"cFIL"),
            ImageKind::PipeData => tag(b"cPPD"),
            ImageKind::Fs => tag(b"cFS_"),
            ImageKind::Sigacts => tag(b"cSIG"),
            ImageKind::Rlimits => tag(b"cRLM"),
            ImageKind::ShmemPagemap => tag(b"cPGS"),
            ImageKind::IpcShm => tag(b"cSHM"),
        }
    }

    /// The file name without the extension: `core` for `core.img`.
    pub const fn stem(self) -> &'static str {
        match self {
            ImageKind::Inventory => "inventory",
            ImageKind::Pstree => "pstree",
            ImageKind::Core => "core",
            ImageKind::Mm => "mm",
            ImageKind::Pagemap => "pagemap",
            ImageKind::Fdinfo => "fdinfo",
            ImageKind::Files => "files",
            ImageKind::PipeData => "pipes-data",
            ImageKind::Fs => "fs",
            ImageKind::Sigacts => "sigacts",
            ImageKind::Rlimits => "rlimits",
            ImageKind::ShmemPagemap => "pagemap-shmem",
            ImageKind::IpcShm => "ipc-shm",
        }
    }

    /// Whether the kind's records belong to tasks (or objects): its one file holds a section
    /// per id, each a [`crate::pb::SectionHead`] followed by that id's records.
    pub const fn per_task(self) -> bool {
        matches!(
            self,
            ImageKind::Core
                | ImageKind::Mm
                | ImageKind::Pagemap
                | ImageKind::Fdinfo
                | ImageKind::Fs
                | ImageKind::Sigacts
                | ImageKind::Rlimits
                | ImageKind::ShmemPagemap
        )
    }

    /// The name of the kind's file: `core.img`.
    pub fn file_name(self) -> String {
        format!("{}.img", self.stem())
    }

    /// Whether `id` is what this kind takes: `Some` for per-task kinds,
    /// `None` for the others.
    pub const fn id_fits(self, id: Option<u32>) -> bool {
        self.per_task() == id.is_some()
    }

    /// The kind of an image file name, if it is one.
    pub fn from_file_name(name: &str) -> Option<ImageKind> {
        ImageKind::ALL
            .into_iter()
            .find(|kind| kind.file_name() == name)
    }

    /// The kind whose magic is `magic`.
    pub fn from_magic(magic: u32) -> Option<ImageKind> {
        ImageKind::ALL.into_iter().find(|k| k.magic() == magic)
    }
}

impl fmt::Display for ImageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.stem())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics_are_distinct() {
        for (i, a) in ImageKind::ALL.iter().enumerate() {
            for b in &ImageKind::ALL[i + 1..] {
                assert_ne!(a.magic(), b.magic(), "{a} and {b} share a magic");
            }
        }
    }

    #[test]
    fn file_names_parse_back() {
        for kind in ImageKind::ALL {
            let name = kind.file_name();
            assert_eq!(ImageKind::from_file_name(&name), Some(kind), "{name}");
        }
    }

    #[test]
    fn other_names_are_rejected() {
        for name in [
            "core-42.img",
            "core",
            "files-1.img",
            "core.img.tmp",
            "pages-1.img",
            "pipes.img",
        ] {
            assert_eq!(ImageKind::from_file_name(name), None, "{name}");
        }
    }
}
