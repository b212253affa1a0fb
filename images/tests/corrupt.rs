//! Damaged record images: each kind of damage is its own error variant,
//! and its message names the file and the offset.

mod common;

use std::path::{Path, PathBuf};

use images::pb;
use images::{ImageDir, ImageError, ImageKind, Part, MAX_RECORD_LEN};

/// A dir with `core-42.img` holding one record; returns the file's bytes.
fn core_image(tmp: &Path) -> (ImageDir, PathBuf, Vec<u8>) {
    let dir = ImageDir::create(tmp).unwrap();
    dir.write_one(ImageKind::Core, Some(42), &common::core(true))
        .unwrap();
    let path = dir.file_path(ImageKind::Core, Some(42));
    let bytes = std::fs::read(&path).unwrap();
    (dir, path, bytes)
}

fn read_core(dir: &ImageDir) -> ImageError {
    dir.read::<pb::CoreEntry>(ImageKind::Core, Some(42))
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
    let (dir, path, bytes) = core_image(tmp.path());
    for cut in [0, 2, 4, 7] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let e = read_core(&dir);
        assert!(
            matches!(e, ImageError::Truncated { what: Part::Header, offset: 0, wanted: 8, got, .. } if got == cut as u64),
            "cut {cut}: {e:?}"
        );
        assert_names(&e, &["core-42.img", "truncated header", "offset 0"]);
    }
}

#[test]
fn truncated_record_length() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, path, bytes) = core_image(tmp.path());
    let mut b = bytes.clone();
    b.extend_from_slice(&[1, 0]); // half a second length prefix
    std::fs::write(&path, &b).unwrap();
    let e = read_core(&dir);
    let at = bytes.len() as u64;
    assert!(
        matches!(e, ImageError::Truncated { what: Part::RecordLength, offset, wanted: 4, got: 2, .. } if offset == at),
        "{e:?}"
    );
    assert_names(
        &e,
        &[
            "core-42.img",
            "truncated record length",
            &format!("offset {at}"),
        ],
    );
}

#[test]
fn truncated_record_body() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, path, bytes) = core_image(tmp.path());
    let body_len = bytes.len() as u64 - 12;
    std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    let e = read_core(&dir);
    assert!(
        matches!(e, ImageError::Truncated { what: Part::Record, offset: 8, wanted, got, .. }
            if wanted == body_len && got == body_len - 5),
        "{e:?}"
    );
    assert_names(
        &e,
        &[
            "core-42.img: truncated record at offset 8",
            &format!("(wanted {body_len} bytes, got {})", body_len - 5),
        ],
    );
}

#[test]
fn wrong_magic() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, path, mut bytes) = core_image(tmp.path());
    bytes[..4].copy_from_slice(&ImageKind::Mm.magic().to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let e = read_core(&dir);
    assert!(
        matches!(e, ImageError::BadMagic { found, expected, .. }
            if found == ImageKind::Mm.magic() && expected == ImageKind::Core.magic()),
        "{e:?}"
    );
    assert_names(&e, &["core-42.img", "bad magic"]);

    // Even a file too short for a header says "wrong kind" if its magic is there.
    std::fs::write(&path, &bytes[..5]).unwrap();
    assert!(matches!(read_core(&dir), ImageError::BadMagic { .. }));
}

#[test]
fn wrong_version() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, path, mut bytes) = core_image(tmp.path());
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let e = read_core(&dir);
    assert!(
        matches!(e, ImageError::BadVersion { found: 2, .. }),
        "{e:?}"
    );
    assert_names(&e, &["core-42.img", "version 2"]);
}

#[test]
fn oversized_length_is_an_error_not_an_allocation() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, path, mut bytes) = core_image(tmp.path());
    for len in [MAX_RECORD_LEN as u32 + 1, u32::MAX] {
        bytes[8..12].copy_from_slice(&len.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let e = read_core(&dir);
        assert!(
            matches!(e, ImageError::Oversized { offset: 8, len: l, .. } if l == u64::from(len)),
            "{e:?}"
        );
        assert_names(&e, &["core-42.img", "offset 8", &len.to_string()]);
    }
    // At the limit the length is accepted, and the short file is truncated.
    bytes[8..12].copy_from_slice(&(MAX_RECORD_LEN as u32).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        read_core(&dir),
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
    let (dir, path, bytes) = core_image(tmp.path());
    let mut b = bytes.clone();
    // A second record: tag with the invalid wire type 7.
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&[0x0f, 0xff, 0xff]);
    std::fs::write(&path, &b).unwrap();
    let e = read_core(&dir);
    let at = bytes.len() as u64;
    assert!(
        matches!(e, ImageError::Decode { offset, record: "CoreEntry", .. } if offset == at),
        "{e:?}"
    );
    assert_names(&e, &["core-42.img", &format!("offset {at}"), "CoreEntry"]);
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
        read_core(&dir),
        ImageError::Decode { offset: 8, .. }
    ));
}

#[test]
fn record_of_wrong_type_for_field_is_a_decode_error() {
    // CoreEntry.thread is a message; a varint under its tag must not decode.
    let tmp = tempfile::tempdir().unwrap();
    let (dir, path, bytes) = core_image(tmp.path());
    let mut b = bytes[..8].to_vec();
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&[0x08, 0x01]);
    std::fs::write(&path, &b).unwrap();
    assert!(matches!(
        read_core(&dir),
        ImageError::Decode { offset: 8, .. }
    ));
}

#[test]
fn errors_name_the_full_path() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, path, bytes) = core_image(tmp.path());
    std::fs::write(&path, &bytes[..3]).unwrap();
    let e = read_core(&dir);
    assert!(
        e.to_string().starts_with(&format!("{}: ", path.display())),
        "{e}"
    );
}
