//! PLACEHOLDER: the AMQP service transport (being written).

use std::sync::Arc;
use std::time::Duration;

use super::{SendReceipt, ServiceConfig};
use crate::{ClientError, FeedbackBatch, Message, Outcome};

fn unwritten() -> ClientError {
    ClientError::Protocol("AMQP service transport not written yet".into())
}

/// The service's AMQP connection, opened on first use.
pub(crate) struct AmqpService {
    config: Arc<ServiceConfig>,
    websocket: bool,
}

impl AmqpService {
    /// A service connection for `config`; nothing connects yet.
    pub(crate) fn new(config: Arc<ServiceConfig>, websocket: bool) -> Self {
        Self { config, websocket }
    }

    /// Sends one message.
    pub(crate) async fn send(
        &self,
        device_id: &str,
        message: &Message,
    ) -> Result<SendReceipt, ClientError> {
        let _ = (device_id, message, &self.config, self.websocket);
        Err(unwritten())
    }

    /// Opens the feedback receiver link.
    pub(crate) async fn feedback(&self) -> Result<AmqpFeedback, ClientError> {
        Err(unwritten())
    }

    /// Closes the connection.
    pub(crate) async fn close(&self) {}
}

/// The feedback receiver link.
pub(crate) struct AmqpFeedback;

impl AmqpFeedback {
    /// Waits for one batch.
    pub(crate) async fn receive(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<FeedbackBatch>, ClientError> {
        let _ = timeout;
        Err(unwritten())
    }

    /// Settles one batch.
    pub(crate) async fn settle(
        &mut self,
        batch: &FeedbackBatch,
        outcome: Outcome,
    ) -> Result<(), ClientError> {
        let _ = (batch, outcome);
        Err(unwritten())
    }

    /// Closes the link.
    pub(crate) async fn close(self) {}
}
