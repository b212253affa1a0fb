//! vdso00: time through the vDSO keeps working and never goes backwards.
//!
//! Calls `clock_gettime` (MONOTONIC, REALTIME, BOOTTIME, MONOTONIC_COARSE),
//! `gettimeofday` and `time`, which glibc routes to the vDSO, many times
//! before the dump and again after restore. `CLOCK_MONOTONIC` must never go
//! backwards, not even across the restore; the wall clocks must agree with
//! each other. `[vdso]` and `[vvar]` must be mapped, the vDSO must start
//! with an ELF header, and `getauxval(AT_SYSINFO_EHDR)` (which the engine
//! must keep in the saved auxv) must point at it.

use zdtmtst::{check, check_eq, fail, maps, Checker};

const ROUNDS: usize = 2000;

fn clock(id: libc::clockid_t) -> Result<i128, String> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a writable timespec.
    if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
        return Err(format!("clock_gettime({id}): {}", zdtmtst::last_err()));
    }
    Ok(ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128)
}

/// Runs the calls `ROUNDS` times; returns the last CLOCK_MONOTONIC value,
/// or describes the first problem.
fn rounds(mut last_mono: i128) -> Result<i128, String> {
    for i in 0..ROUNDS {
        let mono = clock(libc::CLOCK_MONOTONIC)?;
        if mono < last_mono {
            return Err(format!(
                "round {i}: CLOCK_MONOTONIC went backwards: {last_mono} -> {mono}"
            ));
        }
        last_mono = mono;
        let real = clock(libc::CLOCK_REALTIME)?;
        let boot = clock(libc::CLOCK_BOOTTIME)?;
        clock(libc::CLOCK_MONOTONIC_COARSE)?;
        if boot < mono {
            return Err(format!(
                "round {i}: CLOCK_BOOTTIME {boot} < CLOCK_MONOTONIC {mono}"
            ));
        }
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        // SAFETY: `tv` is a writable timeval; the timezone pointer is null.
        if unsafe { libc::gettimeofday(&mut tv, std::ptr::null_mut()) } != 0 {
            return Err(format!("gettimeofday: {}", zdtmtst::last_err()));
        }
        // SAFETY: time(NULL) has no preconditions.
        let t = unsafe { libc::time(std::ptr::null_mut()) };
        let tod = tv.tv_sec as i128 * 1_000_000_000 + tv.tv_usec as i128 * 1000;
        // 2020-01-01: anything earlier means a garbage clock page.
        if real < 1_577_836_800 * 1_000_000_000 {
            return Err(format!("round {i}: CLOCK_REALTIME {real} is before 2020"));
        }
        if (tod - real).abs() > 10_000_000_000 || (t as i128 - real / 1_000_000_000).abs() > 10 {
            return Err(format!(
                "round {i}: wall clocks disagree: clock_gettime {real} ns, gettimeofday {tod} ns, time {t} s"
            ));
        }
    }
    Ok(last_mono)
}

fn vdso_checks(c: &mut Checker) {
    let Some(m) = c.ok("reading maps", maps::read_self()) else {
        return;
    };
    // SAFETY: getauxval has no preconditions.
    let ehdr = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as usize;
    check!(
        c,
        maps::find_named(&m, "[vvar]").is_some(),
        "no [vvar] mapping"
    );
    let Some(v) = maps::find_named(&m, "[vdso]") else {
        c.fail("no [vdso] mapping");
        return;
    };
    check_eq!(
        c,
        ehdr,
        v.start,
        "getauxval(AT_SYSINFO_EHDR) vs [vdso] start"
    );
    check!(c, v.perms.starts_with("r-x"), "[vdso] perms {}", v.perms);
    if v.perms.starts_with('r') {
        // SAFETY: the [vdso] mapping is readable and at least one page long.
        let magic = unsafe { std::slice::from_raw_parts(v.start as *const u8, 4) };
        check_eq!(
            c,
            magic,
            b"\x7fELF",
            "ELF magic at [vdso] start {:#x}",
            v.start
        );
    }
}

fn main() {
    zdtmtst::start();
    let mut c = Checker::new();
    vdso_checks(&mut c);
    if !c.passed() {
        fail(c.summary().unwrap_or_default());
    }
    let last = rounds(0).unwrap_or_else(|e| fail(e));

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    vdso_checks(&mut c);
    if c.passed() {
        if let Err(e) = rounds(last) {
            c.fail(e);
        }
    }
    c.finish();
}
