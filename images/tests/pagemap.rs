//! Pagemap validation: every way an entry can point somewhere it must not.

mod common;

use images::pb::{PagemapEntry, PagemapHead};
use images::{ImageDir, ImageError, Space, PAGE_SIZE, PE_IN_PARENT, PE_PRESENT, PE_ZERO};

const PID: u32 = 42;

fn entry(vaddr: u64, nr_pages: u64, pages_off: u64, flags: u32) -> PagemapEntry {
    PagemapEntry {
        vaddr,
        nr_pages,
        pages_off,
        flags,
        part: 0,
    }
}

fn present(vaddr: u64, nr_pages: u64, pages_off: u64) -> PagemapEntry {
    entry(vaddr, nr_pages, pages_off, PE_PRESENT)
}

/// Writes the pagemap with a pages file of `pages` pages and reads it back.
fn check(
    entries: &[PagemapEntry],
    pages: u64,
) -> (
    tempfile::TempDir,
    Result<(PagemapHead, Vec<PagemapEntry>), ImageError>,
) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    common::write_pages(&dir, 1, pages);
    dir.write_pagemap(PID, &PagemapHead { pages_id: 1 }, entries)
        .unwrap();
    dir.commit_sections().unwrap();
    let r = ImageDir::open(tmp.path()).unwrap().read_pagemap(PID);
    (tmp, r)
}

/// Offset of record `i` (0 = head) when every record before it has the
/// encoded size of the corresponding element.
fn offset_of(entries: &[PagemapEntry], i: usize) -> u64 {
    let section = prost::Message::encoded_len(&images::pb::SectionHead {
        id: PID,
        records: entries.len() as u32 + 1,
    }) as u64;
    let head = prost::Message::encoded_len(&PagemapHead { pages_id: 1 }) as u64;
    8 + 4
        + section
        + 4
        + head
        + entries[..i]
            .iter()
            .map(|e| 4 + prost::Message::encoded_len(e) as u64)
            .sum::<u64>()
}

fn assert_msg(e: &ImageError, offset: u64, vaddr: u64) {
    let msg = e.to_string();
    assert!(msg.contains("pagemap.img"), "{msg}");
    assert!(msg.contains(&format!("offset {offset}")), "{msg}");
    assert!(msg.contains(&format!("{vaddr:#x}")), "{msg}");
}

#[test]
fn valid_pagemap_reads_back_with_pages() {
    let entries = vec![
        present(0x1000, 2, 0),
        entry(0x3000, 1, 0, PE_ZERO),
        entry(0x4000, 1, 99, PE_IN_PARENT),
        present(0x10000, 1, 2),
    ];
    let (tmp, r) = check(&entries, 3);
    assert_eq!(r.unwrap(), (PagemapHead { pages_id: 1 }, entries.clone()));
    // The run at page 2 of the pages file holds what write_pages put there.
    let pages = std::fs::read(tmp.path().join("pages-1.img")).unwrap();
    let off = (entries[3].pages_off * PAGE_SIZE) as usize;
    assert!(pages[off..off + PAGE_SIZE as usize].iter().all(|&b| b == 2));
}

#[test]
fn overlapping_addresses() {
    let entries = vec![present(0x1000, 2, 0), present(0x2000, 1, 2)];
    let (_t, r) = check(&entries, 3);
    let e = r.unwrap_err();
    let off = offset_of(&entries, 1);
    assert!(
        matches!(e, ImageError::Overlap { offset, vaddr: 0x2000, space: Space::Address, .. } if offset == off),
        "{e:?}"
    );
    assert_msg(&e, off, 0x2000);
}

#[test]
fn same_address_twice_is_an_overlap() {
    let entries = vec![entry(0x1000, 1, 0, PE_ZERO), entry(0x1000, 1, 0, PE_ZERO)];
    let (_t, r) = check(&entries, 0);
    assert!(matches!(
        r.unwrap_err(),
        ImageError::Overlap {
            space: Space::Address,
            ..
        }
    ));
}

#[test]
fn overlapping_in_pages_file() {
    // Disjoint addresses, but both runs claim page 1 of the file.
    let entries = vec![present(0x1000, 2, 0), present(0x8000, 1, 1)];
    let (_t, r) = check(&entries, 3);
    let e = r.unwrap_err();
    let off = offset_of(&entries, 1);
    assert!(
        matches!(e, ImageError::Overlap { offset, vaddr: 0x8000, space: Space::PagesFile, .. } if offset == off),
        "{e:?}"
    );
    assert_msg(&e, off, 0x8000);
}

