//! Every kind survives write + read unchanged, and the directory-level
//! helpers (inventory, verify_roundtrip, id checks) behave.

mod common;

use images::pb;
use images::{ImageDir, ImageError, ImageKind};

#[test]
fn every_kind_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::full_dir(tmp.path());

    assert_eq!(dir.read_inventory().unwrap(), common::inventory());
    assert_eq!(
        dir.read::<pb::PstreeEntry>(ImageKind::Pstree, None)
            .unwrap(),
        common::pstree()
    );
    assert_eq!(
        dir.read_one::<pb::CoreEntry>(ImageKind::Core, Some(4242))
            .unwrap(),
        common::core(true)
    );
    assert_eq!(
        dir.read_one::<pb::CoreEntry>(ImageKind::Core, Some(4244))
            .unwrap(),
        common::core(false)
    );
    assert_eq!(
        dir.read_one::<pb::MmEntry>(ImageKind::Mm, Some(4242))
            .unwrap(),
        common::mm()
    );
    assert_eq!(
        dir.read_pagemap(4242).unwrap(),
        (common::pagemap_head(), common::pagemap_entries())
    );
    assert_eq!(
        dir.read::<pb::FdinfoEntry>(ImageKind::Fdinfo, Some(4242))
            .unwrap(),
        common::fdinfo()
    );
    assert_eq!(
        dir.read::<pb::FileEntry>(ImageKind::Files, None).unwrap(),
        common::files()
    );
    assert_eq!(
        dir.read::<pb::PipeData>(ImageKind::PipeData, None).unwrap(),
        common::pipe_data()
    );
    assert_eq!(
        dir.read_one::<pb::FsEntry>(ImageKind::Fs, Some(4242))
            .unwrap(),
        common::fs()
    );
    assert_eq!(
        dir.read::<pb::SigactionEntry>(ImageKind::Sigacts, Some(4242))
            .unwrap(),
        common::sigacts()
    );
    assert_eq!(
        dir.read::<pb::RlimitEntry>(ImageKind::Rlimits, Some(4242))
            .unwrap(),
        common::rlimits()
    );
    assert_eq!(
        dir.verify_roundtrip().unwrap(),
        Vec::<std::path::PathBuf>::new()
    );
}

#[test]
fn file_layout_is_magic_version_then_length_prefixed_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    let rl = common::rlimits();
    dir.write(ImageKind::Rlimits, Some(1), &rl).unwrap();
    dir.write_one(ImageKind::Inventory, None, &common::inventory())
        .unwrap();
    let bytes = std::fs::read(tmp.path().join("rlimits.img")).unwrap();

    assert_eq!(&bytes[..4], b"cRLM");
    assert_eq!(&bytes[4..8], &images::FORMAT_VERSION.to_le_bytes());
    let mut pos = 8;
    // The section of id 1: its head, then its records.
    let head = pb::SectionHead {
        id: 1,
        records: rl.len() as u32,
    };
    let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
    assert_eq!(
        &bytes[pos + 4..pos + 4 + len],
        prost::Message::encode_to_vec(&head).as_slice()
    );
    pos += 4 + len;
    for r in &rl {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let body = &bytes[pos + 4..pos + 4 + len];
        assert_eq!(body, prost::Message::encode_to_vec(r).as_slice());
        pos += 4 + len;
    }
    assert_eq!(pos, bytes.len(), "no trailing bytes");
}

#[test]
fn empty_record_list_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    dir.write::<pb::FdinfoEntry>(ImageKind::Fdinfo, Some(1), &[])
        .unwrap();
    assert_eq!(
        dir.read::<pb::FdinfoEntry>(ImageKind::Fdinfo, Some(1))
            .unwrap(),
        vec![]
    );
    // A record with only default fields has an empty body and still counts.
    dir.write_one(ImageKind::Fs, Some(1), &pb::FsEntry::default())
        .unwrap();
    assert_eq!(
        dir.read_one::<pb::FsEntry>(ImageKind::Fs, Some(1)).unwrap(),
        pb::FsEntry::default()
    );
}

