//! The hub engine: the single owner of Courier's state.
//!
//! One task owns the [`courier_core::HubState`]. Protocol heads talk to it
//! through a cloneable [`Hub`] handle over a bounded channel; the task takes
//! commands in batches, lets the core decide, appends the resulting events to
//! the [`courier_store::Store`] as one batch, and answers each caller only
//! after the store has made that batch durable (group commit: one sync covers
//! every command of the batch). At start it replays the store into memory.
//!
//! This crate decides nothing about messages (courier-core does) and parses
//! no protocol (the heads do); [`device_auth`] is the one place every head
//! authenticates devices. It does own time (the system clock), lock
//! token generation, checkpoints and the wake-ups of long-polling receivers.

mod clock;
mod codec;
pub mod device_auth;
mod engine;
mod error;
pub mod feedback_json;
mod handle;
mod presence;
mod views;

pub use clock::SystemClock;
pub use error::{Error, OpenError};
pub use handle::{DeviceInfo, Hub, HubOptions, HubTask, OpenStats};
pub use presence::{ConnectionGuard, ConnectionState};
pub use views::DeviceCredentials;
