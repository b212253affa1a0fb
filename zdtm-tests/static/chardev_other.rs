//! chardev_other: a character device crust cannot restore is refused.
//!
//! Keeps /dev/kmsg open (major 1, minor 11: it has a read position into the
//! kernel log that cannot be recreated), so the dump must fail naming it and
//! leave the task running (`crfail`); the task checks its descriptor.

use std::path::Path;

use zdtmtst::files::open;
use zdtmtst::{check_eq, fail, fd, Checker};

fn main() {
    zdtmtst::start();
    let f = open(Path::new("/dev/kmsg"), libc::O_RDONLY | libc::O_NONBLOCK, 0)
        .unwrap_or_else(|e| fail(format!("/dev/kmsg: {e}")));
    let rdev = fd::fstat(f).unwrap_or_else(|e| fail(e)).st_rdev;

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(st) = c.ok("fstat", fd::fstat(f)) {
        check_eq!(c, st.st_rdev, rdev, "/dev/kmsg device");
    }
    c.finish();
}
