//! read_blocked: a task blocked in read(2) on an empty pipe stays blocked.
//!
//! Creates a pipe (both ends kept), installs the SIGTERM handler without
//! `SA_RESTART`, and blocks in `read` on the empty pipe. Being dumped and
//! restored must be invisible: the read may only end with `EINTR` because
//! SIGTERM arrived. Returning data, 0 (end of file), any other error, or
//! `EINTR` without SIGTERM is a failure. Afterwards the pipe must still
//! carry data from one end to the other.

use zdtmtst::{check_eq, fail, Checker};

fn main() {
    zdtmtst::start_with(0);
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a writable array of two ints.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        fail(format!("pipe: {}", zdtmtst::last_err()));
    }
    let [rd, wr] = fds;
    let mut buf = [0u8; 64];

    zdtmtst::ready();
    if zdtmtst::sigterm_received() {
        fail("SIGTERM arrived before read() blocked: nothing was tested");
    }
    // SAFETY: `buf` is a writable buffer of its length; `rd` is our pipe.
    let r = unsafe { libc::read(rd, buf.as_mut_ptr().cast(), buf.len()) };
    let err = zdtmtst::last_err();
    let term = zdtmtst::sigterm_received();

    match r {
        -1 if err.raw_os_error() == Some(libc::EINTR) && term => {}
        -1 if err.raw_os_error() == Some(libc::EINTR) => {
            fail("read() returned EINTR but SIGTERM had not arrived")
        }
        -1 => fail(format!("read() failed: {err}")),
        0 => fail("read() returned 0 (end of file) on a pipe whose write end is open"),
        n => fail(format!(
            "read() returned {n} bytes {:02x?} from a pipe nobody wrote",
            &buf[..n as usize]
        )),
    }

    let mut c = Checker::new();
    let msg = b"still a pipe";
    // SAFETY: `msg` is readable for its length; `wr` is our pipe.
    let w = unsafe { libc::write(wr, msg.as_ptr().cast(), msg.len()) };
    check_eq!(c, w, msg.len() as isize, "write to the pipe after restore");
    // SAFETY: as for the first read.
    let r = unsafe { libc::read(rd, buf.as_mut_ptr().cast(), buf.len()) };
    check_eq!(c, r, msg.len() as isize, "read from the pipe after restore");
    if r > 0 {
        check_eq!(c, &buf[..r as usize], &msg[..], "data through the pipe");
    }
    c.finish();
}
