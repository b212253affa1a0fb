//! link_remap00: files that lost their name come back as the same files
//! (dumped with --link-remap).
//!
//! In a fresh directory D: file `a` gets a second name `a.keep`, is opened
//! read-write at offset 5 and once more read-only (a second description), and
//! `a` is unlinked, so the descriptors name `D/a (deleted)` while the file
//! lives on as `a.keep`. After restore both descriptors must still lead to the
//! very file `a.keep` names (same device and inode; a write through one shows
//! through `a.keep` and the other), with their offsets and links; and D must
//! hold nothing but `a.keep` (no remap link left behind, `a` not back).
//!
//! (A file made with `O_TMPFILE` can be linked back too, but its descriptor's
//! `O_TMPFILE` flag cannot be given back: that case is tested by the engine's
//! own tests.)

use std::os::unix::fs::MetadataExt;

use zdtmtst::files::open;
use zdtmtst::{check_eq, fail, fd, Checker};

fn main() {
    zdtmtst::start();
    let dir = zdtmtst::temp_path("link_remap00.d");
    let a = dir.join("a");
    let keep = dir.join("a.keep");
    let setup = || -> std::io::Result<(i32, i32)> {
        std::fs::create_dir(&dir)?;
        std::fs::write(&a, b"0123456789")?;
        std::fs::hard_link(&a, &keep)?;
        let f = open(&a, libc::O_RDWR, 0)?;
        fd::lseek(f, 5, libc::SEEK_SET)?;
        let t = open(&a, libc::O_RDONLY, 0)?;
        std::fs::remove_file(&a)?;
        Ok((f, t))
    };
    let (f, t) = setup().unwrap_or_else(|e| fail(format!("setup in {}: {e}", dir.display())));
    zdtmtst::remove_at_exit(&dir);
    let links = (
        fd::link(f).unwrap_or_else(|e| fail(e)),
        fd::link(t).unwrap_or_else(|e| fail(e)),
    );

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let (Some(lf), Some(lt)) = (c.ok("readlink", fd::link(f)), c.ok("readlink", fd::link(t))) {
        check_eq!(c, (lf, lt), links.clone(), "the /proc/self/fd links");
    }
    if let Some(pos) = c.ok("lseek", fd::lseek(f, 0, libc::SEEK_CUR)) {
        check_eq!(c, pos, 5, "file position");
    }
    let kept = c.ok("stat a.keep", std::fs::metadata(&keep));
    for d in [f, t] {
        if let (Some(st), Some(kept)) = (c.ok("fstat", fd::fstat(d)), kept.as_ref()) {
            check_eq!(
                c,
                (st.st_dev, st.st_ino),
                (kept.dev(), kept.ino()),
                "(dev, ino) of fd {d} and of a.keep: a copy, not the file"
            );
            check_eq!(c, st.st_nlink, 1, "st_nlink of fd {d}");
        }
    }
    if c.ok("write", fd::write(f, b"XY")).is_some() {
        if let Some(b) = c.ok("read a.keep", std::fs::read(&keep)) {
            check_eq!(
                c,
                b,
                b"01234XY789".to_vec(),
                "a.keep after a write through the fd"
            );
        }
        if let Some(b) = c.ok("read", fd::read(t, 64)) {
            check_eq!(
                c,
                b,
                b"01234XY789".to_vec(),
                "read through the second description"
            );
        }
    }
    if let Some(rd) = c.ok("readdir", std::fs::read_dir(&dir)) {
        let names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        check_eq!(
            c,
            names,
            vec!["a.keep".to_string()],
            "entries of the directory"
        );
    }
    c.finish();
}
