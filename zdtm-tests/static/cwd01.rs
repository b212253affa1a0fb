//! cwd01: a working directory removed after `chdir` stays removed, and shared.
//!
//! Creates directory D (mode 0751), `chdir`s into it, keeps it open as well
//! (`O_DIRECTORY`), forks a member that inherits the working directory, and
//! removes D. After restore both processes must still work in a removed
//! directory: `/proc/self/cwd` reads `D (deleted)`, `.` is a directory with no
//! links and mode 0751 in which nothing can be created, the root's `.`, its
//! descriptor and the member's working directory are one directory (same
//! device and inode), and D does not exist again.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use zdtmtst::tree::{self, Spawn};
use zdtmtst::{check, check_eq, fail, fd, Checker};

const MODE: u32 = 0o751;

/// What every process checks of its own working directory.
fn check_cwd(c: &mut Checker, who: &str, want: &Path) {
    let want = format!("{} (deleted)", want.display());
    if let Some(l) = c.ok(
        "readlink /proc/self/cwd",
        std::fs::read_link("/proc/self/cwd"),
    ) {
        check_eq!(c, l, PathBuf::from(&want), "{who}: /proc/self/cwd");
    }
    if let Some(st) = c.ok("stat .", std::fs::metadata(".")) {
        check!(c, st.is_dir(), "{who}: . is no directory");
        check_eq!(c, st.nlink(), 0, "{who}: st_nlink of .");
        check_eq!(c, st.mode() & 0o7777, MODE, "{who}: mode of .");
    }
    match std::fs::File::create("probe") {
        Ok(_) => c.fail(format!("{who}: a file could be created in the removed cwd")),
        Err(e) => {
            check_eq!(
                c,
                e.raw_os_error(),
                Some(libc::ENOENT),
                "{who}: errno creating a file in the removed cwd"
            );
        }
    }
}

fn main() {
    zdtmtst::start();
    let dir = zdtmtst::temp_path("cwd01.d");
    let setup = || -> std::io::Result<i32> {
        std::fs::create_dir(&dir)?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(MODE))?;
        std::env::set_current_dir(&dir)?;
        zdtmtst::files::open(Path::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0)
    };
    let dfd = setup().unwrap_or_else(|e| fail(format!("setup {}: {e}", dir.display())));
    let mdir = dir.clone();
    let member = tree::member("member", Spawn::Fork, &[], move |up| {
        if up.ready().is_err() {
            return 11;
        }
        tree::serve(&up, || {
            let mut c = Checker::new();
            check_cwd(&mut c, "member", &mdir);
            c
        })
    })
    .unwrap_or_else(|e| fail(format!("fork: {e}")));
    let mut members = vec![member];
    if let Err(e) = tree::await_all_ready(&mut members) {
        fail(tree::chain(&e));
    }
    std::fs::remove_dir(&dir).unwrap_or_else(|e| fail(format!("rmdir: {e}")));
    let mpid = members[0].pid;

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    check_cwd(&mut c, "root", &dir);
    let here = c
        .ok("stat .", std::fs::metadata("."))
        .map(|m| (m.dev(), m.ino()));
    if let Some(st) = c.ok("fstat of the directory fd", fd::fstat(dfd)) {
        check_eq!(
            c,
            Some((st.st_dev, st.st_ino)),
            here,
            "(dev, ino) of the directory fd and of ."
        );
    }
    let theirs = std::fs::metadata(format!("/proc/{mpid}/cwd")).map(|m| (m.dev(), m.ino()));
    if let Some(theirs) = c.ok("stat of the member's cwd", theirs) {
        check_eq!(
            c,
            Some(theirs),
            here,
            "(dev, ino) of the member's cwd and of ."
        );
    }
    check!(c, !dir.exists(), "{} exists again", dir.display());
    tree::check_all(&members, &mut c);
    tree::finish(members, &mut c);
    c.finish();
}
