//! Counted tasks: work a stopping shard must wait for (sessions, delivery connections,
//! settles), counted by a guard that is released however the task ends, so that no count
//! is kept by hand in two places and a drain is a wait for an event, not a poll.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::time::Instant;

use event_listener::Event;
use futures_lite::future;

/// How many tasks of one kind are alive on this shard, and a wake-up for when none is.
#[derive(Debug, Default)]
pub struct TaskCount {
    alive: Cell<usize>,
    idle: Event,
}

/// One counted task: counted from [`TaskCount::enter`] until this is dropped.
#[derive(Debug)]
pub struct TaskGuard(Rc<TaskCount>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let left = self.0.alive.get() - 1;
        self.0.alive.set(left);
        if left == 0 {
            self.0.idle.notify(usize::MAX);
        }
    }
}

impl TaskCount {
    /// A counter with no task.
    pub fn new() -> Rc<TaskCount> {
        Rc::new(TaskCount::default())
    }

    /// Counts one more task until the guard is dropped.
    pub fn enter(self: &Rc<Self>) -> TaskGuard {
        self.alive.set(self.alive.get() + 1);
        TaskGuard(self.clone())
    }

    /// Runs `work` in a task of its own on this executor, counted while it runs.
    pub fn spawn(self: &Rc<Self>, work: impl Future<Output = ()> + 'static) {
        let guard = self.enter();
        glommio::spawn_local(async move {
            work.await;
            drop(guard);
        })
        .detach();
    }

    /// Tasks alive now.
    pub fn alive(&self) -> usize {
        self.alive.get()
    }

    /// Resolves when no task is alive, or at `deadline`, whichever comes first; returns
    /// whether the count reached zero.
    pub async fn drained(&self, deadline: Instant) -> bool {
        let idle = async {
            loop {
                if self.alive.get() == 0 {
                    return true;
                }
                let listener = self.idle.listen();
                if self.alive.get() == 0 {
                    return true;
                }
                listener.await;
            }
        };
        let late = async {
            glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
            self.alive.get() == 0
        };
        future::or(idle, late).await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    /// Runs `f` to completion on a glommio executor of its own: for the unit tests of
    /// everything that awaits on a shard.
    pub fn on_executor<F: Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default()
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn a_drain_ends_when_the_last_task_ends_not_at_the_deadline() {
        on_executor(|| async {
            let tasks = TaskCount::new();
            for ms in [5, 20] {
                tasks.spawn(glommio::timer::sleep(Duration::from_millis(ms)));
            }
            assert_eq!(tasks.alive(), 2);
            let start = Instant::now();
            assert!(tasks.drained(start + Duration::from_secs(30)).await);
            assert_eq!(tasks.alive(), 0);
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "waited for the deadline"
            );
        });
    }

    #[test]
    fn a_drain_gives_up_at_the_deadline_and_says_so() {
        on_executor(|| async {
            let tasks = TaskCount::new();
            let guard = tasks.enter();
            let deadline = Instant::now() + Duration::from_millis(20);
            assert!(!tasks.drained(deadline).await);
            drop(guard);
            assert!(tasks.drained(Instant::now()).await);
        });
    }
}