#[test]
fn runs_out_of_file_order_are_fine_if_disjoint() {
    let entries = vec![present(0x1000, 1, 2), present(0x8000, 2, 0)];
    let (_t, r) = check(&entries, 3);
    assert_eq!(r.unwrap().1, entries);
}

#[test]
fn unsorted() {
    let entries = vec![present(0x8000, 1, 0), present(0x1000, 1, 1)];
    let (_t, r) = check(&entries, 2);
    let e = r.unwrap_err();
    let off = offset_of(&entries, 1);
    assert!(
        matches!(e, ImageError::Unsorted { offset, vaddr: 0x1000, .. } if offset == off),
        "{e:?}"
    );
    assert_msg(&e, off, 0x1000);
}

#[test]
fn unaligned() {
    let entries = vec![present(0x1000, 1, 0), present(0x2010, 1, 1)];
    let (_t, r) = check(&entries, 2);
    let e = r.unwrap_err();
    let off = offset_of(&entries, 1);
    assert!(
        matches!(e, ImageError::Unaligned { offset, vaddr: 0x2010, .. } if offset == off),
        "{e:?}"
    );
    assert_msg(&e, off, 0x2010);
}

#[test]
fn past_end_of_pages_file() {
    let entries = vec![present(0x1000, 1, 0), present(0x2000, 2, 1)];
    let (_t, r) = check(&entries, 2);
    let e = r.unwrap_err();
    let off = offset_of(&entries, 1);
    assert!(
        matches!(e, ImageError::PastEnd { offset, vaddr: 0x2000, pages_len, ref pages_path, .. }
            if offset == off && pages_len == 2 * PAGE_SIZE && pages_path.ends_with("pages-1.img")),
        "{e:?}"
    );
    assert_msg(&e, off, 0x2000);
    assert!(e.to_string().contains("pages-1.img"), "{e}");
}

#[test]
fn partial_last_page_is_past_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    std::fs::write(dir.pages_path(1), vec![0u8; PAGE_SIZE as usize + 100]).unwrap();
    dir.write_pagemap(PID, &PagemapHead { pages_id: 1 }, &[present(0, 2, 0)])
        .unwrap();
    assert!(matches!(
        dir.read_pagemap(PID),
        Err(ImageError::PastEnd { .. })
    ));
}

#[test]
fn missing_pages_file_matters_only_for_present_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    let head = PagemapHead { pages_id: 5 };
    let zero = [
        entry(0x1000, 4, 0, PE_ZERO),
        entry(0x9000, 1, 0, PE_IN_PARENT),
    ];
    dir.write_pagemap(PID, &head, &zero).unwrap();
    assert_eq!(dir.read_pagemap(PID).unwrap().1, zero);

    dir.write_pagemap(PID, &head, &[present(0x1000, 1, 0)])
        .unwrap();
    let e = dir.read_pagemap(PID).unwrap_err();
    assert!(
        matches!(e, ImageError::Missing { ref path } if path.ends_with("pages-5.img")),
        "{e:?}"
    );
}

#[test]
fn address_overflowing_u64() {
    let vaddr = u64::MAX - PAGE_SIZE + 1; // last page: its end is 2^64
    let entries = vec![entry(vaddr, 1, 0, PE_ZERO)];
    let (_t, r) = check(&entries, 0);
    let e = r.unwrap_err();
    let off = offset_of(&entries, 0);
    assert!(
        matches!(e, ImageError::Overflow { offset, vaddr: v, .. } if offset == off && v == vaddr),
        "{e:?}"
    );
    assert_msg(&e, off, vaddr);

    // nr_pages * PAGE_SIZE itself overflowing.
    let (_t, r) = check(&[entry(0x1000, u64::MAX / 2, 0, PE_ZERO)], 0);
    assert!(matches!(r.unwrap_err(), ImageError::Overflow { .. }));
}

