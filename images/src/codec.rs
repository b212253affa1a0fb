//! Record images as bytes: the header, the length-prefixed records, and the
//! checks that make a hostile file an error instead of a crash or a huge
//! allocation. Nothing here touches the filesystem; `path` only names the
//! file in errors.

use std::path::Path;

use prost::Message;

use crate::error::{ImageError, Part};
use crate::kind::ImageKind;
use crate::FORMAT_VERSION;

/// Largest record body accepted, in bytes. A length prefix above it is
/// reported as [`ImageError::Oversized`] before anything is allocated.
pub const MAX_RECORD_LEN: u64 = 64 << 20;

/// Bytes of the header: magic, then format version, both u32 LE.
pub const HEADER_LEN: u64 = 8;

/// Bytes of a record's length prefix (u32 LE).
const LEN_PREFIX: u64 = 4;

/// The header of an image of `kind`.
pub fn encode_header(kind: ImageKind) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..4].copy_from_slice(&kind.magic().to_le_bytes());
    h[4..].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// Encodes one record (length prefix + body) that will start at byte
/// `offset` of the file; refuses bodies over [`MAX_RECORD_LEN`] so that no
/// image is written that its reader would reject.
pub fn encode_record<M: Message>(
    path: &Path,
    offset: u64,
    record: &M,
) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    encode_record_into(path, offset, record, &mut out)?;
    Ok(out)
}

/// Like [`encode_record`], appended to `out` (no buffer of its own: many small records).
pub fn encode_record_into<M: Message>(
    path: &Path,
    offset: u64,
    record: &M,
    out: &mut Vec<u8>,
) -> Result<(), ImageError> {
    let len = record.encoded_len() as u64;
    if len > MAX_RECORD_LEN {
        return Err(ImageError::Oversized {
            path: path.to_owned(),
            offset,
            len,
        });
    }
    out.reserve((LEN_PREFIX + len) as usize);
    // Lossless: len <= MAX_RECORD_LEN < u32::MAX.
    out.extend_from_slice(&(len as u32).to_le_bytes());
    record
        .encode(out)
        .expect("a Vec grows to whatever a record needs");
    Ok(())
}

/// Encodes a whole image of `kind`: header, then `records`.
pub fn encode_image<M: Message>(
    path: &Path,
    kind: ImageKind,
    records: &[M],
) -> Result<Vec<u8>, ImageError> {
    let mut out = encode_header(kind).to_vec();
    for r in records {
        encode_record_into(path, out.len() as u64, r, &mut out)?;
    }
    Ok(out)
}

/// One undecoded record of an image.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// Byte offset of the record's length prefix in the file.
    pub offset: u64,
    /// The protobuf body.
    pub body: &'a [u8],
}

impl RawRecord<'_> {
    /// Decodes the body as `M`.
    pub fn decode<M: Message + Default>(&self, path: &Path) -> Result<M, ImageError> {
        M::decode(self.body).map_err(|source| ImageError::Decode {
            path: path.to_owned(),
            offset: self.offset,
            record: short_type_name::<M>(),
            source,
        })
    }
}

/// Iterator over the records of an image whose header was checked by
/// [`records`]. Yields an error at the first malformed record, then stops.
#[derive(Debug)]
pub struct Records<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
    end: usize,
    failed: bool,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RawRecord<'a>, ImageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos == self.end {
            return None;
        }
        let r = self.next_record();
        self.failed = r.is_err();
        Some(r)
    }
}

impl<'a> Records<'a> {
    /// Byte offset in the file of the next record.
    pub fn position(&self) -> u64 {
        self.pos as u64
    }

    fn next_record(&mut self) -> Result<RawRecord<'a>, ImageError> {
        let offset = self.pos as u64;
        let rest = &self.bytes[self.pos..self.end];
        let Some((len, body)) = rest.split_first_chunk::<4>() else {
            return Err(ImageError::Truncated {
                path: self.path.to_owned(),
                what: Part::RecordLength,
                offset,
                wanted: LEN_PREFIX,
                got: rest.len() as u64,
            });
        };
        let len = u64::from(u32::from_le_bytes(*len));
        if len > MAX_RECORD_LEN {
            return Err(ImageError::Oversized {
                path: self.path.to_owned(),
                offset,
                len,
            });
        }
        // Lossless: len <= MAX_RECORD_LEN fits in usize on every target we build for.
        let Some(body) = body.get(..len as usize) else {
            return Err(ImageError::Truncated {
                path: self.path.to_owned(),
                what: Part::Record,
                offset,
                wanted: len,
                got: body.len() as u64,
            });
        };
        self.pos += LEN_PREFIX as usize + body.len();
        Ok(RawRecord { offset, body })
    }
}

/// Checks the header of an image of `kind` and returns an iterator over
/// its records.
pub fn records<'a>(
    path: &'a Path,
    kind: ImageKind,
    bytes: &'a [u8],
) -> Result<Records<'a>, ImageError> {
    // The magic is checked as soon as it is there, so a short file of the
    // wrong kind says so rather than "truncated".
    if let Some(magic) = bytes.first_chunk::<4>() {
        let found = u32::from_le_bytes(*magic);
        if found != kind.magic() {
            return Err(ImageError::BadMagic {
                path: path.to_owned(),
                found,
                expected: kind.magic(),
            });
        }
    }
    let Some(version) = bytes.get(4..).and_then(|b| b.first_chunk::<4>()) else {
        return Err(ImageError::Truncated {
            path: path.to_owned(),
            what: Part::Header,
            offset: 0,
            wanted: HEADER_LEN,
            got: bytes.len() as u64,
        });
    };
    let found = u32::from_le_bytes(*version);
    if found != FORMAT_VERSION {
        return Err(ImageError::BadVersion {
            path: path.to_owned(),
            found,
        });
    }
    Ok(Records {
        path,
        bytes,
        pos: HEADER_LEN as usize,
        end: bytes.len(),
        failed: false,
    })
}

/// The records in `bytes[start..end]`, a range that earlier parsing found to hold whole
/// records (one section of a per-task image). Offsets in errors stay those of the file.
pub(crate) fn records_in<'a>(
    path: &'a Path,
    bytes: &'a [u8],
    start: usize,
    end: usize,
) -> Records<'a> {
    Records {
        path,
        bytes,
        pos: start,
        end,
        failed: false,
    }
}

/// Decodes every record of an image of `kind` as `M`.
pub fn decode_image<M: Message + Default>(
    path: &Path,
    kind: ImageKind,
    bytes: &[u8],
) -> Result<Vec<M>, ImageError> {
    records(path, kind, bytes)?
        .map(|r| r.and_then(|r| r.decode(path)))
        .collect()
}

/// `CoreEntry` for `images::pb::CoreEntry`: for error messages.
fn short_type_name<M>() -> &'static str {
    let full = std::any::type_name::<M>();
    full.rsplit("::").next().unwrap_or(full)
}
