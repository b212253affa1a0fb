//! The GNU build-id of an ELF file (`NT_GNU_BUILD_ID` note), identity of an executable or a
//! library beyond its size and mtime: dump records it for mapped files and the exe, restore
//! refuses a file whose build-id changed (unless `--skip-file-validation`).
//!
//! The file is untrusted: the ELF header, the program headers and the `PT_NOTE` segments are
//! read with bounded reads at checked offsets. Anything that is not a well-formed ELF file
//! with a build-id note simply has none.

use std::os::unix::fs::FileExt;

/// At most this many program headers are looked at (real files have a few dozen).
const MAX_PHNUM: usize = 256;
/// At most this many bytes of one note segment are read.
const MAX_NOTES: usize = 64 << 10;
/// Build-ids are 16 (md5/uuid) or 20 (sha1) bytes; anything larger is not one.
const MAX_BUILD_ID: usize = 64;

const PT_NOTE: u32 = 4;
const NT_GNU_BUILD_ID: u32 = 3;

/// The build-id of the regular file `path` names (a `/proc` link of the task's: its exe or a
/// `map_files` entry), empty when it has none. Only executables and executable mappings
/// are read: opening a file can break a lease, so the files a task has open are not.
/// `O_NONBLOCK` keeps a lease from blocking the dump.
pub(crate) fn build_id_at(path: &str) -> Vec<u8> {
    use std::os::unix::fs::OpenOptionsExt;
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return Vec::new();
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()
        .and_then(|f| build_id_of(&f))
        .unwrap_or_default()
}

/// The build-id of the regular file `f`, or None when it is not ELF or has none. I/O errors
/// while reading count as none: the caller has already identified the file otherwise.
pub(crate) fn build_id_of(f: &std::fs::File) -> Option<Vec<u8>> {
    build_id(&|off, len| {
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match f.read_at(&mut buf[got..], off.checked_add(got as u64)?) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        buf.truncate(got);
        Some(buf)
    })
}

/// The build-id found through `read(offset, len)`, which returns up to `len` bytes at
/// `offset` (fewer at the end of the file).
pub(crate) fn build_id(read: &dyn Fn(u64, usize) -> Option<Vec<u8>>) -> Option<Vec<u8>> {
    let ehdr = read(0, 64)?;
    if ehdr.len() < 52 || ehdr[..4] != *b"\x7fELF" {
        return None;
    }
    let wide = match ehdr[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let f = Fields {
        big: match ehdr[5] {
            1 => false,
            2 => true,
            _ => return None,
        },
    };
    let (phoff, phentsize, phnum, min_entry) = if wide {
        (
            f.u64(&ehdr, 0x20)?,
            f.u16(&ehdr, 0x36)?,
            f.u16(&ehdr, 0x38)?,
            56,
        )
    } else {
        (
            u64::from(f.u32(&ehdr, 0x1c)?),
            f.u16(&ehdr, 0x2a)?,
            f.u16(&ehdr, 0x2c)?,
            32,
        )
    };
    let (phentsize, phnum) = (usize::from(phentsize), usize::from(phnum));
    if phentsize < min_entry || phnum == 0 || phnum > MAX_PHNUM {
        return None;
    }
    let table = read(phoff, phentsize.checked_mul(phnum)?)?;
    for ph in table.chunks_exact(phentsize) {
        if f.u32(ph, 0)? != PT_NOTE {
            continue;
        }
        let (offset, size, align) = if wide {
            (f.u64(ph, 8)?, f.u64(ph, 32)?, f.u64(ph, 48)?)
        } else {
            (
                u64::from(f.u32(ph, 4)?),
                u64::from(f.u32(ph, 16)?),
                u64::from(f.u32(ph, 28)?),
            )
        };
        let size = usize::try_from(size).ok()?.min(MAX_NOTES);
        let notes = read(offset, size)?;
        if let Some(id) = find_build_id(&f, &notes, if align == 8 { 8 } else { 4 }) {
            return Some(id);
        }
    }
    None
}

/// Walks the notes of one segment (name and descriptor each padded to `align`).
fn find_build_id(f: &Fields, notes: &[u8], align: usize) -> Option<Vec<u8>> {
    let pad = |n: usize| n.checked_add(align - 1).map(|v| v & !(align - 1));
    let mut at = 0usize;
    while at.checked_add(12)? <= notes.len() {
        let namesz = f.u32(notes, at)? as usize;
        let descsz = f.u32(notes, at + 4)? as usize;
        let kind = f.u32(notes, at + 8)?;
        let name_at = at + 12;
        let desc_at = name_at.checked_add(pad(namesz)?)?;
        let end = desc_at.checked_add(pad(descsz)?)?;
        let name = notes.get(name_at..name_at.checked_add(namesz)?)?;
        let desc = notes.get(desc_at..desc_at.checked_add(descsz)?)?;
        if kind == NT_GNU_BUILD_ID && name == b"GNU\0" {
            return (!desc.is_empty() && desc.len() <= MAX_BUILD_ID).then(|| desc.to_vec());
        }
        at = end;
    }
    None
}

/// Integer fields of the file's byte order.
struct Fields {
    big: bool,
}

impl Fields {
    fn bytes<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
        b.get(at..at.checked_add(N)?)?.try_into().ok()
    }
    fn u16(&self, b: &[u8], at: usize) -> Option<u16> {
        let v = Self::bytes::<2>(b, at)?;
        Some(if self.big {
            u16::from_be_bytes(v)
        } else {
            u16::from_le_bytes(v)
        })
    }
    fn u32(&self, b: &[u8], at: usize) -> Option<u32> {
        let v = Self::bytes::<4>(b, at)?;
        Some(if self.big {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        })
    }
    fn u64(&self, b: &[u8], at: usize) -> Option<u64> {
        let v = Self::bytes::<8>(b, at)?;
        Some(if self.big {
            u64::from_be_bytes(v)
        } else {
            u64::from_le_bytes(v)
        })
    }
}

