//! General registers: conversion to and from the image, and syscall-restart fix-up.

use images::pb::UserRegs as ImgRegs;
use parasite::UserRegs;

macro_rules! each_reg {
    ($m:ident) => {
        $m!(
            r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx, rdx, rsi, rdi, orig_rax, rip,
            cs, eflags, rsp, ss, fs_base, gs_base, ds, es, fs, gs
        )
    };
}

pub(crate) fn to_image(r: &UserRegs) -> ImgRegs {
    macro_rules! conv {
        ($($f:ident),*) => { ImgRegs { $($f: r.$f),* } };
    }
    each_reg!(conv)
}

pub(crate) fn from_image(i: &ImgRegs) -> UserRegs {
    let mut r = zeroed();
    macro_rules! conv {
        ($($f:ident),*) => { $(r.$f = i.$f;)* };
    }
    each_reg!(conv);
    r
}

fn zeroed() -> UserRegs {
    UserRegs {
        r15: 0,
        r14: 0,
        r13: 0,
        r12: 0,
        rbp: 0,
        rbx: 0,
        r11: 0,
        r10: 0,
        r9: 0,
        r8: 0,
        rax: 0,
        rcx: 0,
        rdx: 0,
        rsi: 0,
        rdi: 0,
        orig_rax: 0,
        rip: 0,
        cs: 0,
        eflags: 0,
        rsp: 0,
        ss: 0,
        fs_base: 0,
        gs_base: 0,
        ds: 0,
        es: 0,
        fs: 0,
        gs: 0,
    }
}

const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
const ERESTARTNOHAND: i64 = 514;
const ERESTART_RESTARTBLOCK: i64 = 516;

/// Registers a restored thread resumes with, given those it was frozen with.
///
/// A thread frozen inside a syscall shows the kernel's internal restart codes. Every restored
/// thread is released from a stop inside the kernel's signal delivery (the trap after its last
/// remote call), which applies the kernel's own restart logic to the registers it finds, just
/// as for the frozen thread: `-ERESTARTSYS`/`NOINTR`/`NOHAND` with `orig_rax` kept re-execute
/// the syscall, or return `-EINTR` when a handler runs first, so a signal arriving as the tree
/// resumes interrupts `pause()` instead of being handled just before it blocks again.
/// `-ERESTART_RESTARTBLOCK` (nanosleep, poll with timeout...) needs the lost restart block, so
/// the call returns `-EINTR` as after a handled signal, and `orig_rax = -1` keeps the kernel
/// from restarting it.
pub(crate) fn for_resume(saved: &UserRegs) -> UserRegs {
    let mut r = *saved;
    if (saved.orig_rax as i64) >= 0 {
        match -(saved.rax as i64) {
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => return r,
            ERESTART_RESTARTBLOCK => r.rax = (-libc::EINTR as i64) as u64,
            _ => {}
        }
    }
    r.orig_rax = u64::MAX;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(orig: i64, rax: i64, rip: u64) -> UserRegs {
        let mut r = zeroed();
        r.orig_rax = orig as u64;
        r.rax = rax as u64;
        r.rip = rip;
        r
    }

    #[test]
    fn interrupted_read_is_left_to_the_kernel_restart() {
        let r = for_resume(&regs(0, -ERESTARTSYS, 0x1002));
        assert_eq!((r.rax as i64, r.rip, r.orig_rax), (-ERESTARTSYS, 0x1002, 0));
        let r = for_resume(&regs(34, -ERESTARTNOHAND, 0x2002));
        assert_eq!(
            (r.rax as i64, r.rip, r.orig_rax),
            (-ERESTARTNOHAND, 0x2002, 34)
        );
    }

    #[test]
    fn restart_block_becomes_eintr() {
        let r = for_resume(&regs(35, -ERESTART_RESTARTBLOCK, 0x1002));
        assert_eq!((r.rax as i64, r.rip), (-(libc::EINTR as i64), 0x1002));
    }

    #[test]
    fn user_mode_registers_are_kept() {
        let r = for_resume(&regs(-1, 42, 0x1234));
        assert_eq!((r.rax, r.rip, r.orig_rax as i64), (42, 0x1234, -1));
        // A syscall that already finished with an ordinary error is left alone.
        let r = for_resume(&regs(0, -4, 0x1002));
        assert_eq!((r.rax as i64, r.rip), (-4, 0x1002));
    }

    #[test]
    fn image_round_trip() {
        let mut r = regs(1, 2, 3);
        r.gs = 9;
        r.fs_base = 0x7f00;
        let back = from_image(&to_image(&r));
        assert_eq!((back.gs, back.fs_base, back.rip), (9, 0x7f00, 3));
    }
}
