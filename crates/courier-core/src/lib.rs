//! Courier's domain: C2D messages, the per-device locked queue, delivery
//! feedback, limits and the registry model, as Azure IoT Hub defines them.
//!
//! This crate decides every message's fate and nothing else. It must not do
//! I/O: no files, no sockets, no tokio, no reading of the clock (callers pass
//! `now`), no randomness (callers pass lock tokens and generated keys). State
//! changes only through events ([`HubState::apply`]), so the store can persist
//! the events and a restart can replay them into the same state.

pub mod error;
pub mod feedback;
pub mod hub;
pub mod ids;
pub mod limits;
pub mod message;
pub mod queue;
pub mod registry;
pub mod time;

pub use error::{ErrorCode, HubError};
pub use feedback::{FeedbackBatch, FeedbackRecord};
pub use hub::{Delivery, DeviceEntry, FeedbackDelivery, HubEvent, HubState, HubStats, SendReceipt};
pub use ids::{DeviceId, IdError, LockToken, SequenceNumber};
pub use limits::{DeliveryCountMode, FeedbackSettings, HubSettings, LimitOverrides, QueueLimits};
pub use message::{devicebound_address, AckMode, C2dMessage, MessageProperties};
pub use queue::{LockedQueue, Outcome, QueueEvent};
pub use registry::{
    Authentication, AuthenticationType, Device, DeviceSpec, DeviceStatus, FreshIdentity, IfMatch,
    SymmetricKey, X509Thumbprint,
};
pub use time::{Clock, Timestamp};
