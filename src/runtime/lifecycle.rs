//! One lifecycle for every component: each is an `async fn run(…,
//! shutdown) -> Result<()>` started under a name by [`Components`], which
//! tells them all to stop at once and joins them within a bounded grace
//! period (what it must abort, it names).

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The stop signal a component watches: raised once, when kelp stops.
#[derive(Clone, Debug)]
pub struct Shutdown(Option<watch::Receiver<bool>>);

impl Shutdown {
    /// A signal that is never raised (a component run on its own, a test).
    pub fn never() -> Self {
        Shutdown(None)
    }

    /// Resolves once the stop is asked for.
    pub async fn requested(&self) {
        match &self.0 {
            // A dropped sender means nobody can raise it any more: stop too.
            Some(signal) => {
                let _ = signal.clone().wait_for(|stop| *stop).await;
            }
            None => std::future::pending().await,
        }
    }

    /// Whether the stop has been asked for.
    pub fn is_requested(&self) -> bool {
        self.0.as_ref().is_some_and(|signal| *signal.borrow())
    }

    /// Runs `work` until it ends or the stop is asked for (then `work` is
    /// dropped at its next await): its output, or `None` once stopped.
    pub async fn until<F: Future>(&self, work: F) -> Option<F::Output> {
        tokio::select! {
            out = work => Some(out),
            _ = self.requested() => None,
        }
    }
}

/// Components started together and stopped together.
pub struct Components {
    raise: watch::Sender<bool>,
    running: Vec<(&'static str, JoinHandle<()>)>,
}

impl Default for Components {
    fn default() -> Self {
        Self::new()
    }
}

impl Components {
    /// None yet.
    pub fn new() -> Self {
        Components {
            raise: watch::channel(false).0,
            running: Vec::new(),
        }
    }

    /// The signal the components watch.
    pub fn shutdown(&self) -> Shutdown {
        Shutdown(Some(self.raise.subscribe()))
    }

    /// Starts component `name` as `run(shutdown)`. Its end before a stop
    /// was asked for is logged as an error: components run until stopped.
    pub fn start<F, Fut>(&mut self, name: &'static str, run: F)
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let shutdown = self.shutdown();
        let work = run(shutdown.clone());
        let task = tokio::spawn(async move {
            let outcome = work.await;
            match outcome {
                Err(e) => {
                    tracing::error!(component = name, err = %format!("{e:#}"), "component failed")
                }
                Ok(()) if !shutdown.is_requested() => {
                    tracing::error!(component = name, "component ended before kelp stopped")
                }
                Ok(()) => tracing::debug!(component = name, "component stopped"),
            }
        });
        self.running.push((name, task));
    }

    /// Asks every component to stop and waits for them, `grace` at most
    /// for all together; aborts those still running then and returns
    /// their names.
    pub async fn stop(self, grace: Duration) -> Vec<&'static str> {
        let _ = self.raise.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        let mut aborted = Vec::new();
        for (name, mut task) in self.running {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                tracing::warn!(
                    component = name,
                    "component did not stop within its grace period"
                );
                aborted.push(name);
            }
        }
        aborted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn components_stop_together_and_the_slow_are_named() {
        let mut components = Components::new();
        components.start("prompt", |shutdown| async move {
            shutdown.requested().await;
            Ok(())
        });
        components.start("stuck", |_| async move {
            std::future::pending::<()>().await;
            Ok(())
        });
        let looping = components.shutdown();
        components.start("looping", |shutdown| async move {
            while shutdown
                .until(tokio::time::sleep(Duration::from_millis(5)))
                .await
                .is_some()
            {}
            Ok(())
        });
        assert!(!looping.is_requested());
        let aborted = components.stop(Duration::from_millis(200)).await;
        assert_eq!(aborted, ["stuck"]);
        assert!(looping.is_requested());
    }

    #[tokio::test]
    async fn a_signal_never_raised_stays_unraised() {
        let shutdown = Shutdown::never();
        assert!(!shutdown.is_requested());
        let ran = shutdown.until(async { 7 }).await;
        assert_eq!(ran, Some(7));
    }
}
