//! sigaltstack00: the alternate signal stack survives and is still used.
//!
//! Sets a 64 KiB alternate signal stack with `SS_AUTODISARM` and a SIGUSR1
//! handler with `SA_ONSTACK`. After restore `sigaltstack` must report the
//! same base, size and flags, and a SIGUSR1 raised then must run its
//! handler on that stack (the address of a handler local lies inside it).

use std::sync::atomic::{AtomicUsize, Ordering};

use zdtmtst::{check, check_eq, fail, mem, sig, Checker};

/// `SS_AUTODISARM` from linux/signal.h (Linux 4.7).
const SS_AUTODISARM: libc::c_int = 1 << 31;
const SIZE: usize = 64 << 10;

static HANDLER_SP: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_usr1(_sig: libc::c_int) {
    let local = 0u8;
    HANDLER_SP.store(
        std::hint::black_box(&local) as *const u8 as usize,
        Ordering::SeqCst,
    );
}

fn query() -> std::io::Result<(usize, libc::c_int, usize)> {
    // SAFETY: an all-zero stack_t is a valid value to be overwritten.
    let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: a null new stack only queries; `old` is writable.
    if unsafe { libc::sigaltstack(std::ptr::null(), &mut old) } != 0 {
        return Err(zdtmtst::last_err());
    }
    Ok((old.ss_sp as usize, old.ss_flags, old.ss_size))
}

fn main() {
    zdtmtst::start();
    let base = mem::mmap_anon(SIZE, libc::PROT_READ | libc::PROT_WRITE)
        .unwrap_or_else(|e| fail(format!("mmap: {e}")));
    let ss = libc::stack_t {
        ss_sp: base as *mut libc::c_void,
        ss_flags: SS_AUTODISARM,
        ss_size: SIZE,
    };
    // SAFETY: `ss` describes a mapping of ours that is never unmapped.
    if unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) } != 0 {
        fail(format!("sigaltstack: {}", zdtmtst::last_err()));
    }
    sig::set_action(
        libc::SIGUSR1,
        on_usr1 as *const () as libc::sighandler_t,
        libc::SA_ONSTACK,
        0,
    )
    .unwrap_or_else(|e| fail(format!("sigaction: {e}")));
    let before = query().unwrap_or_else(|e| fail(e));
    if before != (base, SS_AUTODISARM, SIZE) {
        fail(format!("sigaltstack reports {before:x?} after setup"));
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(now) = c.ok("sigaltstack", query()) {
        check_eq!(
            c,
            format!("{now:x?}"),
            format!("{before:x?}"),
            "sigaltstack (ss_sp, ss_flags, ss_size)"
        );
    }
    // SAFETY: raise has no preconditions; SIGUSR1 has a handler.
    if unsafe { libc::raise(libc::SIGUSR1) } != 0 {
        c.fail(format!("raise: {}", zdtmtst::last_err()));
    }
    let sp = HANDLER_SP.load(Ordering::SeqCst);
    check!(
        c,
        (base..base + SIZE).contains(&sp),
        "SIGUSR1 handler ran with a local at {sp:#x}, outside the alternate stack {base:#x}+{SIZE:#x}"
    );
    if let Some(now) = c.ok("sigaltstack after the handler", query()) {
        check_eq!(
            c,
            format!("{now:x?}"),
            format!("{before:x?}"),
            "sigaltstack after the handler returned"
        );
    }
    c.finish();
}
