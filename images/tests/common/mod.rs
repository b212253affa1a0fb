//! Sample records of every kind, shared by the integration tests.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;

use images::pb::{self, file_entry};
use images::{ImageDir, ImageKind, PAGE_SIZE, PE_IN_PARENT, PE_PRESENT, PE_ZERO};

pub fn inventory() -> pb::InventoryEntry {
    pb::InventoryEntry {
        format_version: images::FORMAT_VERSION,
        tool_version: "0.1.0".into(),
        kernel_release: "6.18.0".into(),
        root_pid: 4242,
        pids: vec![4242, 4243, 4250],
        dump_time_ns: 1_700_000_000_123_456_789,
        root_ns_flags: 0x2000_0000,
        hostname: "zdtm".into(),
        domainname: String::new(),
    }
}

pub fn pstree() -> Vec<pb::PstreeEntry> {
    vec![
        pb::PstreeEntry {
            pid: 4242,
            ppid: 0,
            pgid: 4242,
            sid: 4200,
            threads: vec![4242, 4244, 4245],
            ns_pid: 1,
            ns_threads: vec![1, 3, 4],
            ..Default::default()
        },
        pb::PstreeEntry {
            pid: 4243,
            ppid: 4242,
            pgid: 4242,
            sid: 4200,
            threads: vec![4243],
            zombie: true,
            exit_status: 9,
            exit_signal: 17,
            ..Default::default()
        },
    ]
}

pub fn core(leader: bool) -> pb::CoreEntry {
    pb::CoreEntry {
        thread: Some(pb::ThreadCore {
            tid: 4242,
            regs: Some(pb::UserRegs {
                r15: 15,
                rbp: 0x7ffc_0000_1000,
                rax: u64::MAX,
                orig_rax: 0xffff_ffff_ffff_ffff,
                rip: 0x5555_5555_1234,
                cs: 0x33,
                eflags: 0x246,
                rsp: 0x7ffc_0000_0ff8,
                ss: 0x2b,
                fs_base: 0x7f00_0000_0740,
                ..Default::default()
            }),
            xsave: (0..832u32).map(|i| (i * 7) as u8).collect(),
            sigmask: 1 << (10 - 1),
            pending: vec![pb::SigInfo {
                raw: [10u8; 128].to_vec(),
            }],
            rseq: Some(pb::Rseq {
                rseq_abi_pointer: 0x7f00_0000_0fe0,
                rseq_abi_size: 32,
                flags: 0,
                signature: 0x5305_3053,
            }),
            altstack: None,
            clear_child_tid: 0x7f00_0000_0a10,
            robust_list: 0x7f00_0000_0a20,
            robust_list_len: 24,
            comm: "worker".into(),
            sched_policy: 0,
            sched_priority: 0,
            nice: -5,
            cpu_affinity: vec![0b11],
            no_new_privs: true,
            keepcaps: false,
            timer_slack_ns: 50_000,
        }),
        task: leader.then(|| pb::TaskCore {
            pending_shared: vec![],
            personality: 0,
            umask: 0o022,
            exit_signal: 17,
            pdeath_signal: 9,
            dumpable: true,
            comm: "server".into(),
            itimers: vec![pb::ITimer {
                which: 0,
                interval_us: 1_000_000,
                value_us: 250_000,
            }],
            thp_disable: false,
        }),
    }
}

pub fn file_id(path: &str) -> pb::FileId {
    pb::FileId {
        path: path.into(),
        dev: 0x803,
        ino: 131_077,
        size: 1_234_567,
        mtime_ns: -5,
        build_id: vec![0x5a; 20],
    }
}

pub fn mm() -> pb::MmEntry {
    pb::MmEntry {
        start_code: 0x5555_5555_0000,
        end_code: 0x5555_5556_0000,
        start_data: 0x5555_5557_0000,
        end_data: 0x5555_5557_1000,
        start_brk: 0x5555_5558_0000,
        brk: 0x5555_5559_0000,
        start_stack: 0x7ffc_0000_2000,
        arg_start: 0x7ffc_0000_3000,
        arg_end: 0x7ffc_0000_3010,
        env_start: 0x7ffc_0000_3010,
        env_end: 0x7ffc_0000_3ff0,
        auxv: vec![6, 4096, 0, 0],
        exe: Some(file_id("/usr/bin/server")),
        vmas: vec![
            pb::VmaEntry {
                start: 0x5555_5555_0000,
                end: 0x5555_5556_0000,
                prot: 5,
                flags: 2,
                pgoff: 0x1000,
                kind: pb::VmaKind::VmaFilePrivate as i32,
                file: Some(file_id("/usr/bin/server")),
                vm_flags: vec!["rd".into(), "ex".into(), "mr".into()],
                ..Default::default()
            },
            pb::VmaEntry {
                start: 0x7ffc_0000_0000,
                end: 0x7ffc_0002_1000,
                prot: 3,
                flags: 0x22,
                pgoff: 0,
                kind: pb::VmaKind::VmaStack as i32,
                file: None,
                vm_flags: vec!["rd".into(), "wr".into(), "gd".into()],
                huge: vec![pb::AddrRange {
                    start: 0x7ffc_0000_0000,
                    end: 0x7ffc_0000_2000,
                }],
                ..Default::default()
            },
            pb::VmaEntry {
                start: 0x7ffc_1000_0000,
                end: 0x7ffc_1000_4000,
                prot: 3,
                flags: 1,
                kind: pb::VmaKind::VmaAnonShared as i32,
                shmem: Some(pb::ShmemObject {
                    id: 1,
                    kind: pb::ShmemKind::ShmemMemfd as i32,
                    name: "pool".into(),
                    size: 0x4000,
                    seals: 4,
                    ino: 77,
                }),
                ..Default::default()
            },
        ],
        vdso: Some(pb::VdsoInfo {
            size: 0x2000,
            vvar_offset: -0x4000,
            symbols: vec![pb::VdsoSymbol {
                name: "__vdso_clock_gettime".into(),
                offset: 0xc30,
                size: 0x2e0,
            }],
            hash: 0x1234_5678_9abc_def0,
        }),
        track: Some("crust-track-1-2".into()),
    }
}

