//! The script workers: long-lived OS threads that run scripts, started lazily up to a
//! bound and parked on a condition variable while there is nothing to run.
//!
//! Why not one thread per run: starting a thread (`clone`, `mmap` of its stack, the first
//! touches of that stack) costs far more than running a short script. Why not tokio's
//! blocking pool: its threads' stacks are small and fixed, while Rhai walks nested values
//! recursively and a stack overflow aborts the whole process. So each worker is created
//! once with the stack the deepest value the instance ceiling allows needs (a script's own
//! limits can only be lower), and is handed one run after another.
//!
//! A job runs in two steps: the work itself, then a completion (deliver the result, free
//! the execution slot) that runs only after the worker has counted itself free again. The
//! order matters: whoever is woken by the completion may submit the next job at once, and
//! must find a free worker rather than start another thread.
//!
//! Idle cost: a parked worker sleeps in the kernel until a job or its retirement time
//! arrives; nothing polls. A worker idle for [`WORKER_IDLE_RETIREMENT`] exits, which
//! gives back the stack pages a deep run touched; the next burst starts workers again.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How long a worker waits for work before it exits.
pub const WORKER_IDLE_RETIREMENT: Duration = Duration::from_secs(60);

/// What runs after a job's work, once its worker counts as free again.
pub(crate) type Completion = Box<dyn FnOnce() + Send + 'static>;

/// Work handed to a worker: does the work and returns its completion. Neither step should
/// unwind (a panic is caught and dropped here, but the job should report its own failure).
pub(crate) type Job = Box<dyn FnOnce() -> Completion + Send + 'static>;

/// No worker could be started for a job and none is running to take it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not start a script thread with {stack_mib} MiB of stack: {cause}")]
pub(crate) struct SpawnError {
    stack_mib: usize,
    cause: String,
}

/// A bounded set of script worker threads fed through one queue. Clones share the workers.
#[derive(Debug, Clone)]
pub(crate) struct WorkerPool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    work_available: Condvar,
    /// Workers inside a job's work. Kept outside the lock so a worker can count itself
    /// free between the work and the completion without taking the lock twice.
    busy: AtomicUsize,
    max_workers: usize,
    stack_size: usize,
    idle_retirement: Duration,
}

struct State {
    queue: VecDeque<Job>,
    /// Workers alive (busy, between jobs, or parked).
    workers: usize,
    /// Workers parked on the condition variable.
    parked: usize,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("queued", &self.queue.len())
            .field("workers", &self.workers)
            .field("parked", &self.parked)
            .finish()
    }
}

impl WorkerPool {
    /// A pool of at most `max_workers` threads (at least one) with `stack_size` bytes of
    /// stack each. No thread starts until there is work.
    pub(crate) fn new(max_workers: usize, stack_size: usize) -> Self {
        Self::with_idle_retirement(max_workers, stack_size, WORKER_IDLE_RETIREMENT)
    }

