//! Pagemap images and their validation against the pages file.
//!
//! A process's section of `pagemap.img` (an object's, of `pagemap-shmem.img`)
//! is one [`PagemapHead`] naming the pages file, then [`PagemapEntry`] runs
//! sorted by address. The data of a
//! `PE_PRESENT` run is `nr_pages` pages at page `pages_off` of
//! `pages-<pages_id>.img`, so restore fills it with one `preadv`. Because a
//! run is a file range and a memory range at once, both are checked here:
//! a bad entry must never make restore read past the pages file or write
//! outside the mapping it targets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::codec;
use crate::error::{ImageError, Space};
use crate::pb::{PagemapEntry, PagemapHead};
use crate::PAGE_SIZE;

/// The run's data is in this directory's pages file.
pub const PE_PRESENT: u32 = 1 << 0;
/// The run's data is in the parent image directory (incremental dumps).
pub const PE_IN_PARENT: u32 = 1 << 1;
/// The run is all zeroes; nothing is stored.
pub const PE_ZERO: u32 = 1 << 2;

impl PagemapEntry {
    /// Whether the data is in this directory's pages file.
    pub fn is_present(&self) -> bool {
        self.flags == PE_PRESENT
    }

    /// Whether the data is in the parent image directory.
    pub fn is_in_parent(&self) -> bool {
        self.flags == PE_IN_PARENT
    }

    /// Whether the run is all zeroes.
    pub fn is_zero(&self) -> bool {
        self.flags == PE_ZERO
    }

    /// Length of the run in bytes; `None` on overflow.
    pub fn byte_len(&self) -> Option<u64> {
        self.nr_pages.checked_mul(PAGE_SIZE)
    }

    /// End address (exclusive); `None` on overflow.
    pub fn end(&self) -> Option<u64> {
        self.vaddr.checked_add(self.byte_len()?)
    }

    /// Byte offset of the run's data in the pages file; `None` on overflow.
    pub fn file_offset(&self) -> Option<u64> {
        self.pages_off.checked_mul(PAGE_SIZE)
    }
}

/// A pagemap entry with the byte offset of its record in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct LocatedEntry {
    /// Offset of the record's length prefix in the pagemap file.
    pub offset: u64,
    /// The entry.
    pub entry: PagemapEntry,
}

/// The head and entries of one pagemap: the records of a section of a pagemap image.
pub(crate) fn decode_pagemap_records(
    path: &Path,
    mut records: codec::Records<'_>,
) -> Result<(PagemapHead, Vec<LocatedEntry>), ImageError> {
    let head = match records.next() {
        Some(r) => r?.decode::<PagemapHead>(path)?,
        None => {
            return Err(ImageError::MissingHead {
                path: path.to_owned(),
            })
        }
    };
    let entries = records
        .map(|r| {
            let r = r?;
            Ok(LocatedEntry {
                offset: r.offset,
                entry: r.decode(path)?,
            })
        })
        .collect::<Result<Vec<_>, ImageError>>()?;
    Ok((head, entries))
}

/// Parts of the pages a pagemap may name (`PagemapEntry.part`).
pub const MAX_PARTS: u32 = 64;

/// Checks pagemap entries: each has exactly one known flag, covers at least
/// one page, is page aligned and does not overflow; entries are sorted by
/// address without overlap; `PE_PRESENT` runs lie inside their part of the
/// pages (`parts`: by part, its path and length, `None` if it does not exist)
/// and do not share pages. `path` names the pagemap file in errors.
pub fn check_entries(
    path: &Path,
    parts: &HashMap<u32, (PathBuf, Option<u64>)>,
    entries: &[LocatedEntry],
) -> Result<(), ImageError> {
    let mut prev: Option<(u64, u64)> = None; // (vaddr, end) of the previous entry
                                             // (part, start, end, entry)
    let mut in_file: Vec<(u32, u64, u64, &LocatedEntry)> = Vec::new();

    for le in entries {
        let (offset, e) = (le.offset, &le.entry);
        let path = || path.to_owned();
        let vaddr = e.vaddr;

        if !matches!(e.flags, PE_PRESENT | PE_IN_PARENT | PE_ZERO) {
            return Err(ImageError::BadFlags {
                path: path(),
                offset,
                vaddr,
                flags: e.flags,
            });
        }
        if e.nr_pages == 0 {
            return Err(ImageError::Empty {
                path: path(),
                offset,
                vaddr,
            });
        }
        if vaddr % PAGE_SIZE != 0 {
            return Err(ImageError::Unaligned {
                path: path(),
                offset,
                vaddr,
            });
        }
        let overflow = || ImageError::Overflow {
            path: path(),
            offset,
            vaddr,
        };
        let end = e.end().ok_or_else(overflow)?;
        if let Some((prev_vaddr, prev_end)) = prev {
            if vaddr < prev_vaddr {
                return Err(ImageError::Unsorted {
                    path: path(),
                    offset,
                    vaddr,
                });
            }
            if vaddr < prev_end {
                return Err(ImageError::Overlap {
                    path: path(),
                    offset,
                    vaddr,
                    space: Space::Address,
                });
            }
        }
        prev = Some((vaddr, end));

        if e.is_present() {
            let start = e.file_offset().ok_or_else(overflow)?;
            let file_end = e
                .byte_len()
                .and_then(|len| start.checked_add(len))
                .ok_or_else(overflow)?;
            let Some((pages_path, pages_len)) = parts.get(&e.part) else {
                return Err(ImageError::BadPart {
                    path: path(),
                    offset,
                    vaddr,
                    part: e.part,
                });
            };
            let Some(pages_len) = *pages_len else {
                return Err(ImageError::Missing {
                    path: pages_path.to_owned(),
                });
            };
            if file_end > pages_len {
                return Err(ImageError::PastEnd {
                    path: path(),
                    offset,
                    vaddr,
                    pages_path: pages_path.to_owned(),
                    pages_len,
                });
            }
            in_file.push((e.part, start, file_end, le));
        }
    }

    // Runs need not be in file order (a writer may append out of address
    // order), so sort by file position; report the later record of a pair.
    in_file.sort_by_key(|&(part, start, _, le)| (part, start, le.offset));
    for pair in in_file.windows(2) {
        let (a_part, _, a_end, a) = pair[0];
        let (b_part, b_start, _, b) = pair[1];
        if a_part == b_part && b_start < a_end {
            let later = if a.offset > b.offset { a } else { b };
            return Err(ImageError::Overlap {
                path: path.to_owned(),
                offset: later.offset,
                vaddr: later.entry.vaddr,
                space: Space::PagesFile,
            });
        }
    }
    Ok(())
}