pub fn fdinfo() -> Vec<pb::FdinfoEntry> {
    vec![
        pb::FdinfoEntry {
            fd: 0,
            id: 1,
            fd_flags: 0,
            ..Default::default()
        },
        pb::FdinfoEntry {
            fd: 3,
            id: 2,
            fd_flags: 1,
            ..Default::default()
        },
        pb::FdinfoEntry {
            fd: 4,
            id: 2,
            fd_flags: 0,
            ..Default::default()
        },
    ]
}

pub fn files() -> Vec<pb::FileEntry> {
    vec![
        pb::FileEntry {
            id: 1,
            kind: Some(file_entry::Kind::Reg(pb::RegFile {
                path: "/tmp/log".into(),
                flags: 0o2001,
                pos: 77,
                file: Some(file_id("/tmp/log")),
                ..Default::default()
            })),
        },
        pb::FileEntry {
            id: 2,
            kind: Some(file_entry::Kind::Pipe(pb::PipeEnd {
                pipe_ino: 99,
                flags: 0,
                write_end: true,
                ..Default::default()
            })),
        },
    ]
}

pub fn pipe_data() -> Vec<pb::PipeData> {
    vec![pb::PipeData {
        pipe_ino: 99,
        size: 65536,
        data: b"queued bytes".to_vec(),
        ..Default::default()
    }]
}

pub fn fs() -> pb::FsEntry {
    pb::FsEntry {
        cwd: "/srv".into(),
        root: "/".into(),
        umask: 0o022,
        ..Default::default()
    }
}

pub fn sigacts() -> Vec<pb::SigactionEntry> {
    (1..=3)
        .map(|sig| pb::SigactionEntry {
            sig,
            handler: 0x5555_5555_2000 + u64::from(sig),
            flags: 0x0400_0000,
            restorer: 0x7f00_0004_5320,
            mask: 1 << sig,
        })
        .collect()
}

pub fn rlimits() -> Vec<pb::RlimitEntry> {
    vec![
        pb::RlimitEntry {
            resource: 7,
            cur: 1024,
            max: 4096,
        },
        pb::RlimitEntry {
            resource: 3,
            cur: 8 << 20,
            max: u64::MAX,
        },
    ]
}

pub fn pagemap_head() -> pb::PagemapHead {
    pb::PagemapHead { pages_id: 7 }
}

/// Three present runs (1 + 2 + 1 pages), one zero and one in-parent run.
pub fn pagemap_entries() -> Vec<pb::PagemapEntry> {
    let e = |vaddr, nr_pages, pages_off, flags| pb::PagemapEntry {
        vaddr,
        nr_pages,
        pages_off,
        flags,
        part: 0,
    };
    vec![
        e(0x1000, 1, 0, PE_PRESENT),
        e(0x2000, 3, 0, PE_ZERO),
        e(0x10000, 2, 1, PE_PRESENT),
        e(0x20000, 5, 0, PE_IN_PARENT),
        e(0x7ffc_0000_0000, 1, 3, PE_PRESENT),
    ]
}

/// Pages in `pagemap_entries`' pages file.
pub const SAMPLE_PAGES: u64 = 4;

/// Writes `pages-<id>.img` with `nr` pages, page `i` filled with byte `i`.
pub fn write_pages(dir: &ImageDir, pages_id: u32, nr: u64) {
    use std::io::Write;
    let mut f = dir.create_pages(pages_id).unwrap();
    for i in 0..nr {
        f.write_all(&[i as u8; PAGE_SIZE as usize]).unwrap();
    }
    drop(f);
    dir.commit_pages(pages_id).unwrap();
}

/// A directory holding one image of every kind, with pages.
pub fn full_dir(path: &Path) -> ImageDir {
    let dir = ImageDir::create(path).unwrap();
    dir.write(ImageKind::Pstree, None, &pstree()).unwrap();
    dir.write_one(ImageKind::Core, Some(4242), &core(true))
        .unwrap();
    dir.write_one(ImageKind::Core, Some(4244), &core(false))
        .unwrap();
    dir.write_one(ImageKind::Mm, Some(4242), &mm()).unwrap();
    write_pages(&dir, 7, SAMPLE_PAGES);
    dir.write_pagemap(4242, &pagemap_head(), &pagemap_entries())
        .unwrap();
    dir.write(ImageKind::Fdinfo, Some(4242), &fdinfo()).unwrap();
    dir.write(ImageKind::Files, None, &files()).unwrap();
    dir.write(ImageKind::PipeData, None, &pipe_data()).unwrap();
    dir.write_one(ImageKind::Fs, Some(4242), &fs()).unwrap();
    dir.write(ImageKind::Sigacts, Some(4242), &sigacts())
        .unwrap();
    dir.write(ImageKind::Rlimits, Some(4242), &rlimits())
        .unwrap();
    dir.write_one(ImageKind::Inventory, None, &inventory())
        .unwrap();
    dir
}
