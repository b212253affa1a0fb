//! The crust image format: what a checkpoint looks like on disk.
//!
//! An image directory holds one file per kind of object: `inventory.img`,
//! `pstree.img`, `files.img`, `pipes-data.img`, and the per-task kinds
//! `core.img` (a section per thread), `mm.img`, `pagemap.img`, `fdinfo.img`,
//! `fs.img`, `sigacts.img`, `rlimits.img` (a section per process),
//! `pagemap-shmem.img` (a section per shared memory object), plus raw
//! `pages-<n>.img` and `files-data.img` (file contents that `files.img`
//! records point into). A tree of any size is a dozen files.
//! The schema is protobuf (`images/proto/*.proto`, one file per object kind,
//! package `crust`), compiled at build time into [`pb`]; protobuf lets a
//! later version add fields that an older reader skips.
//!
//! # Record images
//!
//! ```text
//! offset 0   u32 LE  magic of the kind (its bytes spell e.g. "cCOR")
//! offset 4   u32 LE  FORMAT_VERSION
//! offset 8   records, each:
//!              u32 LE  body length (at most MAX_RECORD_LEN)
//!              body    protobuf encoding of the kind's message
//! ```
//!
//! The file ends exactly after its last record; anything else is an error.
//! A per-task image groups its records in sections, each opened by a
//! `SectionHead { id, records }` record (see [`Pack`]).
//! Offsets in errors are byte offsets in the file, of the record's length
//! prefix for record errors.
//!
//! # Pages
//!
//! `pages-<n>.img` has no header: it is page data, [`PAGE_SIZE`] bytes per
//! page, described by the entries of a pagemap image (see [`pagemap`]). A
//! run of pages is one contiguous range of the file, so restore fills a
//! mapping with one `preadv`, or maps the file directly.
//!
//! # Trust and atomicity
//!
//! Readers never trust a file: a truncated, corrupted or hostile image is an
//! [`ImageError`] naming the file and offset, never a panic, and a length
//! prefix is checked against [`MAX_RECORD_LEN`] and the file size before
//! anything is allocated for it. Writers create files with mode 0600 (they
//! hold a process's memory) under `NAME.tmp` and rename them into place when
//! complete, so a file under its final name is always whole. The engine
//! writes `inventory.img` last: [`ImageDir::read_inventory`] succeeding is
//! what tells a complete dump from an interrupted one.
//!
//! This crate does file I/O and nothing else: no ptrace, no other syscalls.

#![deny(unsafe_code)]

mod codec;
mod dir;
mod error;
mod kind;
mod pack;
pub mod pagemap;

/// Generated protobuf messages (package `crust`), one `.proto` per object kind.
#[allow(missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/crust.rs"));
}

pub use codec::{
    decode_image, encode_header, encode_image, encode_record, records, RawRecord, Records,
    HEADER_LEN, MAX_RECORD_LEN,
};
pub use dir::{ImageDir, ImageWriter, FILES_DATA, PARENT_LINK};
pub use error::{ImageError, IoOp, Part, Space};
pub use kind::ImageKind;
pub use pack::{Pack, PackBuilder, SectionBuilder};
pub use pagemap::{LocatedEntry, PE_IN_PARENT, PE_PRESENT, PE_ZERO};
pub use pb::{InventoryEntry, PagemapEntry, PagemapHead};

/// Version of the image format this build reads and writes.
pub const FORMAT_VERSION: u32 = 3;

/// Size of a page in the pages files and of the unit of pagemap entries.
pub const PAGE_SIZE: u64 = 4096;
