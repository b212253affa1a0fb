//! Deterministic fuzzing of the readers: thousands of mutated and truncated
//! versions of valid images must each decode or fail with an error naming
//! the file, never panic. Random pagemaps that pass validation must really
//! satisfy the invariants restore relies on.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use images::pagemap::{check_entries, LocatedEntry};
use images::pb::{self, PagemapEntry};
use images::{
    decode_image, encode_image, ImageDir, ImageError, ImageKind, Pack, PackBuilder, SectionBuilder,
    PAGE_SIZE,
};

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Mostly small numbers and edge values, sometimes anything.
    fn interesting(&mut self) -> u64 {
        match self.below(6) {
            0 => self.next(),
            1 => [0, 1, u64::MAX, u64::MAX - 4095, 1 << 63, 4096][self.below(6)],
            _ => self.next() % 16,
        }
    }
}

/// One random mutation of `bytes`.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    match rng.below(8) {
        // Flip a bit.
        0 if !bytes.is_empty() => {
            let i = rng.below(bytes.len());
            bytes[i] ^= 1 << rng.below(8);
        }
        // Overwrite a byte.
        1 if !bytes.is_empty() => {
            let i = rng.below(bytes.len());
            bytes[i] = rng.next() as u8;
        }
        // Truncate.
        2 => {
            let n = rng.below(bytes.len() + 1);
            bytes.truncate(n);
        }
        // Insert random bytes.
        3 => {
            let at = rng.below(bytes.len() + 1);
            let n = 1 + rng.below(8);
            for _ in 0..n {
                bytes.insert(at, rng.next() as u8);
            }
        }
        // Duplicate a chunk at the end.
        4 if !bytes.is_empty() => {
            let a = rng.below(bytes.len());
            let b = a + rng.below(bytes.len() - a + 1);
            let chunk = bytes[a..b].to_vec();
            bytes.extend_from_slice(&chunk);
        }
        // A 4-byte word (maybe a length prefix) set to an edge value.
        5 if bytes.len() >= 4 => {
            let i = rng.below(bytes.len() - 3);
            let v = [0u32, 1, 0x7f, 0xffff_ffff, 64 << 20, (64 << 20) + 1][rng.below(6)];
            bytes[i..i + 4].copy_from_slice(&v.to_le_bytes());
        }
        // Append garbage.
        6 => {
            let n = rng.below(16);
            for _ in 0..n {
                bytes.push(rng.next() as u8);
            }
        }
        // Delete a range.
        _ if !bytes.is_empty() => {
            let a = rng.below(bytes.len());
            let b = a + rng.below(bytes.len() - a + 1);
            bytes.drain(a..b);
        }
        _ => bytes.push(0),
    }
}

/// Decodes an image as its kind; returns the number of records.
type Decoder = fn(&Path, &[u8]) -> Result<usize, ImageError>;

fn decoder(kind: ImageKind) -> Decoder {
    match kind {
        ImageKind::Inventory => |p, b| dec::<pb::InventoryEntry>(p, ImageKind::Inventory, b),
        ImageKind::Pstree => |p, b| dec::<pb::PstreeEntry>(p, ImageKind::Pstree, b),
        ImageKind::Core => |p, b| sections::<pb::CoreEntry>(p, ImageKind::Core, b),
        ImageKind::Mm => |p, b| sections::<pb::MmEntry>(p, ImageKind::Mm, b),
        ImageKind::Pagemap => |p, b| pagemaps(p, ImageKind::Pagemap, b),
        ImageKind::Fdinfo => |p, b| sections::<pb::FdinfoEntry>(p, ImageKind::Fdinfo, b),
        ImageKind::Files => |p, b| dec::<pb::FileEntry>(p, ImageKind::Files, b),
        ImageKind::PipeData => |p, b| dec::<pb::PipeData>(p, ImageKind::PipeData, b),
        ImageKind::Fs => |p, b| sections::<pb::FsEntry>(p, ImageKind::Fs, b),
        ImageKind::Sigacts => |p, b| sections::<pb::SigactionEntry>(p, ImageKind::Sigacts, b),
        ImageKind::Rlimits => |p, b| sections::<pb::RlimitEntry>(p, ImageKind::Rlimits, b),
        ImageKind::IpcShm => |p, b| dec::<pb::SysvShmEntry>(p, ImageKind::IpcShm, b),
        ImageKind::ShmemPagemap => |p, b| pagemaps(p, ImageKind::ShmemPagemap, b),
    }
}

fn dec<M: prost::Message + Default>(p: &Path, k: ImageKind, b: &[u8]) -> Result<usize, ImageError> {
    decode_image::<M>(p, k, b).map(|v| v.len())
}

/// Every section of a per-task image, decoded as `M`.
fn sections<M: prost::Message + Default>(
    p: &Path,
    k: ImageKind,
    b: &[u8],
) -> Result<usize, ImageError> {
    let pack = Pack::parse(p, k, b.to_vec())?;
    let mut n = 0;
    for &id in pack.ids() {
        n += pack.decode::<M>(id)?.len();
    }
    Ok(n)
}

