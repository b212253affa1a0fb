//! Remote syscalls run in batches: the calls of one step (reading a task's dispositions, its
//! timers, its prctl state...) are collected first and run inside the task with a single
//! resume ([`parasite::Tracee::syscalls`]) instead of one single-step each. Calls that write
//! results into the task's memory get a slot of the output region; the whole region is read
//! back once after the run. A batch stops at the first call that fails, as calls checked
//! one by one would.

use parasite::{RemoteAddr, RemoteSyscallError, Tracee};

use crate::error::{DumpError, RestoreError};

/// The first part of the scratch area holds the batch (code and call table), the second the
/// output slots: [`OUT_OFFSET`] bytes each.
pub(crate) const OUT_OFFSET: u64 = 8192;
/// Bytes before the call table: the batch code.
const CODE_LEN: u64 = 64;
/// Bytes of scratch area a batch needs.
pub(crate) const SCRATCH_LEN: u64 = 2 * OUT_OFFSET;

/// Calls waiting to run in one task.
pub(crate) struct Batch {
    area: RemoteAddr,
    calls: Vec<(i64, [u64; 6])>,
    whats: Vec<&'static str>,
    out_len: u64,
}

/// One batch's results.
pub(crate) struct Ran {
    pid: i32,
    tid: parasite::Tid,
    calls: Vec<(i64, [u64; 6])>,
    whats: Vec<&'static str>,
    results: Vec<i64>,
    out_base: u64,
    out: Vec<u8>,
}

impl Batch {
    /// A batch using `area`, a scratch mapping of [`SCRATCH_LEN`] bytes, readable, writable and
    /// executable.
    pub(crate) fn new(area: RemoteAddr) -> Batch {
        Batch {
            area,
            calls: Vec::new(),
            whats: Vec::new(),
            out_len: 0,
        }
    }

    /// Reserves `len` bytes of output and returns their address in the task.
    pub(crate) fn out(&mut self, len: u64) -> u64 {
        let at = self.area.0 + OUT_OFFSET + self.out_len;
        self.out_len += len.next_multiple_of(8);
        assert!(
            self.out_len <= SCRATCH_LEN - OUT_OFFSET,
            "remote batch output larger than its area"
        );
        at
    }

    /// Adds a call; returns its index for [`Ran::ok`].
    pub(crate) fn push(&mut self, what: &'static str, nr: i64, args: [u64; 6]) -> usize {
        assert!(
            CODE_LEN + parasite::batch_len(self.calls.len() + 1) as u64 <= OUT_OFFSET,
            "remote batch longer than its area"
        );
        self.calls.push((nr, args));
        self.whats.push(what);
        self.calls.len() - 1
    }

    /// Runs every call in `t` and reads the outputs back.
    pub(crate) fn run(self, t: &mut Tracee, pid: i32) -> Result<Ran, DumpError> {
        let mut out = vec![0u8; self.out_len as usize];
        // Slots start zeroed: a call may write fewer bytes than its slot (an int in a word).
        if !out.is_empty() {
            t.write_mem(RemoteAddr(self.area.0 + OUT_OFFSET), &out)?;
        }
        let table = RemoteAddr(self.area.0 + CODE_LEN);
        t.write_mem(self.area, &parasite::BATCH_CODE)?;
        let results = t
            .syscalls(self.area, table, &self.calls)
            .map_err(|e| DumpError::Remote {
                pid,
                what: "remote syscall batch",
                source: RemoteSyscallError::Ptrace(e),
            })?;
        if !out.is_empty() {
            t.read_mem(RemoteAddr(self.area.0 + OUT_OFFSET), &mut out)?;
        }
        Ok(Ran {
            pid,
            tid: t.tid(),
            calls: self.calls,
            whats: self.whats,
            results,
            out_base: self.area.0 + OUT_OFFSET,
            out,
        })
    }
}

impl Ran {
    /// The result of call `i`, or the error naming it.
    pub(crate) fn ok(&self, i: usize) -> Result<u64, DumpError> {
        // A call that did not run: the batch stopped on the failure of the last one that did.
        let i = i.min(self.results.len().saturating_sub(1));
        RemoteSyscallError::check(self.tid, self.calls[i].0, self.results[i]).map_err(|source| {
            DumpError::Remote {
                pid: self.pid,
                what: self.whats[i],
                source,
            }
        })
    }

    /// `len` output bytes at `addr` (an address [`Batch::out`] returned).
    pub(crate) fn bytes(&self, addr: u64, len: usize) -> &[u8] {
        let at = (addr - self.out_base) as usize;
        &self.out[at..at + len]
    }

