//! fpu_avx: vector, x87 and MXCSR register state survives at any
//! instruction.
//!
//! One assembly block loads distinct patterns into ymm0-ymm15 (xmm0-xmm15
//! where the CPU or kernel lacks AVX), eight distinct values onto the x87
//! stack, a non-default x87 control word (double precision, round up) and a
//! non-default MXCSR (round toward zero, flush-to-zero, a sticky precision
//! flag), takes an `fxsave` snapshot, announces readiness with a raw
//! `rename(2)` of the prepared pidfile, and then spins without calling
//! anything: each round it reads the SIGTERM flag, then compares a fresh
//! `fxsave` (control/status/tag words, MXCSR, st0-st7, xmm0-xmm15) with the
//! snapshot and every ymm register with its pattern, and leaves once the
//! flag was seen set. The dump, kill and restore may hit any instruction of
//! the loop; any register not restored exactly is reported with its name,
//! the expected and the found value.

use std::arch::asm;
use std::mem::offset_of;

use zdtmtst::{check_eq, fail, Checker};

/// Control word: precision 53 bits (PC=10), round up (RC=10), all masked.
const FCW: u16 = 0x0a7f;
/// MXCSR: all exceptions masked, round toward zero, FTZ, PE flag set.
const MXCSR: u32 = 0xffa0;
/// End of the compared part of the fxsave area (after xmm15).
const FX_END: usize = 416;
/// Bit set in the result for a mismatch in the ymm area.
const YMM_FLAG: u64 = 1 << 32;
/// Bit set in the result when the pidfile rename failed.
const RENAME_FLAG: u64 = 1 << 33;
const OK: u64 = u64::MAX;

#[repr(C, align(64))]
struct State {
    fx_ref: [u8; 512],
    fx_cur: [u8; 512],
    ysrc: [u64; 64],
    ycur: [u64; 64],
    x87: [f64; 8],
    fcw: u16,
    pad: u16,
    mxcsr: u32,
    orig_fcw: u16,
    pad2: u16,
    orig_mxcsr: u32,
}

