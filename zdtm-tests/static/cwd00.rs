//! cwd00: the current working directory survives.
//!
//! Creates a uniquely named directory with a file in it and `chdir`s into
//! it. After restore `getcwd` must return the same path, `.` must be the
//! same directory (device and inode), and opening the file by a relative
//! name must find its contents. The directory is removed at exit.

use std::os::unix::fs::MetadataExt;

use zdtmtst::{check_eq, fail, Checker};

const PROBE: &str = "probe";
const CONTENTS: &[u8] = b"cwd00 probe contents\n";

fn main() {
    zdtmtst::start();
    let dir = zdtmtst::temp_path("cwd00");
    std::fs::create_dir(&dir).unwrap_or_else(|e| fail(format!("mkdir {}: {e}", dir.display())));
    zdtmtst::remove_at_exit(&dir);
    std::fs::write(dir.join(PROBE), CONTENTS).unwrap_or_else(|e| fail(e));
    std::env::set_current_dir(&dir)
        .unwrap_or_else(|e| fail(format!("chdir {}: {e}", dir.display())));
    let cwd = std::env::current_dir().unwrap_or_else(|e| fail(format!("getcwd: {e}")));
    let id = std::fs::metadata(".")
        .map(|m| (m.dev(), m.ino()))
        .unwrap_or_else(|e| fail(e));

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(now) = c.ok("getcwd", std::env::current_dir()) {
        check_eq!(c, now, cwd, "getcwd");
    }
    if let Some(now) = c.ok("stat .", std::fs::metadata(".")) {
        check_eq!(c, (now.dev(), now.ino()), id, "(st_dev, st_ino) of .");
    }
    if let Some(data) = c.ok("reading ./probe", std::fs::read(PROBE)) {
        check_eq!(c, data, CONTENTS, "contents of ./{PROBE}");
    }
    c.finish();
}
