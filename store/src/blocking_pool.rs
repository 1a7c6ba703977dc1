//! A fixed-size set of threads for blocking jobs, apart from tokio's
//! blocking pool.
//!
//! tokio's `spawn_blocking` pool grows to 512 threads per runtime and is
//! shared by everything that blocks; a job that waits (a NAR reader whose
//! client stopped reading) keeps its thread. Here each kind of work gets its
//! own pool of a configured size (the store DB's lookups one, file reads
//! another), so one kind can never queue behind the other, and the number
//! of threads is bounded by configuration, not by clients. Jobs must not
//! wait on anything but the disk or the CPU: they run to completion and
//! hand their result back through a oneshot channel.
//!
//! Threads start on demand (a job arrives and none is idle) up to the size,
//! and exit when the pool is dropped, after the queued jobs.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Threads that run blocking jobs, at most `threads` at once; see the
/// module documentation.
pub struct BlockingPool {
    shared: Arc<Shared>,
}

struct Shared {
    name: String,
    max_threads: usize,
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
    closed: bool,
}

impl std::fmt::Debug for BlockingPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingPool")
            .field("name", &self.shared.name)
            .field("max_threads", &self.shared.max_threads)
            .finish_non_exhaustive()
    }
}

/// The pool ended before running a job (it was dropped, or could not start
/// a thread).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the blocking pool stopped before running the job")]
pub struct PoolStopped;

impl BlockingPool {
    /// A pool of at most `threads` (at least 1) threads named `name`.
    pub fn new(name: &str, threads: usize) -> BlockingPool {
        BlockingPool {
            shared: Arc::new(Shared {
                name: name.to_owned(),
                max_threads: threads.max(1),
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    threads: 0,
                    idle: 0,
                    closed: false,
                }),
                wake: Condvar::new(),
            }),
        }
    }

    /// The most threads this pool runs.
    pub fn max_threads(&self) -> usize {
        self.shared.max_threads
    }

    /// Queue `job`; its result comes through the returned future. The job
    /// runs even if the future is dropped (its result is then discarded).
    pub fn run<T, F>(&self, job: F) -> PoolTask<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (sender, receiver) = oneshot::channel();
        let job: Job = Box::new(move || drop(sender.send(job())));
        let mut state = self.shared.lock();
        state.queue.push_back(job);
        if state.idle == 0 && state.threads < self.shared.max_threads {
            match self.spawn_thread() {
                Ok(()) => state.threads += 1,
                Err(e) if state.threads == 0 => {
                    tracing_less_warning(&self.shared.name, &e);
                    state.queue.pop_back();
                }
                // Another thread will get to it.
                Err(_) => {}
            }
        } else {
            self.shared.wake.notify_one();
        }
        PoolTask { receiver }
    }

    fn spawn_thread(&self) -> io::Result<()> {
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name(self.shared.name.clone())
            .spawn(move || shared.work())
            .map(drop)
    }
}

/// No logging crate in `store/`: a pool that cannot start a single thread
/// says so on stderr, and its jobs fail with [`PoolStopped`].
fn tracing_less_warning(name: &str, e: &io::Error) {
    eprintln!("{name}: cannot start a thread: {e}");
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Jobs run outside the lock, so a poisoned lock held no job.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn work(&self) {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.queue.pop_front() {
                drop(state);
                // A panicking job loses its result (the caller sees
                // PoolStopped), not the thread.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                state = self.lock();
            } else if state.closed {
                state.threads -= 1;
                return;
            } else {
                state.idle += 1;
                state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                state.idle -= 1;
            }
        }
    }
}

impl Drop for BlockingPool {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

/// The result of a job given to [`BlockingPool::run`].
#[derive(Debug)]
pub struct PoolTask<T> {
    receiver: oneshot::Receiver<T>,
}

impl<T> Future for PoolTask<T> {
    type Output = Result<T, PoolStopped>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver)
            .poll(cx)
            .map(|r| r.map_err(|_| PoolStopped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_on_at_most_its_threads() {
        let pool = BlockingPool::new("test-pool", 2);
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                pool.run(move || {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    (i, std::thread::current().name().map(str::to_owned))
                })
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            let (n, name) = task.await.unwrap();
            assert_eq!(n, i);
            assert_eq!(name.as_deref(), Some("test-pool"));
        }
        assert!(pool.shared.lock().threads <= 2);
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_pool_goes_on() {
        let pool = BlockingPool::new("test-pool", 1);
        assert!(pool.run(|| panic!("boom")).await.is_err());
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }
}
