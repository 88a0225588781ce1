//! The threads that decode and render images, at a lower CPU priority than
//! the threads that handle requests.
//!
//! A decode or a resize can keep a core busy for tens of milliseconds. On
//! threads of the same priority, a burst of uploads would take CPU time from
//! logins and page reads. These threads run [`NICE_STEPS`] nice steps below
//! their process, so the kernel gives a waiting request thread the CPU first,
//! while image work still gets every cycle left over. There is one thread per
//! CPU; work beyond that waits in order.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::oneshot;

/// How many nice steps the image threads run below their process.
pub const NICE_STEPS: i32 = 10;

/// Failure of image work that returned no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackgroundError {
    /// The work ran longer than its time limit. The thread carries on until
    /// the work ends; the decoder's own limits bound how long that can be.
    #[error("took longer than {} s", .0.as_secs())]
    TimedOut(Duration),
    #[error("panicked: {0}")]
    Panicked(String),
}

fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|index| format!("image-{index}"))
            .start_handler(|_| lower_priority())
            .build()
            .expect("the image threads start")
    })
}

/// Lowers the calling thread's priority by [`NICE_STEPS`]. On Linux the nice
/// value belongs to each thread, so the rest of the process keeps its own.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: nice(2) only changes the calling thread's scheduling
        // priority; it touches no memory of this process.
        let result = unsafe { libc::nice(NICE_STEPS) };
        if result == -1 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error().unwrap_or(0) != 0 {
                tracing::warn!(%error, "lowering an image thread's priority failed; it keeps the process's priority");
            }
        }
    }
}

/// Runs `work` on an image thread and returns its value, or
/// [`BackgroundError::TimedOut`] once it has run for `limit`. The limit is
/// counted from when a thread takes the work, not from when it was queued,
/// so a long queue in a burst does not fail work that runs quickly.
pub fn run<T, F>(limit: Duration, work: F) -> impl Future<Output = Result<T, BackgroundError>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = oneshot::channel();
    pool().spawn_fifo(move || {
        if started_tx.send(()).is_err() {
            // The caller has gone away, so the value is not needed.
            return;
        }
        let result = catch_unwind(AssertUnwindSafe(work)).map_err(|panic| {
            panic
                .downcast_ref::<&str>()
                .map(|message| message.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "without a message".to_string())
        });
        let _ = done_tx.send(result);
    });
    async move {
        // The senders are dropped without a value only if the pool drops
        // the work, which a running pool never does.
        let gone = || BackgroundError::Panicked("the image thread went away".to_string());
        started_rx.await.map_err(|_| gone())?;
        match tokio::time::timeout(limit, done_rx).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(message))) => Err(BackgroundError::Panicked(message)),
            Ok(Err(_)) => Err(gone()),
            Err(_) => Err(BackgroundError::TimedOut(limit)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value() {
        assert_eq!(run(Duration::from_secs(5), || 6 * 7).await, Ok(42));
    }

    #[tokio::test]
    async fn reports_a_panic_with_its_message() {
        let result = run(Duration::from_secs(5), || -> u32 { panic!("bad pixels") }).await;
        assert_eq!(result, Err(BackgroundError::Panicked("bad pixels".into())));
        // The pool keeps working after a panic.
        assert_eq!(run(Duration::from_secs(5), || 1).await, Ok(1));
    }

    #[tokio::test]
    async fn times_out_long_work() {
        let result = run(Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_millis(500));
        })
        .await;
        assert_eq!(
            result,
            Err(BackgroundError::TimedOut(Duration::from_millis(50)))
        );
    }

    #[tokio::test]
    async fn counts_the_limit_from_the_start_of_the_work() {
        // Fill every thread with work that runs past the next call's limit;
        // the next call waits for a thread, then runs well within it.
        let threads = pool().current_num_threads();
        let busy: Vec<_> = (0..threads)
            .map(|_| {
                run(Duration::from_secs(5), || {
                    std::thread::sleep(Duration::from_millis(300))
                })
            })
            .collect();
        assert_eq!(run(Duration::from_millis(200), || 7).await, Ok(7));
        for work in busy {
            assert_eq!(work.await, Ok(()));
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn image_threads_run_below_the_process() {
        fn own_nice() -> i32 {
            // SAFETY: getpriority(2) only reads the calling thread's nice
            // value; 0 names the calling thread on Linux.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
        }
        let outside = own_nice();
        let inside = run(Duration::from_secs(5), own_nice).await.unwrap();
        assert_eq!(inside, (outside + NICE_STEPS).min(19));
        assert_eq!(own_nice(), outside, "the caller keeps its priority");
    }
}
