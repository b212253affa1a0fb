//! Damaged record images: each kind of damage is its own error variant,
//! and its message names the file and the offset.

mod common;

use std::path::{Path, PathBuf};

use images::pb;
use images::{ImageDir, ImageError, ImageKind, Part, MAX_RECORD_LEN};

/// A dir with `pstree.img` holding one record; returns the file's bytes.
fn record_image(tmp: &Path) -> (ImageDir, PathBuf, Vec<u8>) {
    let dir = ImageDir::create(tmp).unwrap();
    dir.write_one(ImageKind::Pstree, None, &common::pstree()[0])
        .unwrap();
    let path = dir.file_path(ImageKind::Pstree, None);
    let bytes = std::fs::read(&path).unwrap();
    (dir, path, bytes)
}

fn read_record_image(dir: &ImageDir) -> ImageError {
    dir.read::<pb::PstreeEntry>(ImageKind::Pstree, None)
        .unwrap_err()
}

fn assert_names(e: &ImageError, what: &[&str]) {
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    for w in what {
        assert!(msg.contains(w), "{msg:?} should mention {w:?}");
    }
}

#[test]
fn truncated_header() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, path, bytes) = record_image(tmp.path());
    for cut in [0, 2, 4, 7] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let e = read_record_image(&dir);
        assert!(
            matches!(e, ImageError::Truncated { what: Part::Header, offset: 0, wanted: 8, got, .. } if got == cut as u64),
            "cut {cut}: {e:?}"
        );
        assert_names(&e, &["pstree.img", "truncated header", "offset 0"]);
    }
}

#[test]
fn truncated_record_length() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, path, bytes) = record_image(tmp.path());
    let mut b = bytes.clone();
    b.extend_from_slice(&[1, 0]); // half a second length prefix
    std::fs::write(&path, &b).unwrap();
    let e = read_record_image(&dir);
    let at = bytes.len() as u64;
    assert!(
        matches!(e, ImageError::Truncated { what: Part::RecordLength, offset, wanted: 4, got: 2, .. } if offset == at),
        "{e:?}"
    );
    assert_names(
        &e,
        &[
            "pstree.img",
            "truncated record length",
            &format!("offset {at}"),
        ],
    );
}

#[test]
fn truncated_record_body() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, path, bytes) = record_image(tmp.path());
    let body_len = bytes.len() as u64 - 12;
    std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    let e = read_record_image(&dir);
    assert!(
        matches!(e, ImageError::Truncated { what: Part::Record, offset: 8, wanted, got, .. }
            if wanted == body_len && got == body_len - 5),
        "{e:?}"
    );
    assert_names(
        &e,
        &[
            "pstree.img: truncated record at offset 8",
            &format!("(wanted {body_len} bytes, got {})", body_len - 5),
        ],
    );
}

#[test]
fn wrong_magic() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, path, mut bytes) = record_image(tmp.path());
    bytes[..4].copy_from_slice(&ImageKind::Mm.magic().to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let e = read_record_image(&dir);
    assert!(
        matches!(e, ImageError::BadMagic { found, expected, .. }
            if found == ImageKind::Mm.magic() && expected == ImageKind::Pstree.magic()),
        "{e:?}"
    );
    assert_names(&e, &["pstree.img", "bad magic"]);

    // Even a file too short for a header says "wrong kind" if its magic is there.
    std::fs::write(&path, &bytes[..5]).unwrap();
    assert!(matches!(
        read_record_image(&dir),
        ImageError::BadMagic { .. }
    ));
}

#[test]
fn wrong_version() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, path, mut bytes) = record_image(tmp.path());
    bytes[4..8].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let e = read_record_image(&dir);
    assert!(
        matches!(e, ImageError::BadVersion { found: 99, .. }),
        "{e:?}"
    );
    assert_names(&e, &["pstree.img", "version 99"]);
}

