//! umask00: the file mode creation mask survives.
//!
//! Sets `umask(027)`. After restore `umask` must return 027, `Umask` in
//! `/proc/self/status` must say so, and a file created with mode 0666 must
//! get mode 0640.

use std::os::unix::fs::PermissionsExt;

use zdtmtst::{check_eq, proc, Checker};

const MASK: libc::mode_t = 0o027;

fn main() {
    zdtmtst::start();
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(MASK) };

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(v) = c.ok("reading Umask", proc::status_field("Umask")) {
        check_eq!(c, v, format!("{MASK:04o}"), "Umask in /proc/self/status");
    }
    // SAFETY: umask has no preconditions; the old value is put back.
    let now = unsafe { libc::umask(MASK) };
    check_eq!(c, format!("{now:o}"), format!("{MASK:o}"), "umask");
    let path = zdtmtst::temp_path("umask00");
    zdtmtst::remove_at_exit(&path);
    if c.ok("creating a file", std::fs::write(&path, b"x"))
        .is_some()
    {
        if let Some(m) = c.ok("stat", std::fs::metadata(&path)) {
            check_eq!(
                c,
                format!("{:o}", m.permissions().mode() & 0o777),
                "640",
                "mode of a file created with 0666"
            );
        }
    }
    c.finish();
}
