//! [`ThreadPool`]: the std implementation of the kernels' [`Parallel`] trait, on rayon.

use mft_kernels::Parallel;

use crate::error::{Error, Result};

/// A fixed set of worker threads that runs the kernels' parallel tasks.
pub struct ThreadPool {
    pool: rayon::ThreadPool,
    threads: usize,
}

impl ThreadPool {
    /// A pool of `threads` workers (at least one).
    pub fn new(threads: usize) -> Result<Self> {
        let threads = threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("mft-worker-{i}"))
            .build()
            .map_err(|source| Error::ThreadPool { threads, source })?;
        Ok(ThreadPool { pool, threads })
    }

    /// A pool with one worker per logical CPU available to this process.
    pub fn with_available_parallelism() -> Result<Self> {
        ThreadPool::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool").field("threads", &self.threads).finish()
    }
}

// SAFETY: `for_each` over `0..tasks` calls the closure exactly once per index, and `install`
// returns only after every call has finished.
unsafe impl Parallel for ThreadPool {
    fn threads(&self) -> usize {
        self.threads
    }

    fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        use rayon::prelude::*;
        self.pool.install(|| (0..tasks).into_par_iter().with_max_len(1).for_each(task));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_task_runs_exactly_once() {
        let pool = ThreadPool::new(2).unwrap();
        let counts: Vec<AtomicUsize> = (0..37).map(|_| AtomicUsize::new(0)).collect();
        pool.run(counts.len(), &|i| {
            counts[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
        assert_eq!(pool.threads(), 2);
    }

    #[test]
    fn tasks_run_on_several_threads() {
        let pool = ThreadPool::new(2).unwrap();
        let names = std::sync::Mutex::new(std::collections::HashSet::new());
        pool.run(64, &|_| {
            std::thread::sleep(std::time::Duration::from_millis(2));
            names.lock().unwrap().insert(std::thread::current().id());
        });
        assert_eq!(names.lock().unwrap().len(), 2);
    }
}