/// Part 0 of the pages, `len` bytes long: the only part the checked pagemaps may name.
fn pages_part0(len: u64) -> std::collections::HashMap<u32, (std::path::PathBuf, Option<u64>)> {
    [(0, ("pages-1.img".into(), Some(len)))]
        .into_iter()
        .collect()
}

/// Every pagemap of a pagemap image, checked against a pages file as large as the sample's.
fn pagemaps(p: &Path, k: ImageKind, b: &[u8]) -> Result<usize, ImageError> {
    let pack = Pack::parse(p, k, b.to_vec())?;
    let mut n = 0;
    for &id in pack.ids() {
        let (_, entries) = pack.pagemap(id)?;
        check_entries(p, &pages_part0(common::SAMPLE_PAGES * PAGE_SIZE), &entries)?;
        n += entries.len();
    }
    Ok(n)
}

/// A per-task image of two sections (ids 42 and 43), each holding `records`.
fn pack_of<M: prost::Message>(p: &Path, kind: ImageKind, records: &[&M]) -> Vec<u8> {
    let mut s = SectionBuilder::default();
    for r in records {
        s.push(p, *r).unwrap();
    }
    let mut b = PackBuilder::new(p, kind);
    b.section(42, &s).unwrap();
    b.section(43, &s).unwrap();
    b.finish()
}

fn valid_image(kind: ImageKind) -> Vec<u8> {
    let p = Path::new("x");
    let refs = |v: &[pb::SigactionEntry]| pack_of(p, kind, &v.iter().collect::<Vec<_>>());
    let r = match kind {
        ImageKind::Inventory => encode_image(p, kind, &[common::inventory()]),
        ImageKind::Pstree => encode_image(p, kind, &common::pstree()),
        ImageKind::Core => Ok(pack_of(p, kind, &[&common::core(true)])),
        ImageKind::Mm => Ok(pack_of(p, kind, &[&common::mm()])),
        ImageKind::Pagemap | ImageKind::ShmemPagemap => {
            let mut s = SectionBuilder::default();
            s.push(p, &common::pagemap_head()).unwrap();
            for e in common::pagemap_entries() {
                s.push(p, &e).unwrap();
            }
            let mut b = PackBuilder::new(p, kind);
            b.section(42, &s).unwrap();
            Ok(b.finish())
        }
        ImageKind::Fdinfo => Ok(pack_of(
            p,
            kind,
            &common::fdinfo().iter().collect::<Vec<_>>(),
        )),
        ImageKind::Files => encode_image(p, kind, &common::files()),
        ImageKind::PipeData => encode_image(p, kind, &common::pipe_data()),
        ImageKind::Fs => Ok(pack_of(p, kind, &[&common::fs()])),
        ImageKind::Sigacts => Ok(refs(&common::sigacts())),
        ImageKind::Rlimits => Ok(pack_of(
            p,
            kind,
            &common::rlimits().iter().collect::<Vec<_>>(),
        )),
        ImageKind::IpcShm => encode_image(
            p,
            kind,
            &[pb::SysvShmEntry {
                key: 0x1234,
                shmid: 32769,
                mode: 0o640,
                size: 3 * PAGE_SIZE,
                locked: true,
                object: 2,
                ..Default::default()
            }],
        ),
    };
    r.unwrap()
}

#[test]
fn mutated_images_never_panic() {
    const ITERS: usize = 3000;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut errors = 0;
    let mut oks = 0;
    for kind in ImageKind::ALL {
        let name = kind.file_name();
        let path = Path::new(&name);
        let valid = valid_image(kind);
        let decode = decoder(kind);
        assert!(
            decode(path, &valid).is_ok(),
            "{kind}: the seed image is valid"
        );

        for i in 0..ITERS {
            let mut bytes = valid.clone();
            for _ in 0..1 + rng.below(4) {
                mutate(&mut rng, &mut bytes);
            }
            let r = catch_unwind(AssertUnwindSafe(|| decode(path, &bytes)));
            match r {
                Err(_) => panic!("{kind} iteration {i}: reader panicked on {bytes:02x?}"),
                Ok(Ok(_)) => oks += 1,
                Ok(Err(e)) => {
                    errors += 1;
                    let msg = e.to_string();
                    assert!(
                        msg.contains(&name) || msg.contains("pages-7.img"),
                        "{kind} iteration {i}: error does not name the file: {msg}"
                    );
                }
            }
        }
    }
    // Mutations must both break images and leave some decodable (e.g. a
    // flipped bit inside a string), or the fuzzer is not exercising both paths.
    assert!(
        errors > ImageKind::ALL.len() * ITERS / 4,
        "errors: {errors}"
    );
    assert!(oks > 0, "no mutation decoded");
}

