//! env00: the environment survives.
//!
//! Before the dump the program sets a variable with `setenv(3)` and unsets
//! another, and records every variable it started with, the `env_start` and
//! `env_end` fields of `/proc/self/stat`, `/proc/self/environ`, and the bytes
//! of the initial environment block in its own memory. After restore,
//! `getenv` must return the same values, and the block must be at the same
//! place with the same bytes, both read in memory and through
//! `/proc/self/environ` (which needs the mm's env range restored).

use std::ffi::OsString;

use zdtmtst::proc::{self, STAT_ENV_END, STAT_ENV_START};
use zdtmtst::{check, check_eq, fail, Checker};

const NAME: &str = "ZDTM_ENV00";
const VALUE: &str = "env00: \u{e9}t\u{e9} with spaces = and an equals sign";
const GONE: &str = "ZDTM_ENV00_GONE";

fn env_range() -> Result<(usize, usize), proc::ProcError> {
    Ok((
        proc::stat_u64(STAT_ENV_START)? as usize,
        proc::stat_u64(STAT_ENV_END)? as usize,
    ))
}

fn read_block((start, end): (usize, usize)) -> Vec<u8> {
    // SAFETY: [env_start, env_end) is the environment block the kernel
    // copied onto the initial stack at exec; it stays mapped and readable
    // for the life of the process and nothing writes it.
    unsafe { std::slice::from_raw_parts(start as *const u8, end - start) }.to_vec()
}

fn main() {
    zdtmtst::start();

    let initial: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    std::env::set_var(GONE, "must not come back");
    std::env::set_var(NAME, VALUE);
    std::env::remove_var(GONE);

    let range = env_range().unwrap_or_else(|e| fail(e));
    if range.0 == 0 || range.1 < range.0 {
        fail(format!(
            "implausible env range {:#x}-{:#x}",
            range.0, range.1
        ));
    }
    let block = read_block(range);
    let environ = proc::read_bytes("/proc/self/environ").unwrap_or_else(|e| fail(e));
    if environ != block {
        fail("/proc/self/environ differs from the env block before the dump");
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    check_eq!(
        c,
        std::env::var_os(NAME),
        Some(OsString::from(VALUE)),
        "getenv({NAME})"
    );
    check_eq!(
        c,
        std::env::var_os(GONE),
        None,
        "getenv({GONE}) after unsetenv"
    );
    for (k, v) in &initial {
        if k == NAME {
            continue;
        }
        check_eq!(
            c,
            std::env::var_os(k),
            Some(v.clone()),
            "getenv({})",
            k.to_string_lossy()
        );
    }
    if let Some(now) = c.ok("reading the env range", env_range()) {
        if check_eq!(c, now, range, "env_start/env_end in /proc/self/stat") {
            let mem = read_block(range);
            if let Some(pos) = mem.iter().zip(&block).position(|(a, b)| a != b) {
                c.fail(format!(
                    "env block byte at {:#x}: expected {:#04x}, found {:#04x}",
                    range.0 + pos,
                    block[pos],
                    mem[pos]
                ));
            }
        }
    }
    if let Some(now) = c.ok(
        "reading /proc/self/environ",
        proc::read_bytes("/proc/self/environ"),
    ) {
        check!(
            c,
            now == environ,
            "/proc/self/environ changed: {} bytes before, {} now; first difference at byte {:?}",
            environ.len(),
            now.len(),
            now.iter().zip(&environ).position(|(a, b)| a != b)
        );
    }
    c.finish();
}
