//! How image files appear on disk: private modes and atomic creation.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use images::pb;
use images::{ImageDir, ImageKind};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn created_files_are_mode_0600_and_dir_0700() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("a").join("dump");
    let dir = common::full_dir(&root);
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&tmp.path().join("a")), 0o700);
    let mut n = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        n += 1;
    }
    assert_eq!(n, 12, "every image of full_dir was looked at");
}

#[test]
fn stale_tmp_with_loose_mode_is_not_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    for (stale, kind) in [
        ("fs.img.tmp", ImageKind::Fs),
        ("files.img.tmp", ImageKind::Files),
    ] {
        let stale = tmp.path().join(stale);
        std::fs::write(&stale, b"junk").unwrap();
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).unwrap();
        if kind == ImageKind::Fs {
            dir.write_one(ImageKind::Fs, Some(1), &common::fs())
                .unwrap();
            dir.commit_sections().unwrap();
        } else {
            dir.write(ImageKind::Files, None, &common::files()).unwrap();
        }
        assert_eq!(mode(&dir.file_path(kind, None)), 0o600);
        assert!(!stale.exists());
    }
}

#[test]
fn existing_dir_keeps_its_mode() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
    ImageDir::create(tmp.path()).unwrap();
    assert_eq!(mode(tmp.path()), 0o750);
}

#[test]
fn image_appears_only_when_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    let path = dir.file_path(ImageKind::Files, None);
    let tmp_file = tmp.path().join("files.img.tmp");

    let mut w = dir.writer(ImageKind::Files, None).unwrap();
    for f in common::files() {
        w.push(&f).unwrap();
        assert!(!path.exists(), "final name exists before commit");
        assert!(!dir.exists(ImageKind::Files, None));
        assert!(tmp_file.exists());
    }
    w.commit().unwrap();
    assert!(path.exists());
    assert!(!tmp_file.exists());
    assert_eq!(
        dir.read::<pb::FileEntry>(ImageKind::Files, None).unwrap(),
        common::files()
    );

    // Sections: in memory until committed, then one whole file.
    let path = dir.file_path(ImageKind::Sigacts, Some(7));
    let mut w = dir.writer(ImageKind::Sigacts, Some(7)).unwrap();
    for s in common::sigacts() {
        w.push(&s).unwrap();
    }
    assert!(!dir.exists(ImageKind::Sigacts, Some(7)));
    w.commit().unwrap();
    assert!(dir.exists(ImageKind::Sigacts, Some(7)));
    assert!(!path.exists());
    dir.commit_sections().unwrap();
    assert!(path.exists());
    assert!(!tmp.path().join("sigacts.img.tmp").exists());
    assert_eq!(
        ImageDir::open(tmp.path())
            .unwrap()
            .read::<pb::SigactionEntry>(ImageKind::Sigacts, Some(7))
            .unwrap(),
        common::sigacts()
    );
}

#[test]
fn abandoned_writer_leaves_previous_image_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    dir.write(ImageKind::PipeData, None, &common::pipe_data())
        .unwrap();
    let before = std::fs::read(dir.file_path(ImageKind::PipeData, None)).unwrap();

    let mut w = dir.writer(ImageKind::PipeData, None).unwrap();
    w.push(&pb::PipeData::default()).unwrap();
    drop(w);

    assert_eq!(
        std::fs::read(dir.file_path(ImageKind::PipeData, None)).unwrap(),
        before
    );
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["pipes-data.img"], "temporary file removed");
}

#[test]
fn pages_appear_only_when_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    let mut f = dir.create_pages(3).unwrap();
    assert_eq!(mode(&tmp.path().join("pages-3.img.tmp")), 0o600);
    f.write_all(&[1u8; 4096]).unwrap();
    drop(f);
    assert!(!dir.pages_path(3).exists());
    dir.commit_pages(3).unwrap();
    assert_eq!(std::fs::read(dir.pages_path(3)).unwrap(), vec![1u8; 4096]);
    assert_eq!(mode(&dir.pages_path(3)), 0o600);
    assert!(!tmp.path().join("pages-3.img.tmp").exists());

    // Committing what was never created says which file is missing.
    let e = dir.commit_pages(4).unwrap_err();
    assert!(
        matches!(e, images::ImageError::Missing { ref path } if path.ends_with("pages-4.img.tmp")),
        "{e:?}"
    );
}

#[test]
fn fsync_mode_writes_the_same_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap().with_fsync(true);
    dir.write_one(ImageKind::Mm, Some(1), &common::mm())
        .unwrap();
    common::write_pages(&dir, 1, 1);
    dir.commit_sections().unwrap();
    assert_eq!(
        ImageDir::open(tmp.path())
            .unwrap()
            .read_one::<pb::MmEntry>(ImageKind::Mm, Some(1))
            .unwrap(),
        common::mm()
    );
    assert_eq!(mode(&dir.pages_path(1)), 0o600);
}
