//! Isolation between parallel trials.
//!
//! Trials run on a pool of worker threads. An `excl` trial must run alone: it
//! waits until every running trial has finished, and while it waits no new trial
//! starts (writer preference), so the pool drains. Named locks serialize trials
//! using the same kernel-global resource without stopping everything else.
//! Both are one state under one mutex: a trial takes all it needs at once or
//! waits, so two trials can never hold each other's locks (no deadlock).

use std::collections::HashSet;
use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Default)]
struct State {
    running: usize,
    exclusive: bool,
    exclusive_waiting: usize,
    held: HashSet<String>,
}

/// Admission control for trials.
#[derive(Default)]
pub struct Scheduler {
    state: Mutex<State>,
    changed: Condvar,
}

/// Held while a trial runs; dropping it lets others in.
pub struct Ticket<'a> {
    sched: &'a Scheduler,
    exclusive: bool,
    names: Vec<String>,
}

impl Scheduler {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A trial that panicked while holding the mutex leaves consistent counters
        // (every update is a single statement), so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks until the trial may run: alone if `exclusive`, and never together
    /// with another holder of one of `names`.
    pub fn admit(&self, exclusive: bool, names: &[String]) -> Ticket<'_> {
        let mut st = self.lock();
        if exclusive {
            st.exclusive_waiting += 1;
        }
        loop {
            let names_free = names.iter().all(|n| !st.held.contains(n));
            let ok = if exclusive {
                !st.exclusive && st.running == 0
            } else {
                !st.exclusive && st.exclusive_waiting == 0
            };
            if ok && names_free {
                break;
            }
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if exclusive {
            st.exclusive_waiting -= 1;
            st.exclusive = true;
        } else {
            st.running += 1;
        }
        st.held.extend(names.iter().cloned());
        Ticket {
            sched: self,
            exclusive,
            names: names.to_vec(),
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut st = self.sched.lock();
        if self.exclusive {
            st.exclusive = false;
        } else {
            st.running -= 1;
        }
        for n in &self.names {
            st.held.remove(n);
        }
        drop(st);
        self.sched.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn exclusive_runs_alone_and_drains_the_pool() {
        let sched = Arc::new(Scheduler::default());
        let running = Arc::new(AtomicUsize::new(0));
        let excl_seen_others = Arc::new(AtomicUsize::new(0));
        let max_parallel = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for i in 0..24 {
            let (sched, running, seen, maxp) = (
                sched.clone(),
                running.clone(),
                excl_seen_others.clone(),
                max_parallel.clone(),
            );
            threads.push(std::thread::spawn(move || {
                let exclusive = i % 6 == 3;
                let _t = sched.admit(exclusive, &[]);
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                maxp.fetch_max(now, Ordering::SeqCst);
                if exclusive && now != 1 {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(10));
                if exclusive && running.load(Ordering::SeqCst) != 1 {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                running.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(excl_seen_others.load(Ordering::SeqCst), 0);
        // Normal trials did run in parallel.
        assert!(max_parallel.load(Ordering::SeqCst) > 1);
    }

    #[test]
    fn named_locks_serialize_only_their_holders() {
        let sched = Arc::new(Scheduler::default());
        let a = sched.admit(false, &["net".to_string()]);
        // Another lock name and no lock at all are admitted at once.
        let b = sched.admit(false, &["ipc".to_string()]);
        let c = sched.admit(false, &[]);
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = sched.clone();
        let h = std::thread::spawn(move || {
            let _d = s2.admit(false, &["net".to_string(), "x".to_string()]);
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        drop(a);
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        h.join().unwrap();
        drop((b, c));
    }

    #[test]
    fn waiting_exclusive_blocks_new_trials() {
        let sched = Arc::new(Scheduler::default());
        let first = sched.admit(false, &[]);
        let s2 = sched.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let tx2 = tx.clone();
        let ex = std::thread::spawn(move || {
            let _e = s2.admit(true, &[]);
            tx2.send("excl").unwrap();
            std::thread::sleep(Duration::from_millis(30));
        });
        // Let the exclusive trial start waiting.
        std::thread::sleep(Duration::from_millis(50));
        let s3 = sched.clone();
        let late = std::thread::spawn(move || {
            let _n = s3.admit(false, &[]);
            tx.send("late").unwrap();
        });
        std::thread::sleep(Duration::from_millis(50));
        drop(first);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "excl");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "late");
        ex.join().unwrap();
        late.join().unwrap();
    }
}