/// Runs the whole test with AVX.
///
/// # Safety
/// The CPU and the kernel must support AVX.
#[target_feature(enable = "avx")]
unsafe fn spin_avx(s: &mut State, rf: &zdtmtst::ReadyFile) -> u64 {
    let flag = zdtmtst::sigterm_flag().as_ptr();
    let res: u64;
    // SAFETY: every address used is inside `*s` (offsets from offset_of!)
    // or the SIGTERM flag; the x87, MXCSR and vector state changed here is
    // declared clobbered or restored before the block ends; the only
    // syscall is rename(2) of two valid C strings.
    unsafe {
        asm!(
            "fnstcw word ptr [{s} + {o_ofcw}]",
            "stmxcsr dword ptr [{s} + {o_omx}]",
            "fninit",
            "fldcw word ptr [{s} + {o_fcw}]",
            "ldmxcsr dword ptr [{s} + {o_mx}]",
            "fld qword ptr [{s} + {o_x87}]",
            "fld qword ptr [{s} + {o_x87} + 8]",
            "fld qword ptr [{s} + {o_x87} + 16]",
            "fld qword ptr [{s} + {o_x87} + 24]",
            "fld qword ptr [{s} + {o_x87} + 32]",
            "fld qword ptr [{s} + {o_x87} + 40]",
            "fld qword ptr [{s} + {o_x87} + 48]",
            "fld qword ptr [{s} + {o_x87} + 56]",
            "vmovdqu ymm0, ymmword ptr [{s} + {o_ysrc}]",
            "vmovdqu ymm1, ymmword ptr [{s} + {o_ysrc} + 32]",
            "vmovdqu ymm2, ymmword ptr [{s} + {o_ysrc} + 64]",
            "vmovdqu ymm3, ymmword ptr [{s} + {o_ysrc} + 96]",
            "vmovdqu ymm4, ymmword ptr [{s} + {o_ysrc} + 128]",
            "vmovdqu ymm5, ymmword ptr [{s} + {o_ysrc} + 160]",
            "vmovdqu ymm6, ymmword ptr [{s} + {o_ysrc} + 192]",
            "vmovdqu ymm7, ymmword ptr [{s} + {o_ysrc} + 224]",
            "vmovdqu ymm8, ymmword ptr [{s} + {o_ysrc} + 256]",
            "vmovdqu ymm9, ymmword ptr [{s} + {o_ysrc} + 288]",
            "vmovdqu ymm10, ymmword ptr [{s} + {o_ysrc} + 320]",
            "vmovdqu ymm11, ymmword ptr [{s} + {o_ysrc} + 352]",
            "vmovdqu ymm12, ymmword ptr [{s} + {o_ysrc} + 384]",
            "vmovdqu ymm13, ymmword ptr [{s} + {o_ysrc} + 416]",
            "vmovdqu ymm14, ymmword ptr [{s} + {o_ysrc} + 448]",
            "vmovdqu ymm15, ymmword ptr [{s} + {o_ysrc} + 480]",
            "fxsave [{s} + {o_fxref}]",
            // Ready: rename(tmp, pidfile).
            "syscall",
            "test rax, rax",
            "jnz 7f",
            "2:",
            "pause",
            "movzx {t:e}, byte ptr [{flag}]",
            "fxsave [{s} + {o_fxcur}]",
            "xor {i:e}, {i:e}",
            "mov {a:e}, dword ptr [{s} + {o_fxref}]",
            "cmp {a:e}, dword ptr [{s} + {o_fxcur}]",
            "jne 8f",
            "mov {i:e}, 4",
            "mov {a:x}, word ptr [{s} + {o_fxref} + 4]",
            "cmp {a:x}, word ptr [{s} + {o_fxcur} + 4]",
            "jne 8f",
            "mov {i:e}, 24",
            "3:",
            "mov {a}, qword ptr [{s} + {o_fxref} + {i}]",
            "cmp {a}, qword ptr [{s} + {o_fxcur} + {i}]",
            "jne 8f",
            "add {i:e}, 8",
            "cmp {i:e}, {fx_end}",
            "jb 3b",
            "vmovdqu ymmword ptr [{s} + {o_ycur}], ymm0",
            "vmovdqu ymmword ptr [{s} + {o_ycur} + 32], ymm1",
            "vmovdqu ymmword ptr [{s} + {o_ycur} + 64], ymm2",
            "vmovdqu ymmword ptr [{s} + {o_ycur} + 96], ymm3",
            "vmovdqu ymmword ptr [{s} + {o_ycur} + 128], ymm4",
            "vmovdqu ymmword ptr [{s} + {o_ycur} + 160], ymm5",
            "vmovdqu ymmword ptr [{s} + {o_ycur} + 192], ymm6",
            "vmovdqu ymmword ptr [{s} + {o_ycur} + 224], ymm7",
            "vmovdqu ymmword ptr [{s} + {o_ycur} + 256], ymm8",
            "vmovdqu ymmword ptr [{s} + {o_ycur} + 288], ymm9",
            "vmovdqu ymmword ptr [{s} + {o_ycur} + 320], ymm10",
            "vmovdqu ymmword ptr [{s} + {o_ycur} + 352], ymm11",
            "vmovdqu ymmword ptr [{s} + {o_ycur} + 384], ymm12",
            "vmovdqu ymmword ptr [{s} + {o_ycur} + 416], ymm13",
            "vmovdqu ymmword ptr [{s} + {o_ycur} + 448], ymm14",
            "vmovdqu ymmword ptr [{s} + {o_ycur} + 480], ymm15",
            "xor {i:e}, {i:e}",
            "4:",
            "mov {a}, qword ptr [{s} + {o_ysrc} + {i}]",
            "cmp {a}, qword ptr [{s} + {o_ycur} + {i}]",
            "jne 9f",
            "add {i:e}, 8",
            "cmp {i:e}, 512",
            "jb 4b",
            "test {t:e}, {t:e}",
            "jz 2b",
            "mov {res}, -1",
            "jmp 6f",
            "7:",
            "mov {res}, {rename_flag}",
            "jmp 6f",
            "8:",
            "mov {res}, {i}",
            "jmp 6f",
            "9:",
            "mov {res}, {ymm_flag}",
            "or {res}, {i}",
            "6:",
            "fninit",
            "fldcw word ptr [{s} + {o_ofcw}]",
            "ldmxcsr dword ptr [{s} + {o_omx}]",
            "vzeroupper",
            s = in(reg) s as *mut State,
            flag = in(reg) flag,
            t = out(reg) _,
            a = out(reg) _,
            i = out(reg) _,
            res = out(reg) res,
            o_fxref = const offset_of!(State, fx_ref),
            o_fxcur = const offset_of!(State, fx_cur),
            o_ysrc = const offset_of!(State, ysrc),
            o_ycur = const offset_of!(State, ycur),
            o_x87 = const offset_of!(State, x87),
            o_fcw = const offset_of!(State, fcw),
            o_mx = const offset_of!(State, mxcsr),
            o_ofcw = const offset_of!(State, orig_fcw),
            o_omx = const offset_of!(State, orig_mxcsr),
            fx_end = const FX_END,
            ymm_flag = const YMM_FLAG,
            rename_flag = const RENAME_FLAG,
            inout("rax") libc::SYS_rename => _,
            in("rdi") rf.tmp_ptr(),
            in("rsi") rf.path_ptr(),
            out("rcx") _,
            out("r11") _,
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
            out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
            out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
            out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
            out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
            out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
        );
    }
    res
}

