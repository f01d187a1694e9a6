//! The future an append or checkpoint returns.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::{CommitInfo, StoreError};

/// Resolves once the operation is durable (after the sync that covers it), or with the
/// error that kept it from becoming durable.
///
/// Dropping a `Commit` does not cancel the operation; it only gives up on hearing about it.
#[must_use = "an operation is durable only once its Commit resolves"]
#[derive(Debug)]
pub struct Commit {
    reply: oneshot::Receiver<Result<CommitInfo, StoreError>>,
}

impl Commit {
    /// A commit whose outcome the writer will send on the other end of `reply`.
    pub(crate) fn pending(reply: oneshot::Receiver<Result<CommitInfo, StoreError>>) -> Self {
        Self { reply }
    }

    /// A commit that is already decided, e.g. refused before reaching the writer.
    pub(crate) fn ready(result: Result<CommitInfo, StoreError>) -> Self {
        let (sender, reply) = oneshot::channel();
        // The receiver is alive right here, so the send cannot fail.
        let _ = sender.send(result);
        Self { reply }
    }
}

impl Future for Commit {
    type Output = Result<CommitInfo, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // A dropped sender means the writer thread is gone without answering.
        Pin::new(&mut self.reply)
            .poll(cx)
            .map(|outcome| outcome.unwrap_or(Err(StoreError::Closed)))
    }
}
