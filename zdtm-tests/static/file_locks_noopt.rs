//! file_locks_noopt: a task holding a lock is not dumped without --file-locks.
//!
//! Takes an exclusive flock and a POSIX lock; dumped without `--file-locks`
//! the dump must fail and leave the task running with its locks (`crfail`).

use zdtmtst::files::{locks, open};
use zdtmtst::{check_eq, fail, Checker};

fn main() {
    zdtmtst::start();
    let p = zdtmtst::temp_path("file_locks_noopt");
    zdtmtst::remove_at_exit(&p);
    std::fs::write(&p, b"locked").unwrap_or_else(|e| fail(e));
    let f = open(&p, libc::O_RDWR, 0).unwrap_or_else(|e| fail(e));
    // SAFETY: integers only.
    if unsafe { libc::flock(f, libc::LOCK_EX) } < 0 {
        fail(zdtmtst::last_err());
    }
    let n = locks(f).unwrap_or_else(|e| fail(e)).len();

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(l) = c.ok("fdinfo", locks(f)) {
        check_eq!(c, l.len(), n, "locks held");
    }
    c.finish();
}
