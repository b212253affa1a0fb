//! A tiny work queue over scoped threads, for copying memory on every core.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Below this much work in all, starting threads costs more than it saves.
pub(crate) const PARALLEL_BYTES: u64 = 8 << 20;

/// Runs `work` on every item, spread over up to `available_parallelism()` threads when
/// `total_bytes` is worth it (inline otherwise); each thread gets its own `state` (a buffer,
/// say). Returns the first error.
pub(crate) fn for_each<T: Sync, S, E: Send>(
    items: &[T],
    total_bytes: u64,
    state: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, &T) -> Result<(), E> + Sync,
) -> Result<(), E> {
    if total_bytes < PARALLEL_BYTES || items.len() < 2 {
        let mut st = state();
        return items.iter().try_for_each(|i| work(&mut st, i));
    }
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
        .min(items.len().max(1));
    let next = AtomicUsize::new(0);
    let worker = || {
        let mut st = state();
        while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
            work(&mut st, item)?;
        }
        Ok(())
    };
    std::thread::scope(|s| {
        // The calling thread is the last worker. Each new thread starts on the caller's CPU,
        // which the caller then leaves for another: the workers spread at once.
        let handles: Vec<_> = (1..workers)
            .map(|_| {
                let h = s.spawn(worker);
                crate::sys::leave_cpu();
                h
            })
            .collect();
        let mine = worker();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker thread panicked"))
            .chain(std::iter::once(mine))
            .collect::<Result<(), E>>()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn visits_every_item_once_and_stops_on_error() {
        let seen = std::sync::Mutex::new(Vec::new());
        let items: Vec<u32> = (0..100).collect();
        super::for_each(
            &items,
            u64::MAX,
            || (),
            |_, &i| -> Result<(), ()> {
                seen.lock().unwrap().push(i);
                Ok(())
            },
        )
        .unwrap();
        let mut v = seen.into_inner().unwrap();
        v.sort();
        assert_eq!(v, items);
        let r = super::for_each(
            &items,
            0,
            || (),
            |_, &i| if i == 50 { Err(i) } else { Ok(()) },
        );
        assert_eq!(r, Err(50));
    }
}