/// Runs the whole test with SSE only (xmm registers).
fn spin_sse(s: &mut State, rf: &zdtmtst::ReadyFile) -> u64 {
    let flag = zdtmtst::sigterm_flag().as_ptr();
    let res: u64;
    // SAFETY: as in spin_avx, without the ymm part: every address is inside
    // `*s` or the flag, changed state is clobbered or restored, and the
    // syscall is rename(2) of two valid C strings.
    unsafe {
        asm!(
            "fnstcw word ptr [{s} + {o_ofcw}]",
            "stmxcsr dword ptr [{s} + {o_omx}]",
            "fninit",
            "fldcw word ptr [{s} + {o_fcw}]",
            "ldmxcsr dword ptr [{s} + {o_mx}]",
            "fld qword ptr [{s} + {o_x87}]",
            "fld qword ptr [{s} + {o_x87} + 8]",
            "fld qword ptr [{s} + {o_x87} + 16]",
            "fld qword ptr [{s} + {o_x87} + 24]",
            "fld qword ptr [{s} + {o_x87} + 32]",
            "fld qword ptr [{s} + {o_x87} + 40]",
            "fld qword ptr [{s} + {o_x87} + 48]",
            "fld qword ptr [{s} + {o_x87} + 56]",
            "movdqu xmm0, xmmword ptr [{s} + {o_ysrc}]",
            "movdqu xmm1, xmmword ptr [{s} + {o_ysrc} + 32]",
            "movdqu xmm2, xmmword ptr [{s} + {o_ysrc} + 64]",
            "movdqu xmm3, xmmword ptr [{s} + {o_ysrc} + 96]",
            "movdqu xmm4, xmmword ptr [{s} + {o_ysrc} + 128]",
            "movdqu xmm5, xmmword ptr [{s} + {o_ysrc} + 160]",
            "movdqu xmm6, xmmword ptr [{s} + {o_ysrc} + 192]",
            "movdqu xmm7, xmmword ptr [{s} + {o_ysrc} + 224]",
            "movdqu xmm8, xmmword ptr [{s} + {o_ysrc} + 256]",
            "movdqu xmm9, xmmword ptr [{s} + {o_ysrc} + 288]",
            "movdqu xmm10, xmmword ptr [{s} + {o_ysrc} + 320]",
            "movdqu xmm11, xmmword ptr [{s} + {o_ysrc} + 352]",
            "movdqu xmm12, xmmword ptr [{s} + {o_ysrc} + 384]",
            "movdqu xmm13, xmmword ptr [{s} + {o_ysrc} + 416]",
            "movdqu xmm14, xmmword ptr [{s} + {o_ysrc} + 448]",
            "movdqu xmm15, xmmword ptr [{s} + {o_ysrc} + 480]",
            "fxsave [{s} + {o_fxref}]",
            "syscall",
            "test rax, rax",
            "jnz 7f",
            "2:",
            "pause",
            "movzx {t:e}, byte ptr [{flag}]",
            "fxsave [{s} + {o_fxcur}]",
            "xor {i:e}, {i:e}",
            "mov {a:e}, dword ptr [{s} + {o_fxref}]",
            "cmp {a:e}, dword ptr [{s} + {o_fxcur}]",
            "jne 8f",
            "mov {i:e}, 4",
            "mov {a:x}, word ptr [{s} + {o_fxref} + 4]",
            "cmp {a:x}, word ptr [{s} + {o_fxcur} + 4]",
            "jne 8f",
            "mov {i:e}, 24",
            "3:",
            "mov {a}, qword ptr [{s} + {o_fxref} + {i}]",
            "cmp {a}, qword ptr [{s} + {o_fxcur} + {i}]",
            "jne 8f",
            "add {i:e}, 8",
            "cmp {i:e}, {fx_end}",
            "jb 3b",
            "test {t:e}, {t:e}",
            "jz 2b",
            "mov {res}, -1",
            "jmp 6f",
            "7:",
            "mov {res}, {rename_flag}",
            "jmp 6f",
            "8:",
            "mov {res}, {i}",
            "6:",
            "fninit",
            "fldcw word ptr [{s} + {o_ofcw}]",
            "ldmxcsr dword ptr [{s} + {o_omx}]",
            s = in(reg) s as *mut State,
            flag = in(reg) flag,
            t = out(reg) _,
            a = out(reg) _,
            i = out(reg) _,
            res = out(reg) res,
            o_fxref = const offset_of!(State, fx_ref),
            o_fxcur = const offset_of!(State, fx_cur),
            o_ysrc = const offset_of!(State, ysrc),
            o_x87 = const offset_of!(State, x87),
            o_fcw = const offset_of!(State, fcw),
            o_mx = const offset_of!(State, mxcsr),
            o_ofcw = const offset_of!(State, orig_fcw),
            o_omx = const offset_of!(State, orig_mxcsr),
            fx_end = const FX_END,
            rename_flag = const RENAME_FLAG,
            inout("rax") libc::SYS_rename => _,
            in("rdi") rf.tmp_ptr(),
            in("rsi") rf.path_ptr(),
            out("rcx") _,
            out("r11") _,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
            out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
            out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
        );
    }
    res
}