    fn with_idle_retirement(max_workers: usize, stack_size: usize, idle: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    workers: 0,
                    parked: 0,
                }),
                work_available: Condvar::new(),
                busy: AtomicUsize::new(0),
                max_workers: max_workers.max(1),
                stack_size,
                idle_retirement: idle,
            }),
        }
    }

    /// Worker threads alive now.
    pub(crate) fn workers(&self) -> usize {
        self.shared.lock().workers
    }

    /// Queues `job` and makes sure a worker will take it: one that is free already (a
    /// worker between jobs looks at the queue before it parks), a parked one woken, or a
    /// new one started while the queue holds more jobs than free workers and the bound
    /// allows. Callers keep the number of outstanding jobs within the bound (the
    /// execution gate does), so a queued job never waits behind another for a worker.
    pub(crate) fn submit(&self, job: Job) -> Result<(), SpawnError> {
        let mut state = self.shared.lock();
        state.queue.push_back(job);
        let busy = self.shared.busy.load(Ordering::Acquire);
        let free = state.workers.saturating_sub(busy);
        let start_worker = state.queue.len() > free && state.workers < self.shared.max_workers;
        if start_worker {
            state.workers += 1;
        } else if state.parked > 0 && state.queue.len() > free.saturating_sub(state.parked) {
            // The free workers that are not parked will look at the queue anyway; wake a
            // parked one only for what they cannot cover.
            self.shared.work_available.notify_one();
        }
        drop(state);
        if start_worker {
            self.start_worker()?;
        }
        Ok(())
    }

    fn start_worker(&self) -> Result<(), SpawnError> {
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("picloud-script".to_owned())
            .stack_size(self.shared.stack_size)
            .spawn(move || shared.work());
        let Err(err) = spawned else {
            return Ok(());
        };
        let mut state = self.shared.lock();
        state.workers -= 1;
        // Most likely the address space for the stack was refused (a strict overcommit
        // policy or a `ulimit -v`); lower array/map ceilings shrink it.
        let error = SpawnError {
            stack_mib: self.shared.stack_size >> 20,
            cause: err.to_string(),
        };
        if state.workers == 0 {
            // Nobody would ever take the queued work: fail it now rather than leave its
            // callers waiting for the backstop. (Dropping a job drops its result sender,
            // which its caller sees as an ended run.)
            let orphaned = std::mem::take(&mut state.queue);
            drop(state);
            drop(orphaned);
            return Err(error);
        }
        tracing::warn!(error = %error, "could not start another script worker; queued runs wait for a busy one");
        Ok(())
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code that can panic runs under this lock; recover rather than propagate.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A worker's life: take jobs until none has come for the retirement time.
    fn work(&self) {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.queue.pop_front() {
                self.busy.fetch_add(1, Ordering::AcqRel);
                drop(state);
                // Jobs report their own panics; catching here only keeps the worker (and
                // the pool's count of workers) alive if one slips through.
                let completion = std::panic::catch_unwind(AssertUnwindSafe(job));
                self.busy.fetch_sub(1, Ordering::AcqRel);
                if let Ok(completion) = completion {
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(completion));
                }
                state = self.lock();
                continue;
            }
            state.parked += 1;
            let (woken, wait) = self
                .work_available
                .wait_timeout(state, self.idle_retirement)
                .unwrap_or_else(PoisonError::into_inner);
            state = woken;
            state.parked -= 1;
            if wait.timed_out() && state.queue.is_empty() {
                state.workers -= 1;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;

    const STACK: usize = 256 * 1024;
    const WAIT: Duration = Duration::from_secs(10);

    fn wait_until(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// A job whose work is `work` and whose completion sends what it returned.
    fn job<T: Send + 'static>(
        done: &mpsc::Sender<T>,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Job {
        let done = done.clone();
        Box::new(move || {
            let value = work();
            Box::new(move || done.send(value).unwrap())
        })
    }

    #[test]
    fn workers_start_on_demand_and_are_reused() {
        let pool = WorkerPool::new(4, STACK);
        assert_eq!(pool.workers(), 0, "nothing starts before there is work");
        let (done, finished) = mpsc::channel();
        for i in 0..200 {
            pool.submit(job(&done, move || i)).unwrap();
            assert_eq!(finished.recv_timeout(WAIT).unwrap(), i);
        }
        assert_eq!(
            pool.workers(),
            1,
            "one run at a time needs one worker, however quickly the next follows"
        );
    }

    #[test]
    fn concurrent_jobs_get_their_own_workers_up_to_the_bound() {
        let pool = WorkerPool::new(3, STACK);
        let (release, released) = mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let (started, starts) = mpsc::channel();
        let (done, finished) = mpsc::channel();
        for _ in 0..3 {
            let released = Arc::clone(&released);
            let started = started.clone();
            pool.submit(job(&done, move || {
                started.send(()).unwrap();
                let _ = released.lock().unwrap().recv();
            }))
            .unwrap();
        }
        for _ in 0..3 {
            starts
                .recv_timeout(WAIT)
                .expect("three blocked jobs all run at once");
        }
        assert_eq!(pool.workers(), 3);
        for _ in 0..3 {
            release.send(()).unwrap();
            finished.recv_timeout(WAIT).unwrap();
        }
    }

    #[test]
    fn a_panicking_job_does_not_take_its_worker_down() {
        let pool = WorkerPool::new(1, STACK);
        pool.submit(Box::new(|| panic!("job bug"))).unwrap();
        let (done, finished) = mpsc::channel();
        pool.submit(job(&done, || "after")).unwrap();
        assert_eq!(finished.recv_timeout(WAIT).unwrap(), "after");
        assert_eq!(pool.workers(), 1);
    }

    #[test]
    fn idle_workers_retire() {
        let pool = WorkerPool::with_idle_retirement(2, STACK, Duration::from_millis(20));
        let (done, finished) = mpsc::channel();
        pool.submit(job(&done, || ())).unwrap();
        finished.recv_timeout(WAIT).unwrap();
        wait_until("the idle worker exits", || pool.workers() == 0);

        pool.submit(job(&done, || ())).unwrap();
        finished
            .recv_timeout(WAIT)
            .expect("a retired pool starts a worker again");
    }

    #[test]
    fn a_refused_stack_fails_the_job_instead_of_queueing_it_forever() {
        // More address space than any machine can map for one stack.
        let pool = WorkerPool::new(1, 1 << 60);
        let (done, finished) = mpsc::channel::<()>();
        let err = pool.submit(job(&done, || ())).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("could not start a script thread with"),
            "{err}"
        );
        assert_eq!(pool.workers(), 0);
        drop(done);
        assert_eq!(
            finished.recv_timeout(WAIT),
            Err(mpsc::RecvTimeoutError::Disconnected),
            "the job was dropped, not run"
        );
    }
}
