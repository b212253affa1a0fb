//! shm_sysv_host: a System V shared memory segment of the host's IPC
//! namespace is refused at dump (it belongs to tasks outside the tree), and
//! the failed dump leaves the tree as it was.
//!
//! The root creates a private segment, attaches it, writes a pattern and marks
//! it removed (so it goes away with the test). After the dump fails and the
//! tree is resumed, the attachment must still hold the pattern.

use zdtmtst::{check, fail, pattern, Checker};

fn main() {
    zdtmtst::start();
    let ps = zdtmtst::page_size();
    let len = 2 * ps;
    // SAFETY: integers only.
    let id = unsafe { libc::shmget(libc::IPC_PRIVATE, len, libc::IPC_CREAT | 0o600) };
    if id < 0 {
        fail(format!("shmget: {}", zdtmtst::last_err()));
    }
    // SAFETY: the kernel picks the address; the attachment lives until exit.
    let at = unsafe { libc::shmat(id, std::ptr::null(), 0) };
    if at as isize == -1 {
        fail(format!("shmat: {}", zdtmtst::last_err()));
    }
    // Destroyed on the last detach: nothing is left behind.
    // SAFETY: IPC_RMID takes no buffer.
    unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    let base = at as usize;
    // SAFETY: the attachment covers len bytes.
    pattern::fill(unsafe { pattern::words_mut(base, len) }, 0x5eed_4057);

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    // SAFETY: the attachment covers len bytes.
    let r = pattern::verify(unsafe { pattern::words(base, len) }, 0x5eed_4057);
    check!(
        c,
        r.is_ok(),
        "segment shmid {id} at {base:#x}: {}",
        r.map_err(|m| m.to_string()).err().unwrap_or_default()
    );
    c.finish();
}