/// The 80-bit extended encoding of a normal f64, as fxsave stores it.
fn f80(x: f64) -> [u8; 10] {
    let b = x.to_bits();
    let sign = (b >> 63) as u16;
    let exp = ((b >> 52) & 0x7ff) as u16;
    let mant = (b & ((1 << 52) - 1)) << 11 | 1 << 63;
    let se = (sign << 15) | (exp + 16383 - 1023);
    let mut out = [0u8; 10];
    out[..8].copy_from_slice(&mant.to_le_bytes());
    out[8..].copy_from_slice(&se.to_le_bytes());
    out
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(w)
}

/// Names the fxsave-area byte at `off`.
fn fx_name(off: usize) -> String {
    match off {
        0..=1 => "FCW".into(),
        2..=3 => "FSW".into(),
        4..=5 => "FTW".into(),
        24..=27 => "MXCSR".into(),
        28..=31 => "MXCSR_MASK".into(),
        32..=159 => format!("st({})", (off - 32) / 16),
        160..=415 => format!("xmm{}", (off - 160) / 16),
        _ => format!("fxsave byte {off}"),
    }
}

fn main() {
    zdtmtst::start();
    let avx = std::arch::is_x86_feature_detected!("avx");
    let mut s = Box::new(State {
        fx_ref: [0; 512],
        fx_cur: [0; 512],
        ysrc: [0; 64],
        ycur: [0; 64],
        x87: [0.0; 8],
        fcw: FCW,
        pad: 0,
        mxcsr: MXCSR,
        orig_fcw: 0,
        pad2: 0,
        orig_mxcsr: 0,
    });
    for (i, w) in s.ysrc.iter_mut().enumerate() {
        // Register r, qword q: 0xRR_QQ then a hash, so every lane differs.
        let (r, q) = (i / 4, i % 4);
        *w = ((r as u64) << 56) | ((q as u64) << 48) | (zdtmtst::pattern::word(i, 0xf9) >> 16);
    }
    for (k, x) in s.x87.iter_mut().enumerate() {
        *x = std::f64::consts::PI * (k as f64 + 1.0) * if k % 2 == 1 { -1.0 } else { 1.0 };
    }
    eprintln!(
        "fpu_avx: {}",
        if avx {
            "AVX (ymm0-15)"
        } else {
            "SSE only (xmm0-15)"
        }
    );

    let rf = zdtmtst::prepare_ready();
    let res = if avx {
        // SAFETY: AVX support (CPU and OS-enabled XSAVE state) was detected.
        unsafe { spin_avx(&mut s, &rf) }
    } else {
        spin_sse(&mut s, &rf)
    };

    let mut c = Checker::new();
    if res != OK && res & RENAME_FLAG != 0 {
        fail("rename of the pidfile from the assembly block failed");
    }
    // The snapshot must hold what was loaded, or the comparison proves little.
    check_eq!(
        c,
        u16::from_le_bytes([s.fx_ref[0], s.fx_ref[1]]),
        FCW,
        "FCW after loading"
    );
    check_eq!(
        c,
        u32::from_le_bytes([s.fx_ref[24], s.fx_ref[25], s.fx_ref[26], s.fx_ref[27]]),
        MXCSR,
        "MXCSR after loading"
    );
    for k in 0..8 {
        let st = &s.fx_ref[32 + 16 * k..32 + 16 * k + 10];
        check_eq!(c, st, &f80(s.x87[7 - k])[..], "st({k}) after loading");
    }
    for r in 0..16 {
        let off = 160 + 16 * r;
        check_eq!(
            c,
            (u64_at(&s.fx_ref, off), u64_at(&s.fx_ref, off + 8)),
            (s.ysrc[4 * r], s.ysrc[4 * r + 1]),
            "xmm{r} after loading"
        );
    }
    if res != OK {
        if res & YMM_FLAG != 0 {
            let q = (res & 0xffff) as usize / 8;
            c.fail(format!(
                "ymm{} qword {}: expected {:#018x}, found {:#018x}",
                q / 4,
                q % 4,
                s.ysrc[q],
                s.ycur[q]
            ));
        } else {
            let off = res as usize;
            let span = if off < 24 { 0..8 } else { off..off + 8 };
            c.fail(format!(
                "{} (fxsave offset {off}): expected {:02x?}, found {:02x?}",
                fx_name(off),
                &s.fx_ref[span.clone()],
                &s.fx_cur[span]
            ));
        }
    }
    c.finish();
}