#[test]
fn pages_offset_overflowing_u64() {
    // pages_off * PAGE_SIZE overflows.
    let (_t, r) = check(&[present(0x1000, 1, u64::MAX / 1024)], 4);
    assert!(matches!(r.unwrap_err(), ImageError::Overflow { .. }));
    // pages_off * PAGE_SIZE fits, adding the run length does not.
    let last = u64::MAX / PAGE_SIZE;
    let (_t, r) = check(&[present(0x1000, 2, last)], 4);
    assert!(matches!(r.unwrap_err(), ImageError::Overflow { .. }));
}

#[test]
fn empty_run() {
    let entries = vec![present(0x1000, 0, 0)];
    let (_t, r) = check(&entries, 1);
    let e = r.unwrap_err();
    let off = offset_of(&entries, 0);
    assert!(
        matches!(e, ImageError::Empty { offset, vaddr: 0x1000, .. } if offset == off),
        "{e:?}"
    );
    assert_msg(&e, off, 0x1000);
}

#[test]
fn flags_must_be_exactly_one_known_bit() {
    for flags in [
        0,
        PE_PRESENT | PE_ZERO,
        PE_PRESENT | PE_IN_PARENT,
        8,
        u32::MAX,
    ] {
        let (_t, r) = check(&[entry(0x1000, 1, 0, flags)], 1);
        let e = r.unwrap_err();
        assert!(
            matches!(e, ImageError::BadFlags { flags: f, .. } if f == flags),
            "{flags:#x}: {e:?}"
        );
    }
}

#[test]
fn pagemap_without_head() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    dir.write::<PagemapEntry>(images::ImageKind::Pagemap, Some(PID), &[])
        .unwrap();
    let e = dir.read_pagemap(PID).unwrap_err();
    assert!(
        matches!(e, ImageError::MissingHead { ref path } if path.ends_with("pagemap.img")),
        "{e:?}"
    );
}

#[test]
fn entry_helpers() {
    let e = present(0x1000, 3, 2);
    assert!(e.is_present() && !e.is_zero() && !e.is_in_parent());
    assert_eq!(e.byte_len(), Some(3 * PAGE_SIZE));
    assert_eq!(e.end(), Some(0x4000));
    assert_eq!(e.file_offset(), Some(2 * PAGE_SIZE));
    assert_eq!(present(!0xfff, 1, 0).end(), None);
}

/// Runs in two parts of the pages: each checked against its own file, at the same offsets.
#[test]
fn runs_in_parts_are_checked_against_their_own_file() {
    let in_part = |vaddr, nr, off, part| PagemapEntry {
        part,
        ..present(vaddr, nr, off)
    };
    // The same file offsets in two parts do not overlap.
    let entries = vec![in_part(0x1000, 2, 0, 0), in_part(0x3000, 2, 0, 1)];
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    common::write_pages(&dir, 1, 2);
    std::fs::write(dir.pages_part_path(1, 1), vec![0u8; PAGE_SIZE as usize]).unwrap();
    assert!(dir.pages_part_path(1, 1).ends_with("pages-1.1.img"));
    dir.write_pagemap(PID, &PagemapHead { pages_id: 1 }, &entries)
        .unwrap();
    dir.commit_sections().unwrap();
    // Part 1 holds one page: the run of two reaches past its end, not past part 0's.
    let e = ImageDir::open(tmp.path())
        .unwrap()
        .read_pagemap(PID)
        .unwrap_err();
    assert!(
        matches!(e, ImageError::PastEnd { vaddr: 0x3000, pages_len, ref pages_path, .. }
            if pages_len == PAGE_SIZE && pages_path.ends_with("pages-1.1.img")),
        "{e:?}"
    );
    std::fs::write(dir.pages_part_path(1, 1), vec![0u8; 2 * PAGE_SIZE as usize]).unwrap();
    let (_, got) = ImageDir::open(tmp.path())
        .unwrap()
        .read_pagemap(PID)
        .unwrap();
    assert_eq!(got, entries);
    // A part whose file is not there, and a part out of range.
    std::fs::remove_file(dir.pages_part_path(1, 1)).unwrap();
    let e = ImageDir::open(tmp.path())
        .unwrap()
        .read_pagemap(PID)
        .unwrap_err();
    assert!(
        matches!(e, ImageError::Missing { ref path } if path.ends_with("pages-1.1.img")),
        "{e:?}"
    );
    let (_t, r) = check(&[in_part(0x1000, 1, 0, 1000)], 1);
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            ImageError::BadPart {
                part: 1000,
                vaddr: 0x1000,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("part 1000"), "{e}");
}