#[test]
fn mutated_files_never_panic_through_image_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::full_dir(tmp.path());
    let originals: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().contains("pages-"))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    assert_eq!(originals.len(), 11);

    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let mut failures = 0;
    for i in 0..600 {
        let (path, orig) = &originals[rng.below(originals.len())];
        let mut bytes = orig.clone();
        for _ in 0..1 + rng.below(3) {
            mutate(&mut rng, &mut bytes);
        }
        std::fs::write(path, &bytes).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            let name = path.file_name().unwrap().to_str().unwrap();
            let kind = ImageKind::from_file_name(name).unwrap();
            let id = kind.per_task().then_some(4242);
            // A fresh directory: the first reads it once and keeps what it read.
            let dir = ImageDir::open(tmp.path()).unwrap();
            let read = match kind {
                ImageKind::Inventory => dir.read_inventory().map(drop),
                ImageKind::Pagemap => dir.read_pagemap(4242).map(drop),
                ImageKind::Core => dir.read_one::<pb::CoreEntry>(kind, id).map(drop),
                ImageKind::Mm => dir.read_one::<pb::MmEntry>(kind, id).map(drop),
                ImageKind::Fs => dir.read_one::<pb::FsEntry>(kind, id).map(drop),
                _ => Ok(()),
            };
            (read, dir.verify_roundtrip())
        }));
        std::fs::write(path, orig).unwrap();
        match r {
            Err(_) => panic!("iteration {i}: {} panicked on {bytes:02x?}", path.display()),
            Ok((read, verify)) => {
                if let Err(e) = read {
                    failures += 1;
                    assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
                }
                match verify {
                    Err(e) => assert!(
                        e.to_string().contains(&*tmp.path().to_string_lossy()),
                        "{e}"
                    ),
                    // A mutation verify accepts changed nothing or is re-encoded identically.
                    Ok(differ) => assert!(differ.len() <= 1, "{differ:?}"),
                }
            }
        }
    }
    assert!(failures > 0);
    assert_eq!(
        dir.verify_roundtrip().unwrap(),
        Vec::<std::path::PathBuf>::new()
    );
}

/// Independent check of what a validated pagemap promises, in u128 so that
/// it cannot itself overflow.
fn assert_invariants(entries: &[LocatedEntry], pages_len: u64) {
    let page = u128::from(PAGE_SIZE);
    let mut file_ranges = Vec::new();
    for (i, le) in entries.iter().enumerate() {
        let e = &le.entry;
        let start = u128::from(e.vaddr);
        let end = start + u128::from(e.nr_pages) * page;
        assert!(e.nr_pages > 0 && start % page == 0 && end <= u128::from(u64::MAX));
        if let Some(prev) = i.checked_sub(1).map(|j| &entries[j].entry) {
            assert!(u128::from(prev.vaddr) + u128::from(prev.nr_pages) * page <= start);
        }
        if e.is_present() {
            assert_eq!(e.part, 0, "a run in a part of the pages that is not there");
            let fs = u128::from(e.pages_off) * page;
            let fe = fs + u128::from(e.nr_pages) * page;
            assert!(fe <= u128::from(pages_len));
            file_ranges.push((fs, fe));
        }
    }
    file_ranges.sort();
    for w in file_ranges.windows(2) {
        assert!(w[0].1 <= w[1].0, "file ranges overlap: {w:?}");
    }
}

#[test]
fn random_pagemaps_that_pass_hold_their_invariants() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let (mut passed, mut failed) = (0, 0);
    for i in 0..20_000 {
        let n = rng.below(6);
        let mut vaddr = rng.interesting() & !(PAGE_SIZE - 1);
        let mut pages_off = 0;
        let entries: Vec<_> = (0..n)
            .map(|k| {
                // Mostly plausible layouts, with random damage.
                let nr_pages = 1 + rng.below(4) as u64;
                let mut e = PagemapEntry {
                    vaddr,
                    nr_pages,
                    pages_off,
                    flags: [1, 1, 1, 2, 4][rng.below(5)],
                    part: 0,
                };
                vaddr = vaddr.wrapping_add((nr_pages + rng.below(3) as u64) * PAGE_SIZE);
                pages_off += nr_pages;
                if rng.below(4) == 0 {
                    match rng.below(5) {
                        0 => e.vaddr = rng.interesting(),
                        1 => e.nr_pages = rng.interesting(),
                        2 => e.pages_off = rng.interesting(),
                        3 => e.part = rng.interesting() as u32,
                        _ => e.flags = rng.interesting() as u32,
                    }
                }
                LocatedEntry {
                    offset: 8 + k as u64,
                    entry: e,
                }
            })
            .collect();
        let pages_len = (rng.below(24) as u64) * PAGE_SIZE + [0, 0, 0, 7][rng.below(4)];
        let r = catch_unwind(AssertUnwindSafe(|| {
            check_entries(
                Path::new("pagemap-1.img"),
                &pages_part0(pages_len),
                &entries,
            )
        }));
        match r {
            Err(_) => {
                panic!("iteration {i}: check_entries panicked on {entries:?} with {pages_len}")
            }
            Ok(Ok(())) => {
                passed += 1;
                assert_invariants(&entries, pages_len);
            }
            Ok(Err(e)) => {
                failed += 1;
                assert!(e.to_string().contains("pagemap-1.img"), "{e}");
            }
        }
    }
    assert!(
        passed > 1000 && failed > 1000,
        "passed {passed}, failed {failed}"
    );
}