#[test]
fn read_one_wants_exactly_one_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    dir.write(ImageKind::Fs, Some(9), &[common::fs(), common::fs()])
        .unwrap();
    let e = dir
        .read_one::<pb::FsEntry>(ImageKind::Fs, Some(9))
        .unwrap_err();
    assert!(
        matches!(e, ImageError::WrongCount { expected: 1, got: 2, id: Some(9), ref path } if path.ends_with("fs.img")),
        "{e:?}"
    );
    assert!(e.to_string().contains("fs.img (id 9)"), "{e}");

    dir.write::<pb::FsEntry>(ImageKind::Fs, Some(9), &[])
        .unwrap();
    let e = dir
        .read_one::<pb::FsEntry>(ImageKind::Fs, Some(9))
        .unwrap_err();
    assert!(matches!(e, ImageError::WrongCount { got: 0, .. }), "{e:?}");
}

#[test]
fn missing_image_is_missing_not_io() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    assert!(!dir.exists(ImageKind::Core, Some(1)));
    let e = dir
        .read_one::<pb::CoreEntry>(ImageKind::Core, Some(1))
        .unwrap_err();
    assert!(
        matches!(e, ImageError::Missing { ref path } if path.ends_with("core.img")),
        "{e:?}"
    );
    // The file exists, without that task in it.
    dir.write_one(ImageKind::Core, Some(2), &common::core(true))
        .unwrap();
    dir.commit_sections().unwrap();
    assert!(!dir.exists(ImageKind::Core, Some(1)));
    assert!(dir.exists(ImageKind::Core, Some(2)));
    let e = dir
        .read_one::<pb::CoreEntry>(ImageKind::Core, Some(1))
        .unwrap_err();
    assert!(
        matches!(e, ImageError::NoSection { id: 1, ref path } if path.ends_with("core.img")),
        "{e:?}"
    );
    // An incomplete dump has no inventory.
    assert!(matches!(
        dir.read_inventory(),
        Err(ImageError::Missing { .. })
    ));
}

#[test]
fn ids_must_fit_the_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    let e = dir
        .write_one(ImageKind::Core, None, &common::core(true))
        .unwrap_err();
    assert!(
        matches!(
            e,
            ImageError::BadId {
                kind: ImageKind::Core,
                id: None
            }
        ),
        "{e:?}"
    );
    let e = dir
        .read::<pb::FileEntry>(ImageKind::Files, Some(3))
        .unwrap_err();
    assert!(
        matches!(
            e,
            ImageError::BadId {
                kind: ImageKind::Files,
                id: Some(3)
            }
        ),
        "{e:?}"
    );
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn file_paths_follow_the_naming_scheme() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(&tmp.path().join("d")).unwrap();
    let name = |k, id| {
        dir.file_path(k, id)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(name(ImageKind::Inventory, None), "inventory.img");
    assert_eq!(name(ImageKind::Pstree, None), "pstree.img");
    assert_eq!(name(ImageKind::Core, Some(42)), "core.img");
    assert_eq!(name(ImageKind::Mm, Some(42)), "mm.img");
    assert_eq!(name(ImageKind::Pagemap, Some(42)), "pagemap.img");
    assert_eq!(name(ImageKind::Fdinfo, Some(42)), "fdinfo.img");
    assert_eq!(name(ImageKind::Files, None), "files.img");
    assert_eq!(name(ImageKind::PipeData, None), "pipes-data.img");
    assert_eq!(name(ImageKind::Fs, Some(42)), "fs.img");
    assert_eq!(name(ImageKind::Sigacts, Some(42)), "sigacts.img");
    assert_eq!(name(ImageKind::Rlimits, Some(42)), "rlimits.img");
    assert_eq!(name(ImageKind::ShmemPagemap, Some(42)), "pagemap-shmem.img");
    assert!(dir.pages_path(3).ends_with("pages-3.img"));
}