/// A build-id as the usual lowercase hex string.
pub(crate) fn hex(id: &[u8]) -> String {
    if id.is_empty() {
        return "none".into();
    }
    id.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-bit little-endian ELF with one PT_NOTE segment holding `notes`.
    fn elf64(notes: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 64 + 56];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        f[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        f[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let ph = 64;
        f[ph..ph + 4].copy_from_slice(&PT_NOTE.to_le_bytes());
        f[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes());
        f[ph + 32..ph + 40].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        f[ph + 48..ph + 56].copy_from_slice(&4u64.to_le_bytes());
        f.extend_from_slice(notes);
        f
    }

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&(name.len() as u32).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&kind.to_le_bytes());
        n.extend_from_slice(name);
        n.resize(n.len().next_multiple_of(4), 0);
        n.extend_from_slice(desc);
        n.resize(n.len().next_multiple_of(4), 0);
        n
    }

    fn parse(file: &[u8]) -> Option<Vec<u8>> {
        build_id(&|off, len| {
            let off = usize::try_from(off).ok()?;
            let start = off.min(file.len());
            let end = off.saturating_add(len).min(file.len());
            Some(file[start..end].to_vec())
        })
    }

    #[test]
    fn finds_the_gnu_build_id_after_other_notes() {
        let id: Vec<u8> = (1..=20).collect();
        let mut notes = note(b"GNU\0", 1, &[0, 0, 0, 0, 3, 2, 0, 0]);
        notes.extend(note(b"Go\0\0", NT_GNU_BUILD_ID, b"not this one"));
        notes.extend(note(b"GNU\0", NT_GNU_BUILD_ID, &id));
        assert_eq!(parse(&elf64(&notes)), Some(id.clone()));
        assert_eq!(hex(&id[..3]), "010203");
        assert_eq!(hex(&[]), "none");
    }

    #[test]
    fn truncated_input_has_none_at_every_length() {
        let id = [0xabu8; 20];
        let file = elf64(&note(b"GNU\0", NT_GNU_BUILD_ID, &id));
        assert_eq!(parse(&file), Some(id.to_vec()));
        for len in 0..file.len() {
            assert_eq!(parse(&file[..len]), None, "cut at {len}");
        }
    }

    #[test]
    fn non_elf_and_garbage_headers_have_none() {
        assert_eq!(parse(b"#!/bin/sh\necho hello\n"), None);
        assert_eq!(parse(&[]), None);
        let id = [7u8; 16];
        let good = elf64(&note(b"GNU\0", NT_GNU_BUILD_ID, &id));
        let mut bad_class = good.clone();
        bad_class[4] = 9;
        assert_eq!(parse(&bad_class), None);
        let mut huge_phoff = good.clone();
        huge_phoff[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(parse(&huge_phoff), None);
        let mut huge_namesz = good.clone();
        huge_namesz[120..124].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse(&huge_namesz), None);
        let mut huge_filesz = good;
        huge_filesz[64 + 32..64 + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(parse(&huge_filesz), Some(id.to_vec()));
    }

    #[test]
    fn this_test_binary_has_a_build_id_like_the_system_does() {
        let exe = std::fs::File::open("/proc/self/exe").unwrap();
        // rustc links with --build-id on Linux by default; a missing one is not an error,
        // but then a second read must agree.
        assert_eq!(build_id_of(&exe), build_id_of(&exe));
        let sh = std::fs::File::open("/bin/sh").unwrap();
        let id = build_id_of(&sh).expect("/bin/sh has a build-id");
        assert!(id.len() == 20 || id.len() == 16, "{}", hex(&id));
    }
}
