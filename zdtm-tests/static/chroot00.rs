//! chroot00 (zdtm `chroot`): a member whose root directory is a directory of the test's own.
//!
//! Builds R = `chroot00.d` holding `/marker` and `/sub`, records R's (device, inode), and
//! forks a member that `chroot`s into R, `chdir`s to `/sub` and keeps `/marker` open. After
//! restore the member must still be confined: `/` is R (same device and inode), `/marker`
//! reads the marker, its working directory is `/sub`, and its open `/marker` is still the
//! file at that path. The root checks from outside that `/proc/MEMBER/root` names R.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use zdtmtst::tree::{self, Spawn};
use zdtmtst::{check_eq, fail, fd, Checker};

const MARKER: &[u8] = b"inside the chroot\n";

/// What the confined member checks of itself.
fn check_inside(c: &mut Checker, root_id: (u64, u64), marker_fd: i32) {
    if let Some(st) = c.ok("stat /", std::fs::metadata("/")) {
        check_eq!(c, (st.dev(), st.ino()), root_id, "(dev, ino) of /");
    }
    if let Some(text) = c.ok("read /marker", std::fs::read("/marker")) {
        check_eq!(c, text.as_slice(), MARKER, "contents of /marker");
    }
    if let Some(cwd) = c.ok("getcwd", std::env::current_dir()) {
        check_eq!(c, cwd, PathBuf::from("/sub"), "working directory");
    }
    let by_path = std::fs::metadata("/marker").map(|m| (m.dev(), m.ino()));
    if let (Some(open), Some(path)) = (
        c.ok("fstat of the open marker", fd::fstat(marker_fd)),
        c.ok("stat /marker", by_path),
    ) {
        check_eq!(
            c,
            (open.st_dev, open.st_ino),
            path,
            "(dev, ino) of the open marker and of /marker"
        );
    }
    if let Some(text) = c.ok("pread of the open marker", fd::pread(marker_fd, 64, 0)) {
        check_eq!(c, text.as_slice(), MARKER, "contents of the open marker");
    }
}

fn main() {
    zdtmtst::start();
    let dir = zdtmtst::temp_path("chroot00.d");
    let setup = || -> std::io::Result<(u64, u64)> {
        std::fs::create_dir(&dir)?;
        std::fs::create_dir(dir.join("sub"))?;
        std::fs::write(dir.join("marker"), MARKER)?;
        let md = std::fs::metadata(&dir)?;
        Ok((md.dev(), md.ino()))
    };
    let root_id = setup().unwrap_or_else(|e| fail(format!("setup {}: {e}", dir.display())));
    let real = std::fs::canonicalize(&dir)
        .unwrap_or_else(|e| fail(format!("canonicalize {}: {e}", dir.display())));

    let cdir = dir.clone();
    let member = tree::member("confined", Spawn::Fork, &[], move |up| {
        if std::os::unix::fs::chroot(&cdir).is_err() || std::env::set_current_dir("/sub").is_err() {
            return 10;
        }
        let Ok(marker_fd) =
            zdtmtst::files::open(std::path::Path::new("/marker"), libc::O_RDONLY, 0)
        else {
            return 11;
        };
        if up.ready().is_err() {
            return 12;
        }
        tree::serve(&up, || {
            let mut c = Checker::new();
            check_inside(&mut c, root_id, marker_fd);
            c
        })
    })
    .unwrap_or_else(|e| fail(format!("fork: {e}")));
    let mut members = vec![member];
    if let Err(e) = tree::await_all_ready(&mut members) {
        fail(tree::chain(&e));
    }
    let mpid = members[0].pid;
    let before = std::fs::read_link(format!("/proc/{mpid}/root"))
        .unwrap_or_else(|e| fail(format!("readlink /proc/{mpid}/root: {e}")));
    if before != real {
        fail(format!(
            "/proc/{mpid}/root is {} before dump, not {}",
            before.display(),
            real.display()
        ));
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(after) = c.ok(
        "readlink /proc/MEMBER/root",
        std::fs::read_link(format!("/proc/{mpid}/root")),
    ) {
        check_eq!(c, after, before, "/proc/MEMBER/root");
    }
    let theirs = std::fs::metadata(format!("/proc/{mpid}/root")).map(|m| (m.dev(), m.ino()));
    if let Some(theirs) = c.ok("stat /proc/MEMBER/root", theirs) {
        check_eq!(c, theirs, root_id, "(dev, ino) of the member's root");
    }
    tree::check_all(&members, &mut c);
    tree::finish(members, &mut c);
    c.finish();
}
