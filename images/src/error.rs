//! The one error type of the crate. Every variant names the file it concerns
//! and, where a byte of that file is at fault, its offset.

use std::fmt;
use std::path::PathBuf;

use crate::kind::ImageKind;

/// What was being done when an I/O call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    /// Creating a file or directory.
    Create,
    /// Opening an existing file.
    Open,
    /// Reading file contents or metadata.
    Read,
    /// Writing file contents.
    Write,
    /// Flushing a file or directory to stable storage.
    Sync,
    /// Renaming a temporary file to its final name.
    Rename,
    /// Listing a directory.
    ReadDir,
}

impl fmt::Display for IoOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoOp::Create => "cannot create",
            IoOp::Open => "cannot open",
            IoOp::Read => "cannot read",
            IoOp::Write => "cannot write",
            IoOp::Sync => "cannot sync",
            IoOp::Rename => "cannot rename into place",
            IoOp::ReadDir => "cannot list",
        })
    }
}

/// Which part of a record image ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The 8-byte magic + version header.
    Header,
    /// The 4-byte length prefix of a record.
    RecordLength,
    /// The protobuf body of a record.
    Record,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Header => "header",
            Part::RecordLength => "record length",
            Part::Record => "record",
        })
    }
}

/// The space in which two pagemap entries overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Their address ranges overlap.
    Address,
    /// Their data ranges in the pages file overlap.
    PagesFile,
}

impl fmt::Display for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Space::Address => "address range",
            Space::PagesFile => "pages file range",
        })
    }
}

