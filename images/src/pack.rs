//! Per-task images: one file per kind for the whole tree, a section per task.
//!
//! ```text
//! header            magic of the kind, FORMAT_VERSION
//! record            SectionHead { id, records: n }
//! n records         the id's records, as in any record image
//! record            SectionHead { id', records: n' }
//! ...
//! ```
//!
//! A dump of a tree of a thousand tasks writes a few files instead of thousands: creating a
//! file costs far more than writing a few hundred bytes into one, on some filesystems a great
//! deal more.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::codec::{self, Records};
use crate::error::ImageError;
use crate::kind::ImageKind;
use crate::pagemap::{self, LocatedEntry};
use crate::pb;

/// Where one id's records lie in the file.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    records: u32,
}

/// A per-task image, read and split into its sections. Every record was length-checked
/// while splitting; bodies are decoded on demand.
#[derive(Debug)]
pub struct Pack {
    path: PathBuf,
    kind: ImageKind,
    bytes: Vec<u8>,
    order: Vec<u32>,
    index: HashMap<u32, Span>,
}

impl Pack {
    /// Splits `bytes`, the contents of the per-task image of `kind` at `path`, into sections.
    /// Refuses a bad header, a malformed record or section head, a section claiming more
    /// records than follow, and two sections for one id.
    pub fn parse(path: &Path, kind: ImageKind, bytes: Vec<u8>) -> Result<Pack, ImageError> {
        let mut order = Vec::new();
        let mut index = HashMap::new();
        let mut recs = codec::records(path, kind, &bytes)?;
        while let Some(raw) = recs.next() {
            let raw = raw?;
            let head: pb::SectionHead = raw.decode(path)?;
            let start = recs.position() as usize;
            for got in 0..head.records {
                match recs.next() {
                    Some(r) => {
                        r?;
                    }
                    None => {
                        return Err(ImageError::ShortSection {
                            path: path.to_owned(),
                            offset: raw.offset,
                            id: head.id,
                            records: head.records,
                            got,
                        })
                    }
                }
            }
            let span = Span {
                start,
                end: recs.position() as usize,
                records: head.records,
            };
            if index.insert(head.id, span).is_some() {
                return Err(ImageError::DuplicateSection {
                    path: path.to_owned(),
                    offset: raw.offset,
                    id: head.id,
                });
            }
            order.push(head.id);
        }
        Ok(Pack {
            path: path.to_owned(),
            kind,
            bytes,
            order,
            index,
        })
    }

    /// The file the image was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ids that have a section, in file order.
    pub fn ids(&self) -> &[u32] {
        &self.order
    }

    /// Whether `id` has a section.
    pub fn contains(&self, id: u32) -> bool {
        self.index.contains_key(&id)
    }