#[test]
fn inventory_of_another_format_version_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    let other = images::FORMAT_VERSION + 1;
    let inv = pb::InventoryEntry {
        format_version: other,
        ..common::inventory()
    };
    dir.write_one(ImageKind::Inventory, None, &inv).unwrap();
    let e = dir.read_inventory().unwrap_err();
    assert!(
        matches!(e, ImageError::BadVersion { found, ref path } if found == other && path.ends_with("inventory.img")),
        "{e:?}"
    );
    assert!(e.to_string().contains("inventory.img"), "{e}");
}

#[test]
fn open_refuses_missing_dir_and_plain_file() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    assert!(matches!(
        ImageDir::open(&missing),
        Err(ImageError::Missing { ref path }) if *path == missing
    ));
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        ImageDir::open(&file),
        Err(ImageError::NotADirectory { ref path }) if *path == file
    ));
    assert!(matches!(
        ImageDir::create(&file),
        Err(ImageError::NotADirectory { .. })
    ));
    assert!(ImageDir::open(tmp.path()).is_ok());
}

#[test]
fn verify_roundtrip_reports_files_with_unknown_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::full_dir(tmp.path());
    // An fs record as a newer writer might produce it: field 15 unknown here.
    let mut body = prost::Message::encode_to_vec(&common::fs());
    body.extend_from_slice(&[15 << 3, 1]);
    let path = tmp.path().join("fs.img");
    let mut bytes = images::encode_header(ImageKind::Fs).to_vec();
    let head = pb::SectionHead {
        id: 4242,
        records: 1,
    };
    bytes.extend(images::encode_record(&path, 8, &head).unwrap());
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&body);
    std::fs::write(&path, &bytes).unwrap();
    drop(dir);
    let dir = ImageDir::open(tmp.path()).unwrap();

    // Readable: the unknown field is skipped.
    assert_eq!(
        dir.read_one::<pb::FsEntry>(ImageKind::Fs, Some(4242))
            .unwrap(),
        common::fs()
    );
    assert_eq!(dir.verify_roundtrip().unwrap(), vec![path]);
}

#[test]
fn verify_roundtrip_rejects_unknown_and_leftover_files() {
    for stray in ["notes.txt", "core.img.tmp", "core-1.img"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = common::full_dir(tmp.path());
        std::fs::write(tmp.path().join(stray), b"").unwrap();
        let e = dir.verify_roundtrip().unwrap_err();
        assert!(
            matches!(e, ImageError::UnknownFile { ref path } if path.ends_with(stray)),
            "{stray}: {e:?}"
        );
    }
}

#[test]
fn verify_roundtrip_decodes_by_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::full_dir(tmp.path());
    // A valid image, but of another kind under this name.
    let bytes = std::fs::read(tmp.path().join("fs.img")).unwrap();
    std::fs::write(tmp.path().join("mm.img"), bytes).unwrap();
    let e = dir.verify_roundtrip().unwrap_err();
    assert!(
        matches!(e, ImageError::BadMagic { ref path, .. } if path.ends_with("mm.img")),
        "{e:?}"
    );
}

#[test]
fn streaming_writer_matches_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    dir.write(ImageKind::Sigacts, Some(1), &common::sigacts())
        .unwrap();
    let mut w = dir.writer(ImageKind::Sigacts, Some(2)).unwrap();
    for s in common::sigacts() {
        w.push(&s).unwrap();
    }
    w.commit().unwrap();
    dir.commit_sections().unwrap();
    let pack = images::Pack::parse(
        &dir.file_path(ImageKind::Sigacts, None),
        ImageKind::Sigacts,
        std::fs::read(tmp.path().join("sigacts.img")).unwrap(),
    )
    .unwrap();
    assert_eq!(pack.ids(), [1, 2]);
    let raw = |id| -> Vec<Vec<u8>> {
        pack.records(id)
            .unwrap()
            .map(|r| r.unwrap().body.to_vec())
            .collect()
    };
    assert_eq!(raw(1), raw(2));
}

