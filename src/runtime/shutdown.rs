//! Graceful stop: a signal thread flips one process-wide flag; each shard notices it and
//! wakes its own sessions, which then stop in order: idle ones get 421 4.3.2 at once,
//! ones inside message content finish it (bounded by `timeouts.shutdown_grace`).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_listener::Event;

/// The process-wide stop flag, set from the signal thread, with the wake-up each shard
/// waits on (a wake from another thread is one eventfd write: no shard polls the flag).
#[derive(Clone, Debug, Default)]
pub struct StopFlag(Arc<Raised>);

#[derive(Debug, Default)]
struct Raised {
    flag: AtomicBool,
    event: Event,
}

impl StopFlag {
    /// Asks every shard to stop.
    pub fn raise(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
        self.0.event.notify(usize::MAX);
    }

    /// Whether a stop was asked for.
    pub fn is_raised(&self) -> bool {
        self.0.flag.load(Ordering::SeqCst)
    }

    /// Resolves once the flag is raised.
    pub async fn raised(&self) {
        loop {
            if self.is_raised() {
                return;
            }
            let listener = self.0.event.listen();
            if self.is_raised() {
                return;
            }
            listener.await;
        }
    }
}

/// One shard's view of the stop: a flag, the deadline of the grace period, and a wake-up
/// for everything waiting on it.
#[derive(Debug, Default)]
pub struct ShardStop {
    stopping: Cell<bool>,
    /// When the stop began plus `timeouts.shutdown_grace`: sessions in DATA and
    /// deliveries in a transaction have until then.
    deadline: Cell<Option<Instant>>,
    event: Event,
}

impl ShardStop {
    /// True once the shard is stopping.
    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Resolves when the shard starts stopping.
    pub async fn wait(&self) {
        loop {
            if self.stopping.get() {
                return;
            }
            let listener = self.event.listen();
            if self.stopping.get() {
                return;
            }
            listener.await;
        }
    }

    /// The end of the grace period, once the shard is stopping.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.get()
    }

    /// Resolves at the end of the grace period (never before the stop begins).
    pub async fn deadline_passed(&self) {
        self.wait().await;
        let deadline = self.deadline.get().unwrap_or_else(Instant::now);
        glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
    }

    /// Watches the process-wide flag; when it is raised, starts the grace period of
    /// `grace` and wakes every waiter.
    pub async fn watch(&self, flag: StopFlag, grace: Duration) {
        flag.raised().await;
        self.begin(grace);
    }

    /// Begins the stop now, with `grace` for work under way.
    pub fn begin(&self, grace: Duration) {
        self.deadline.set(Some(Instant::now() + grace));
        self.stopping.set(true);
        self.event.notify(usize::MAX);
    }
}

/// Starts the thread that turns SIGTERM and SIGINT into a raised [`StopFlag`], and tells
/// systemd we are stopping. SIGHUP calls `reload` (on this thread: shards never wait for
/// it) and tells systemd about it.
pub fn spawn_signal_thread(
    flag: StopFlag,
    reload: impl Fn() + Send + 'static,
) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                    reload();
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                    continue;
                }
                tracing::info!(
                    signal,
                    "stopping: no new sessions; sessions in DATA may finish"
                );
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
                flag.raise();
            }
        })?;
    Ok(())
}