/// Errors of reading and writing image files.
///
/// `offset` is always a byte offset in the file named by `path`; for record
/// errors it is the offset of the record's length prefix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// An I/O call failed.
    #[error("{}: {op}", path.display())]
    Io {
        /// What was being done.
        op: IoOp,
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A file or directory that must exist does not.
    #[error("{}: missing", path.display())]
    Missing {
        /// The path looked for.
        path: PathBuf,
    },

    /// An image directory path names something that is not a directory.
    #[error("{}: not a directory", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },

    /// The file ended inside a header, a length prefix or a record.
    #[error("{}: truncated {what} at offset {offset} (wanted {wanted} bytes, got {got})", path.display())]
    Truncated {
        /// The image file.
        path: PathBuf,
        /// Which part ended early.
        what: Part,
        /// Where that part starts.
        offset: u64,
        /// Bytes the part needs.
        wanted: u64,
        /// Bytes left in the file.
        got: u64,
    },

    /// The file does not start with the magic of the expected kind.
    #[error("{}: bad magic {found:#010x} (expected {expected:#010x})", path.display())]
    BadMagic {
        /// The image file.
        path: PathBuf,
        /// The magic in the file.
        found: u32,
        /// The magic of the kind being read.
        expected: u32,
    },

    /// The format version in the file (or in the inventory) is not ours.
    #[error("{}: unsupported format version {found} (this build reads version {})", path.display(), crate::FORMAT_VERSION)]
    BadVersion {
        /// The image file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },

    /// A record length is above [`crate::MAX_RECORD_LEN`].
    #[error("{}: record at offset {offset} claims {len} bytes, over the {} byte limit", path.display(), crate::MAX_RECORD_LEN)]
    Oversized {
        /// The image file.
        path: PathBuf,
        /// Offset of the length prefix.
        offset: u64,
        /// The claimed length.
        len: u64,
    },

    /// A record's body is not a valid protobuf encoding of the expected message.
    #[error("{}: cannot decode {record} record at offset {offset}", path.display())]
    Decode {
        /// The image file.
        path: PathBuf,
        /// Offset of the record's length prefix.
        offset: u64,
        /// Message type expected.
        record: &'static str,
        /// What prost found wrong.
        #[source]
        source: prost::DecodeError,
    },

    /// The file (or the file's section for `id`) holds a different number of records than
    /// required.
    #[error("{}{}: expected {expected} record(s), found {got}", path.display(), id.map(|i| format!(" (id {i})")).unwrap_or_default())]
    WrongCount {
        /// The image file.
        path: PathBuf,
        /// The task or object whose section it is, in a per-task image.
        id: Option<u32>,
        /// Records required.
        expected: usize,
        /// Records found.
        got: usize,
    },

    /// A pagemap image has no head record.
    #[error("{}: no pagemap head record", path.display())]
    MissingHead {
        /// The pagemap file.
        path: PathBuf,
    },

    /// A pagemap entry's address is not page aligned.
    #[error("{}: entry at offset {offset}: vaddr {vaddr:#x} is not page aligned", path.display())]
    Unaligned {
        /// The pagemap file.
        path: PathBuf,
        /// Offset of the entry.
        offset: u64,
        /// Its address.
        vaddr: u64,
    },

    /// A pagemap entry names a part of the pages no dump writes.
    #[error("{}: entry at offset {offset} (vaddr {vaddr:#x}): pages part {part} is out of range", path.display())]
    BadPart {
        /// The pagemap file.
        path: PathBuf,
        /// Offset of the entry.
        offset: u64,
        /// Its address.
        vaddr: u64,
        /// The part it names.
        part: u32,
    },

    /// A pagemap entry overlaps an earlier one.
    #[error("{}: entry at offset {offset} (vaddr {vaddr:#x}): {space} overlaps an earlier entry", path.display())]
    Overlap {
        /// The pagemap file.
        path: PathBuf,
        /// Offset of the entry.
        offset: u64,
        /// Its address.
        vaddr: u64,
        /// Where the overlap is.
        space: Space,
    },

    /// A pagemap entry's data lies (partly) past the end of the pages file.
    #[error("{}: entry at offset {offset} (vaddr {vaddr:#x}) reaches past the end of {} ({pages_len} bytes)", path.display(), pages_path.display())]
    PastEnd {
        /// The pagemap file.
        path: PathBuf,
        /// Offset of the entry.
        offset: u64,
        /// Its address.
        vaddr: u64,
        /// The pages file.
        pages_path: PathBuf,
        /// Its size.
        pages_len: u64,
    },

    /// A pagemap entry starts below the previous one.
    #[error("{}: entry at offset {offset}: vaddr {vaddr:#x} is below the previous entry", path.display())]
    Unsorted {
        /// The pagemap file.
        path: PathBuf,
        /// Offset of the entry.
        offset: u64,
        /// Its address.
        vaddr: u64,
    },

    /// A pagemap entry covers no page.
    #[error("{}: entry at offset {offset} (vaddr {vaddr:#x}) covers no page", path.display())]
    Empty {
        /// The pagemap file.
        path: PathBuf,
        /// Offset of the entry.
        offset: u64,
        /// Its address.
        vaddr: u64,
    },

    /// A pagemap entry's end address or end in the pages file does not fit in u64.
    #[error("{}: entry at offset {offset} (vaddr {vaddr:#x}): range overflows u64", path.display())]
    Overflow {
        /// The pagemap file.
        path: PathBuf,
        /// Offset of the entry.
        offset: u64,
        /// Its address.
        vaddr: u64,
    },

    /// A pagemap entry's flags are not exactly one of PE_PRESENT, PE_IN_PARENT, PE_ZERO.
    #[error("{}: entry at offset {offset} (vaddr {vaddr:#x}): bad flags {flags:#x}", path.display())]
    BadFlags {
        /// The pagemap file.
        path: PathBuf,
        /// Offset of the entry.
        offset: u64,
        /// Its address.
        vaddr: u64,
        /// The flags found.
        flags: u32,
    },

    /// A per-task image has no records for this task or object.
    #[error("{}: nothing for id {id}", path.display())]
    NoSection {
        /// The image file.
        path: PathBuf,
        /// The id looked for.
        id: u32,
    },

    /// A per-task image has two sections for the same id.
    #[error("{}: second section for id {id} at offset {offset}", path.display())]
    DuplicateSection {
        /// The image file.
        path: PathBuf,
        /// Offset of the second section's head.
        offset: u64,
        /// The id.
        id: u32,
    },

    /// A section head claims more records than the file holds after it.
    #[error("{}: section for id {id} at offset {offset} claims {records} record(s), the file ends after {got}", path.display())]
    ShortSection {
        /// The image file.
        path: PathBuf,
        /// Offset of the section head.
        offset: u64,
        /// The id.
        id: u32,
        /// Records claimed.
        records: u32,
        /// Records present.
        got: u32,
    },

    /// A file in an image directory whose name belongs to no image kind.
    #[error("{}: not an image file", path.display())]
    UnknownFile {
        /// The file.
        path: PathBuf,
    },

    /// A per-task kind was named without an id, or a single-file kind with one.
    #[error("{kind} image: {}", if id.is_some() { "takes no task id" } else { "needs a task id" })]
    BadId {
        /// The kind.
        kind: ImageKind,
        /// The id given.
        id: Option<u32>,
    },
}
