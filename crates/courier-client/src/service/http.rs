//! PLACEHOLDER: the HTTPS service transport (being written).

use std::sync::Arc;
use std::time::Duration;

use super::{PurgeResult, SendReceipt, ServiceConfig};
use crate::{ClientError, FeedbackBatch, Message, Outcome};

/// The service API over HTTPS.
#[derive(Debug)]
pub(crate) struct HttpService {
    config: Arc<ServiceConfig>,
}

fn unwritten() -> ClientError {
    ClientError::Protocol("HTTPS service transport not written yet".into())
}

impl HttpService {
    /// A client for the hub in `config`.
    pub(crate) fn new(config: Arc<ServiceConfig>) -> Result<Self, ClientError> {
        Ok(Self { config })
    }

    /// Sends one message.
    pub(crate) async fn send(
        &self,
        device_id: &str,
        message: &Message,
    ) -> Result<SendReceipt, ClientError> {
        let _ = (device_id, message, &self.config);
        Err(unwritten())
    }

    /// Long-polls for one feedback batch.
    pub(crate) async fn receive_feedback(
        &self,
        wait: Duration,
    ) -> Result<Option<FeedbackBatch>, ClientError> {
        let _ = wait;
        Err(unwritten())
    }

    /// Completes or abandons a feedback batch.
    pub(crate) async fn settle_feedback(
        &self,
        batch: &FeedbackBatch,
        outcome: Outcome,
    ) -> Result<(), ClientError> {
        let _ = (batch, outcome);
        Err(unwritten())
    }

    /// Purges a device's queue.
    pub(crate) async fn purge(&self, device_id: &str) -> Result<PurgeResult, ClientError> {
        let _ = device_id;
        Err(unwritten())
    }
}
