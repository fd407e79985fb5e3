//! Cancellation, passed in: the binary owns the signal handlers and cancels
//! with the reason; procedures watch for it and stop cleanly (resuming a
//! paused cluster first). Libraries never install handlers themselves.

use std::sync::Arc;

use tokio::sync::watch;

/// A cancellation signal with its reason (`SIGINT`, `SIGTERM`, ...). Clones
/// share one signal; the first reason given wins.
#[derive(Debug, Clone)]
pub struct Cancel(Arc<watch::Sender<Option<&'static str>>>);

impl Default for Cancel {
    fn default() -> Self {
        Self::new()
    }
}

impl Cancel {
    pub fn new() -> Self {
        Self(Arc::new(watch::Sender::new(None)))
    }

    /// Cancels, for `reason`; later calls change nothing.
    pub fn cancel(&self, reason: &'static str) {
        self.0.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// The reason, once cancelled.
    pub fn reason(&self) -> Option<&'static str> {
        *self.0.borrow()
    }

    /// Waits until cancelled; returns the reason.
    pub async fn cancelled(&self) -> &'static str {
        let mut rx = self.0.subscribe();
        loop {
            if let Some(r) = *rx.borrow_and_update() {
                return r;
            }
            // The sender lives in `self`, so `changed` cannot fail while we wait.
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_reason_wins_and_every_waiter_sees_it() {
        let c = Cancel::new();
        assert_eq!(c.reason(), None);
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.cancelled().await }
        });
        tokio::task::yield_now().await;
        c.cancel("SIGHUP");
        c.cancel("SIGINT");
        assert_eq!(waiter.await.unwrap(), "SIGHUP");
        assert_eq!(c.cancelled().await, "SIGHUP");
    }
}