    /// The `i`th native word of the output at `addr`.
    pub(crate) fn word(&self, addr: u64, i: usize) -> u64 {
        u64::from_ne_bytes(
            self.bytes(addr + 8 * i as u64, 8)
                .try_into()
                .expect("8 bytes"),
        )
    }
}

/// Remote calls of a restore that need no answer but success, queued and run in batches
/// through the trampoline: [`Queue::flush`] runs them (it must come before anything that
/// depends on their effects, a call whose result is used, or a read of the task's memory).
pub(crate) struct Queue {
    code: RemoteAddr,
    table: RemoteAddr,
    cap: usize,
    calls: Vec<(i64, [u64; 6])>,
    whats: Vec<String>,
    /// The result a call must return, where success is not enough (a full read).
    expect: Vec<Option<u64>>,
    /// Where the queued calls' in-memory arguments go, and those waiting to be written.
    args_at: RemoteAddr,
    args_cap: usize,
    args: Vec<u8>,
}

impl Queue {
    /// A queue running [`parasite::BATCH_CODE`] at `code` with its table in `table_len` bytes
    /// at `table` and the calls' in-memory arguments in `args_len` bytes at `args`.
    pub(crate) fn new(
        code: RemoteAddr,
        (table, table_len): (RemoteAddr, u64),
        (args, args_len): (RemoteAddr, u64),
    ) -> Queue {
        Queue {
            code,
            table,
            cap: table_len as usize / parasite::batch_len(1),
            calls: Vec::new(),
            whats: Vec::new(),
            expect: Vec::new(),
            args_at: args,
            args_cap: args_len as usize,
            args: Vec::new(),
        }
    }

    /// Places `bytes` in the task's memory for a call queued next (written when the queue
    /// runs) and returns their address; runs the queue first when the argument area is full.
    pub(crate) fn arg(
        &mut self,
        t: &mut Tracee,
        pid: i32,
        bytes: &[u8],
    ) -> Result<u64, RestoreError> {
        let len = bytes.len().next_multiple_of(8);
        if self.args.len() + len > self.args_cap {
            self.flush(t, pid)?;
        }
        assert!(
            len <= self.args_cap,
            "remote call argument larger than its area"
        );
        let at = self.args_at.0 + self.args.len() as u64;
        self.args.extend_from_slice(bytes);
        self.args.resize(self.args.len() + len - bytes.len(), 0);
        Ok(at)
    }

    /// Queues a call; `what` names it in the error if it fails. Runs the queue when full.
    pub(crate) fn push(
        &mut self,
        t: &mut Tracee,
        pid: i32,
        nr: i64,
        args: [u64; 6],
        what: impl FnOnce() -> String,
    ) -> Result<(), RestoreError> {
        self.push_expect(t, pid, nr, args, None, what)
    }

    /// Queues a call that must return `expect` (if given), not just succeed.
    pub(crate) fn push_expect(
        &mut self,
        t: &mut Tracee,
        pid: i32,
        nr: i64,
        args: [u64; 6],
        expect: Option<u64>,
        what: impl FnOnce() -> String,
    ) -> Result<(), RestoreError> {
        self.calls.push((nr, args));
        self.whats.push(what());
        self.expect.push(expect);
        if self.calls.len() >= self.cap {
            self.flush(t, pid)?;
        }
        Ok(())
    }

    /// Runs every queued call, in order, stopping at the first that fails.
    pub(crate) fn flush(&mut self, t: &mut Tracee, pid: i32) -> Result<(), RestoreError> {
        if self.calls.is_empty() {
            return Ok(());
        }
        let calls = std::mem::take(&mut self.calls);
        let mut whats = std::mem::take(&mut self.whats);
        let expect = std::mem::take(&mut self.expect);
        let args = std::mem::take(&mut self.args);
        if !args.is_empty() {
            t.write_mem(self.args_at, &args)?;
        }
        let results = t.syscalls(self.code, self.table, &calls)?;
        // Only the last call that ran can have failed: the batch stops there.
        let Some(i) = results.len().checked_sub(1) else {
            return Ok(());
        };
        RemoteSyscallError::check(t.tid(), calls[i].0, results[i]).map_err(|source| {
            RestoreError::Remote {
                pid,
                what: whats.swap_remove(i),
                source,
            }
        })?;
        for (j, (&got, want)) in results.iter().zip(&expect).enumerate() {
            if let Some(want) = *want {
                if got as u64 != want {
                    return Err(RestoreError::Remote {
                        pid,
                        what: format!("{}: {got} bytes of {want}", whats.swap_remove(j)),
                        source: RemoteSyscallError::Failed {
                            tid: t.tid(),
                            nr: calls[j].0,
                            source: std::io::ErrorKind::UnexpectedEof.into(),
                        },
                    });
                }
            }
        }
        Ok(())
    }
}
