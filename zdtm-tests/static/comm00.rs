//! comm00: the task name set with prctl survives.
//!
//! Sets the name with `prctl(PR_SET_NAME)`. After restore
//! `prctl(PR_GET_NAME)`, `/proc/self/comm` and `/proc/self/task/TID/comm`
//! must all give it back.

use zdtmtst::{check_eq, fail, Checker};

const NAME: &str = "zdtm-comm-xyz";

fn get_name() -> std::io::Result<String> {
    let mut buf = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into `buf`.
    if unsafe { libc::prctl(libc::PR_GET_NAME, buf.as_mut_ptr()) } != 0 {
        return Err(zdtmtst::last_err());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

fn main() {
    zdtmtst::start();
    let name = std::ffi::CString::new(NAME).unwrap_or_else(|e| fail(e));
    // SAFETY: `name` is a NUL-terminated string shorter than 16 bytes.
    if unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) } != 0 {
        fail(format!("PR_SET_NAME: {}", zdtmtst::last_err()));
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(n) = c.ok("PR_GET_NAME", get_name()) {
        check_eq!(c, n, NAME, "PR_GET_NAME");
    }
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    for path in [
        "/proc/self/comm".to_string(),
        format!("/proc/self/task/{tid}/comm"),
    ] {
        if let Some(s) = c.ok(&format!("reading {path}"), std::fs::read_to_string(&path)) {
            check_eq!(c, s, format!("{NAME}\n"), "{path}");
        }
    }
    c.finish();
}