#[test]
fn sections_reach_the_disk_with_the_inventory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    dir.write_one(ImageKind::Fs, Some(7), &common::fs())
        .unwrap();
    dir.write_one(ImageKind::Fs, Some(3), &common::fs())
        .unwrap();
    // Visible to this directory (and its clones) at once, in no file yet.
    let clone = dir.clone();
    assert_eq!(clone.ids(ImageKind::Fs).unwrap(), [3, 7]);
    assert!(clone.exists(ImageKind::Fs, Some(7)));
    assert!(!tmp.path().join("fs.img").exists());
    // A section written again replaces the first.
    dir.write::<pb::FsEntry>(ImageKind::Fs, Some(7), &[])
        .unwrap();
    assert_eq!(dir.read::<pb::FsEntry>(ImageKind::Fs, Some(7)).unwrap(), []);
    dir.write_one(ImageKind::Inventory, None, &common::inventory())
        .unwrap();
    let again = ImageDir::open(tmp.path()).unwrap();
    assert_eq!(again.ids(ImageKind::Fs).unwrap(), [3, 7]);
    assert_eq!(
        again
            .read_one::<pb::FsEntry>(ImageKind::Fs, Some(3))
            .unwrap(),
        common::fs()
    );
    assert_eq!(
        again.read::<pb::FsEntry>(ImageKind::Fs, Some(7)).unwrap(),
        []
    );
    // Nothing written is lost by a writer dropped uncommitted.
    let w = dir.writer(ImageKind::Fs, Some(3)).unwrap();
    drop(w);
    assert_eq!(
        dir.read_one::<pb::FsEntry>(ImageKind::Fs, Some(3)).unwrap(),
        common::fs()
    );
}

#[test]
fn bad_sections_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("fs.img");
    let section = |id, records| {
        let mut b = images::encode_record(&path, 0, &pb::SectionHead { id, records }).unwrap();
        for _ in 0..records.min(1) {
            b.extend(images::encode_record(&path, 0, &common::fs()).unwrap());
        }
        b
    };
    let file = |parts: &[Vec<u8>]| {
        let mut b = images::encode_header(ImageKind::Fs).to_vec();
        for p in parts {
            b.extend_from_slice(p);
        }
        std::fs::write(&path, &b).unwrap();
        (b.len(), ImageDir::open(tmp.path()).unwrap())
    };

    let (_, dir) = file(&[section(1, 1), section(1, 1)]);
    let e = dir
        .read_one::<pb::FsEntry>(ImageKind::Fs, Some(1))
        .unwrap_err();
    let second = 8 + section(1, 1).len() as u64;
    assert!(
        matches!(e, ImageError::DuplicateSection { id: 1, offset, .. } if offset == second),
        "{e:?}"
    );
    assert!(e.to_string().contains("fs.img"), "{e}");

    let (_, dir) = file(&[section(1, 1), section(2, 3)]);
    let e = dir
        .read_one::<pb::FsEntry>(ImageKind::Fs, Some(1))
        .unwrap_err();
    assert!(
        matches!(
            e,
            ImageError::ShortSection {
                id: 2,
                records: 3,
                got: 1,
                ..
            }
        ),
        "{e:?}"
    );

    // Cut inside the second section's record.
    let (len, _) = file(&[section(1, 1), section(2, 1)]);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..len - 2]).unwrap();
    let dir = ImageDir::open(tmp.path()).unwrap();
    let e = dir
        .read_one::<pb::FsEntry>(ImageKind::Fs, Some(1))
        .unwrap_err();
    assert!(matches!(e, ImageError::Truncated { .. }), "{e:?}");
    assert!(!dir.exists(ImageKind::Fs, Some(1)));
}

#[test]
fn parent_link_is_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = common::full_dir(&tmp.path().join("1"));
    let child = ImageDir::create(&tmp.path().join("2")).unwrap();
    assert!(child.parent().unwrap().is_none());
    std::os::unix::fs::symlink("../1", tmp.path().join("2").join(images::PARENT_LINK)).unwrap();
    let p = child.parent().unwrap().unwrap();
    assert_eq!(
        p.read_inventory().unwrap(),
        parent.read_inventory().unwrap()
    );
    // verify_roundtrip skips the link.
    assert_eq!(
        child.verify_roundtrip().unwrap(),
        Vec::<std::path::PathBuf>::new()
    );
}