#[test]
fn oversized_length_is_an_error_not_an_allocation() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, path, mut bytes) = record_image(tmp.path());
    for len in [MAX_RECORD_LEN as u32 + 1, u32::MAX] {
        bytes[8..12].copy_from_slice(&len.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let e = read_record_image(&dir);
        assert!(
            matches!(e, ImageError::Oversized { offset: 8, len: l, .. } if l == u64::from(len)),
            "{e:?}"
        );
        assert_names(&e, &["pstree.img", "offset 8", &len.to_string()]);
    }
    // At the limit the length is accepted, and the short file is truncated.
    bytes[8..12].copy_from_slice(&(MAX_RECORD_LEN as u32).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        read_record_image(&dir),
        ImageError::Truncated {
            what: Part::Record,
            ..
        }
    ));
}

#[test]
fn oversized_record_is_not_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    let huge = pb::PipeData {
        pipe_ino: 1,
        size: 0,
        data: vec![0; MAX_RECORD_LEN as usize],
        ..Default::default()
    };
    let e = dir
        .write(ImageKind::PipeData, None, &[pb::PipeData::default(), huge])
        .unwrap_err();
    // Header (8) + the empty first record (4).
    assert!(
        matches!(e, ImageError::Oversized { offset: 12, .. }),
        "{e:?}"
    );
    assert!(!dir.exists(ImageKind::PipeData, None));
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "tmp removed"
    );
}

#[test]
fn garbage_protobuf() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, path, bytes) = record_image(tmp.path());
    let mut b = bytes.clone();
    // A second record: tag with the invalid wire type 7.
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&[0x0f, 0xff, 0xff]);
    std::fs::write(&path, &b).unwrap();
    let e = read_record_image(&dir);
    let at = bytes.len() as u64;
    assert!(
        matches!(e, ImageError::Decode { offset, record: "PstreeEntry", .. } if offset == at),
        "{e:?}"
    );
    assert_names(&e, &["pstree.img", &format!("offset {at}"), "PstreeEntry"]);
    assert!(
        std::error::Error::source(&e).is_some(),
        "prost's error is the source"
    );

    // A varint running past the end of the body.
    let mut b = bytes[..8].to_vec();
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&[0x08, 0x80]);
    std::fs::write(&path, &b).unwrap();
    assert!(matches!(
        read_record_image(&dir),
        ImageError::Decode { offset: 8, .. }
    ));
}

#[test]
fn record_of_wrong_type_for_field_is_a_decode_error() {
    // PstreeEntry.comm (field 16) is a string; a varint under its tag must not decode.
    let tmp = tempfile::tempdir().unwrap();
    let (dir, path, bytes) = record_image(tmp.path());
    let mut b = bytes[..8].to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&[0x80, 0x01, 0x01]);
    std::fs::write(&path, &b).unwrap();
    assert!(matches!(
        read_record_image(&dir),
        ImageError::Decode { offset: 8, .. }
    ));
}

#[test]
fn errors_name_the_full_path() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, path, bytes) = record_image(tmp.path());
    std::fs::write(&path, &bytes[..3]).unwrap();
    let e = read_record_image(&dir);
    assert!(
        e.to_string().starts_with(&format!("{}: ", path.display())),
        "{e}"
    );
}

#[test]
fn damage_inside_a_section_names_the_file_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    dir.write_one(ImageKind::Core, Some(41), &common::core(false))
        .unwrap();
    dir.write_one(ImageKind::Core, Some(42), &common::core(true))
        .unwrap();
    dir.commit_sections().unwrap();
    let path = dir.file_path(ImageKind::Core, Some(42));
    let bytes = std::fs::read(&path).unwrap();
    let pack = images::Pack::parse(&path, ImageKind::Core, bytes.clone()).unwrap();
    let at = pack.records(42).unwrap().position();
    // The first byte of 42's record body: a tag with the invalid wire type 7.
    let mut b = bytes.clone();
    b[at as usize + 4] = 0x0f;
    std::fs::write(&path, &b).unwrap();
    let dir = ImageDir::open(tmp.path()).unwrap();
    let e = dir
        .read::<pb::CoreEntry>(ImageKind::Core, Some(42))
        .unwrap_err();
    assert!(
        matches!(e, ImageError::Decode { offset, record: "CoreEntry", .. } if offset == at),
        "{e:?}"
    );
    assert_names(&e, &["core.img", &format!("offset {at}")]);
    // The other section still reads.
    assert_eq!(
        dir.read_one::<pb::CoreEntry>(ImageKind::Core, Some(41))
            .unwrap(),
        common::core(false)
    );
}
