//! pause00: a task blocked in pause(2) stays blocked.
//!
//! The task waits in `pause()`. Dump and restore must not wake it:
//! `pause` returning while SIGTERM has not arrived is a failure.

use zdtmtst::{check, fail, Checker};

fn main() {
    zdtmtst::start();
    zdtmtst::ready();
    if zdtmtst::sigterm_received() {
        fail("SIGTERM arrived before pause() blocked: nothing was tested");
    }
    // SAFETY: pause has no preconditions.
    let r = unsafe { libc::pause() };
    let err = zdtmtst::last_err();
    let mut c = Checker::new();
    check!(
        c,
        zdtmtst::sigterm_received(),
        "pause() returned {r} ({err}) before SIGTERM arrived"
    );
    check!(
        c,
        r == -1 && err.raw_os_error() == Some(libc::EINTR),
        "pause() returned {r} ({err}), expected -1/EINTR"
    );
    c.finish();
}
