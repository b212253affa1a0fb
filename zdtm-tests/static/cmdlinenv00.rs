//! cmdlinenv00: the command line, environment block and auxiliary vector
//! survive.
//!
//! Records `/proc/self/cmdline`, `/proc/self/environ`, `/proc/self/auxv`,
//! the `arg_start`/`arg_end`/`env_start`/`env_end` fields of
//! `/proc/self/stat`, and the 16 `AT_RANDOM` bytes. After restore all must
//! be byte-for-byte the same (the kernel reports them from the mm fields the
//! engine restores with `PR_SET_MM_MAP`), `getauxval` must return the same
//! entries, and the argument block must still be in memory where
//! `arg_start` says.

use zdtmtst::proc::{self, STAT_ARG_END, STAT_ARG_START, STAT_ENV_END, STAT_ENV_START};
use zdtmtst::{check, check_eq, fail, Checker};

const FILES: &[&str] = &[
    "/proc/self/cmdline",
    "/proc/self/environ",
    "/proc/self/auxv",
];
const AUX: &[(&str, libc::c_ulong)] = &[
    ("AT_PAGESZ", libc::AT_PAGESZ),
    ("AT_HWCAP", libc::AT_HWCAP),
    ("AT_HWCAP2", libc::AT_HWCAP2),
    ("AT_CLKTCK", libc::AT_CLKTCK),
    ("AT_PHDR", libc::AT_PHDR),
    ("AT_ENTRY", libc::AT_ENTRY),
    ("AT_BASE", libc::AT_BASE),
    ("AT_RANDOM", libc::AT_RANDOM),
    ("AT_EXECFN", libc::AT_EXECFN),
    ("AT_SYSINFO_EHDR", libc::AT_SYSINFO_EHDR),
    ("AT_MINSIGSTKSZ", 51),
];

fn ranges() -> Result<[u64; 4], proc::ProcError> {
    Ok([
        proc::stat_u64(STAT_ARG_START)?,
        proc::stat_u64(STAT_ARG_END)?,
        proc::stat_u64(STAT_ENV_START)?,
        proc::stat_u64(STAT_ENV_END)?,
    ])
}

fn aux() -> Vec<u64> {
    // SAFETY: getauxval has no preconditions.
    AUX.iter()
        .map(|a| unsafe { libc::getauxval(a.1) } as u64)
        .collect()
}

fn random_bytes() -> Option<[u8; 16]> {
    // SAFETY: getauxval has no preconditions.
    let p = unsafe { libc::getauxval(libc::AT_RANDOM) } as usize;
    if p == 0 {
        return None;
    }
    let mut b = [0u8; 16];
    // SAFETY: AT_RANDOM points at 16 bytes the kernel placed on the initial
    // stack, which stays mapped for the life of the process.
    b.copy_from_slice(unsafe { std::slice::from_raw_parts(p as *const u8, 16) });
    Some(b)
}

fn arg_block(r: &[u64; 4]) -> Vec<u8> {
    // SAFETY: [arg_start, arg_end) is the argument block on the initial
    // stack; it stays mapped and readable.
    unsafe { std::slice::from_raw_parts(r[0] as *const u8, (r[1] - r[0]) as usize) }.to_vec()
}

fn main() {
    zdtmtst::start();
    let files: Vec<Vec<u8>> = FILES
        .iter()
        .map(|f| proc::read_bytes(f).unwrap_or_else(|e| fail(e)))
        .collect();
    let r = ranges().unwrap_or_else(|e| fail(e));
    let args = arg_block(&r);
    if args != files[0] {
        fail("the argument block differs from /proc/self/cmdline before the dump");
    }
    let aux0 = aux();
    let rand0 = random_bytes();

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    for (f, before) in FILES.iter().zip(&files) {
        if let Some(now) = c.ok(&format!("reading {f}"), proc::read_bytes(f)) {
            check!(
                c,
                &now == before,
                "{f} changed: {} bytes before, {} now, first difference at {:?}",
                before.len(),
                now.len(),
                now.iter().zip(before).position(|(a, b)| a != b)
            );
        }
    }
    if let Some(now) = c.ok("reading /proc/self/stat", ranges()) {
        check_eq!(
            c,
            format!("{now:x?}"),
            format!("{r:x?}"),
            "arg_start, arg_end, env_start, env_end"
        );
        if now == r {
            check!(
                c,
                arg_block(&r) == args,
                "the argument block in memory changed"
            );
        }
    }
    for ((name, _), (now, before)) in AUX.iter().zip(aux().into_iter().zip(aux0)) {
        check!(
            c,
            now == before,
            "getauxval({name}): expected {before:#x}, found {now:#x}"
        );
    }
    check_eq!(c, random_bytes(), rand0, "AT_RANDOM bytes");
    c.finish();
}