    /// The records of `id`'s section.
    pub fn records(&self, id: u32) -> Result<Records<'_>, ImageError> {
        let span = self.index.get(&id).ok_or_else(|| ImageError::NoSection {
            path: self.path.clone(),
            id,
        })?;
        Ok(codec::records_in(
            &self.path,
            &self.bytes,
            span.start,
            span.end,
        ))
    }

    /// Every section as it is in the file, to be written again.
    pub(crate) fn sections(&self) -> impl Iterator<Item = (u32, SectionBuilder)> + '_ {
        self.order.iter().map(|id| {
            let span = self.index[id];
            let s = SectionBuilder {
                body: self.bytes[span.start..span.end].to_vec(),
                records: span.records,
            };
            (*id, s)
        })
    }

    /// Every record of `id`'s section, decoded as `M`.
    pub fn decode<M: Message + Default>(&self, id: u32) -> Result<Vec<M>, ImageError> {
        decode_all(&self.path, self.records(id)?)
    }

    /// The pagemap of `id` (in a [`ImageKind::Pagemap`] or [`ImageKind::ShmemPagemap`]
    /// image): its head, then its entries with their offsets. Only the encoding is checked.
    pub fn pagemap(&self, id: u32) -> Result<(pb::PagemapHead, Vec<LocatedEntry>), ImageError> {
        pagemap::decode_pagemap_records(&self.path, self.records(id)?)
    }

    /// Decodes every section as the kind's messages and encodes the image again, byte for
    /// byte as this build writes it.
    pub fn reencode(&self) -> Result<Vec<u8>, ImageError> {
        let mut w = PackBuilder::new(&self.path, self.kind);
        for &id in &self.order {
            let mut s = SectionBuilder::default();
            let recs = self.records(id)?;
            match self.kind {
                ImageKind::Pagemap | ImageKind::ShmemPagemap => {
                    let (head, entries) = pagemap::decode_pagemap_records(&self.path, recs)?;
                    s.push(&self.path, &head)?;
                    for e in &entries {
                        s.push(&self.path, &e.entry)?;
                    }
                }
                ImageKind::Core => s.extend::<pb::CoreEntry>(&self.path, recs)?,
                ImageKind::Mm => s.extend::<pb::MmEntry>(&self.path, recs)?,
                ImageKind::Fdinfo => s.extend::<pb::FdinfoEntry>(&self.path, recs)?,
                ImageKind::Fs => s.extend::<pb::FsEntry>(&self.path, recs)?,
                ImageKind::Sigacts => s.extend::<pb::SigactionEntry>(&self.path, recs)?,
                ImageKind::Rlimits => s.extend::<pb::RlimitEntry>(&self.path, recs)?,
                _ => {
                    return Err(ImageError::BadId {
                        kind: self.kind,
                        id: Some(id),
                    })
                }
            }
            w.section(id, &s)?;
        }
        Ok(w.finish())
    }
}

fn decode_all<M: Message + Default>(path: &Path, recs: Records<'_>) -> Result<Vec<M>, ImageError> {
    recs.map(|r| r.and_then(|r| r.decode(path))).collect()
}

/// The encoded records of one section, before its head is known.
#[derive(Debug, Default, Clone)]
pub struct SectionBuilder {
    body: Vec<u8>,
    records: u32,
}

impl SectionBuilder {
    /// Appends one record; `path` names the image in an error.
    pub fn push<M: Message>(&mut self, path: &Path, record: &M) -> Result<(), ImageError> {
        codec::encode_record_into(path, self.body.len() as u64, record, &mut self.body)?;
        self.records += 1;
        Ok(())
    }

    fn extend<M: Message + Default>(
        &mut self,
        path: &Path,
        recs: Records<'_>,
    ) -> Result<(), ImageError> {
        for r in decode_all::<M>(path, recs)? {
            self.push(path, &r)?;
        }
        Ok(())
    }

    /// The records, as a reader of the section sees them (offsets from the section start).
    pub(crate) fn records<'a>(&'a self, path: &'a Path) -> Records<'a> {
        codec::records_in(path, &self.body, 0, self.body.len())
    }
}

/// A per-task image being assembled in memory.
#[derive(Debug)]
pub struct PackBuilder {
    path: PathBuf,
    out: Vec<u8>,
}

impl PackBuilder {
    /// An image of `kind` with no section yet; `path` names it in errors.
    pub fn new(path: &Path, kind: ImageKind) -> PackBuilder {
        PackBuilder {
            path: path.to_owned(),
            out: codec::encode_header(kind).to_vec(),
        }
    }

    /// Appends `id`'s section.
    pub fn section(&mut self, id: u32, s: &SectionBuilder) -> Result<(), ImageError> {
        let head = pb::SectionHead {
            id,
            records: s.records,
        };
        let rec = codec::encode_record(&self.path, self.out.len() as u64, &head)?;
        self.out.extend_from_slice(&rec);
        self.out.extend_from_slice(&s.body);
        Ok(())
    }

    /// The bytes of the image.
    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}
