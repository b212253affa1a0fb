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
    /// `core-<tid>.img`: one [`crate::pb::CoreEntry`].
    Core,
    /// `mm-<pid>.img`: one [`crate::pb::MmEntry`].
    Mm,
    /// `pagemap-<pid>.img`: a [`crate::pb::PagemapHead`], then
    /// [`crate::pb::PagemapEntry`] records.
    Pagemap,
    /// `fdinfo-<pid>.img`: [`crate::pb::FdinfoEntry`] records.
    Fdinfo,
    /// `files.img`: [`crate::pb::FileEntry`] records.
    Files,
    /// `pipes-data.img`: [`crate::pb::PipeData`] records.
    PipeData,
    /// `fs-<pid>.img`: one [`crate::pb::FsEntry`].
    Fs,
    /// `sigacts-<pid>.img`: [`crate::pb::SigactionEntry`] records.
    Sigacts,
    /// `rlimits-<pid>.img`: [`crate::pb::RlimitEntry`] records.
    Rlimits,
    /// `pagemap-shmem-<id>.img`: the contents of shmem object `<id>`
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

    /// The file name without id and extension: `core` for `core-<id>.img`.
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

    /// Whether there is one file per task (or thread), named by its id.
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

    /// The file name for `id`. A per-task kind given no id, or a single-file
    /// kind given one, still gets a name (`core.img`, `files.img`), but
    /// [`crate::ImageDir`] refuses to read or write it.
    pub fn file_name(self, id: Option<u32>) -> String {
        match (self.per_task(), id) {
            (true, Some(id)) => format!("{}-{id}.img", self.stem()),
            _ => format!("{}.img", self.stem()),
        }
    }

    /// Whether `id` is what this kind takes: `Some` for per-task kinds,
    /// `None` for the others.
    pub const fn id_fits(self, id: Option<u32>) -> bool {
        self.per_task() == id.is_some()
    }

    /// The kind and id of an image file name, if it is one. Only the exact
    /// names [`ImageKind::file_name`] produces are accepted (no leading zeros,
    /// no sign).
    pub fn from_file_name(name: &str) -> Option<(ImageKind, Option<u32>)> {
        let stem = name.strip_suffix(".img")?;
        for kind in ImageKind::ALL {
            if !kind.per_task() {
                if stem == kind.stem() {
                    return Some((kind, None));
                }
                continue;
            }
            let Some(id) = stem
                .strip_prefix(kind.stem())
                .and_then(|rest| rest.strip_prefix('-'))
            else {
                continue;
            };
            let Ok(id) = id.parse::<u32>() else {
                continue;
            };
            if kind.file_name(Some(id)) == name {
                return Some((kind, Some(id)));
            }
        }
        None
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
            let id = kind.per_task().then_some(4242);
            let name = kind.file_name(id);
            assert_eq!(ImageKind::from_file_name(&name), Some((kind, id)), "{name}");
        }
    }

    #[test]
    fn non_canonical_names_are_rejected() {
        for name in [
            "core-042.img",
            "core-+42.img",
            "core-.img",
            "core.img",
            "files-1.img",
            "core-42.img.tmp",
            "core-4294967296.img",
            "pages-1.img",
            "pipes.img",
        ] {
            assert_eq!(ImageKind::from_file_name(name), None, "{name}");
        }
    }
}
