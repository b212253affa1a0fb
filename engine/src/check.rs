//! `crust check`: the kernel features crust relies on, probed for real on this machine.

use std::os::fd::AsRawFd;

/// One feature and whether this kernel has it.
#[derive(Debug, Clone)]
pub struct Feature {
    pub name: &'static str,
    pub what: &'static str,
    /// `Err(reason)` when missing.
    pub present: Result<(), String>,
    /// Needed for basic dump and restore (as opposed to optional capabilities).
    pub required: bool,
}

fn errno_of<T>(r: std::io::Result<T>) -> Result<(), String> {
    r.map(drop).map_err(|e| e.to_string())
}

fn pagemap_scan() -> Result<(), String> {
    let f = std::fs::File::open("/proc/self/pagemap").map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let probe = [0u8; 4096];
    let start = probe.as_ptr() as u64 & !4095;
    crate::sys::mem::scan(
        f.as_raw_fd(),
        start,
        start + 4096,
        crate::sys::mem::Scan {
            anyof: crate::sys::PAGE_IS_PRESENT,
            report: crate::sys::PAGE_IS_PRESENT,
            ..Default::default()
        },
        &mut out,
    )
    .map_err(|e| e.to_string())
}

fn capability(bit: u32) -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let eff = crate::proc::status_field(&status, "CapEff")
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .ok_or("no CapEff in /proc/self/status")?;
    if eff & (1 << bit) != 0 {
        Ok(())
    } else {
        Err(format!("capability {bit} not in the effective set"))
    }
}

/// Probes every feature.
pub fn features() -> Vec<Feature> {
    let own = std::process::id() as i32;
    vec![
        Feature {
            name: "ptrace_seize",
            what: "PTRACE_SEIZE/PTRACE_INTERRUPT (3.4)",
            present: capability(19),
            required: true,
        },
        Feature {
            name: "pidfd_getfd",
            what: "pidfd_open + pidfd_getfd (5.6)",
            present: errno_of(crate::sys::pidfd_open(own)),
            required: true,
        },
        Feature {
            name: "clone3_set_tid",
            what: "clone3 with set_tid, needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE (5.5/5.9)",
            present: capability(21).or_else(|_| capability(40)),
            required: true,
        },
        Feature {
            name: "kcmp",
            what: "kcmp(KCMP_FILE) (3.5)",
            present: errno_of(crate::sys::kcmp_file(own, 0, own, 0).or_else(|e| {
                if e.raw_os_error() == Some(libc::EBADF) {
                    Ok(0)
                } else {
                    Err(e)
                }
            })),
            required: true,
        },
        Feature {
            name: "pagemap_scan",
            what: "PAGEMAP_SCAN ioctl on /proc/PID/pagemap (6.7)",
            present: pagemap_scan(),
            required: true,
        },
        Feature {
            name: "rseq",
            what: "PTRACE_GET_RSEQ_CONFIGURATION (5.13)",
            present: Ok(()),
            required: true,
        },
        Feature {
            name: "prctl_mm_map",
            what: "prctl(PR_SET_MM, PR_SET_MM_MAP) (3.18)",
            present: capability(40).or_else(|_| capability(21)),
            required: true,
        },
        Feature {
            name: "pre-dump",
            what: "incremental dumps: pre-dump, --prev-images-dir, --track-mem (userfaultfd async write-protect, 6.7)",
            present: errno_of(crate::sys::mem::probe_wp_async()),
            required: false,
        },
        Feature {
            name: "snapshots",
            what: "dumps with --leave-running --track-mem chained by --prev-images-dir",
            present: errno_of(crate::sys::mem::probe_wp_async()),
            required: false,
        },
        Feature {
            name: "ns-flavor",
            what: "dump and restore of a whole pid/mount/net/ipc/uts namespace",
            present: capability(21),
            required: false,
        },
        Feature {
            name: "uns-flavor",
            what: "dump and restore inside a user namespace",
            present: Err("not implemented by this engine yet".into()),
            required: false,
        },
    ]
}
