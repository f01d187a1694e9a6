//! `courier c2d …`: send (as the service), receive (as the device), purge;
//! all through the Rust SDK (`courier-client`).

use std::io::Read as _;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use courier_client::{
    DeviceClient, Expiry, FeedbackStatus, Message, Outcome as Settle, ServiceClient,
};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{interrupted, printer, Outcome};
use crate::cli::{AckArg, C2dCommand, ClientArgs, ReceiveArgs, SendArgs};
use crate::output::{self, Printer};
use crate::parse::BodySource;
use crate::target::Target;

/// Runs a C2D command.
pub(super) async fn run(args: &ClientArgs, command: C2dCommand) -> anyhow::Result<Outcome> {
    match command {
        C2dCommand::Send(send_args) => send(args, send_args).await,
        C2dCommand::Receive(receive_args) => receive(args, &receive_args).await,
        C2dCommand::Purge { device } => {
            let service = Target::from_args(args, None)?.service_client()?;
            let result = service
                .purge(&device)
                .await
                .with_context(|| format!("cannot purge the queue of device '{device}'"))?;
            printer(args).emit(&result, || {
                format!(
                    "purged {} message(s) from device '{device}'",
                    result.total_messages_purged
                )
            })?;
            Ok(Outcome::Success)
        }
    }
}

async fn send(args: &ClientArgs, send: SendArgs) -> anyhow::Result<Outcome> {
    let ack = send.ack.unwrap_or(AckArg::None).into();
    if send.wait_feedback && ack == courier_client::Ack::None {
        anyhow::bail!("--wait-feedback needs --ack positive, negative or full: with no ack the hub sends no feedback");
    }
    let expiry = match (send.ttl, send.expiry) {
        (Some(ttl), _) => Some(Expiry::After(ttl)),
        (None, Some(at)) => {
            let at = OffsetDateTime::parse(&at, &Rfc3339).with_context(|| {
                format!("--expiry '{at}' is not an RFC 3339 time such as 2030-01-01T00:00:00Z")
            })?;
            Some(Expiry::At(SystemTime::from(at)))
        }
        (None, None) => None,
    };
    // Feedback is matched by message id, so a waited-for message must have one.
    let message_id = send
        .message_id
        .or_else(|| send.wait_feedback.then(|| uuid::Uuid::new_v4().to_string()));
    let mut message = Message::new(read_body(&send.body)?).ack(ack);
    message.message_id = message_id.clone();
    message.correlation_id = send.correlation_id;
    message.user_id = send.user_id;
    message.content_type = send.content_type;
    message.content_encoding = send.content_encoding;
    message.expiry = expiry;
    message.properties = send.properties;

    let service = Target::from_args(args, None)?.service_client()?;
    // Open the feedback receiver before sending, so that fast feedback is seen.
    let feedback = match message_id.as_deref().filter(|_| send.wait_feedback) {
        Some(_) => Some(
            service
                .feedback_receiver()
                .await
                .context("cannot receive feedback")?,
        ),
        None => None,
    };
    let device = &send.device;
    let receipt = service
        .send(device, &message, Duration::from_secs(60))
        .await
        .with_context(|| format!("cannot send a message to device '{device}'"))?;
    let printer = printer(args);
    printer.emit(&receipt, || {
        format!(
            "sent to '{device}': sequence number {}, message id {}",
            receipt
                .sequence_number
                .map_or_else(|| "?".to_owned(), |n| n.to_string()),
            receipt.message_id.as_deref().unwrap_or("(none)")
        )
    })?;
    match (message_id, feedback) {
        (Some(id), Some(feedback)) => {
            wait_for_feedback(&service, feedback, &printer, &id, send.timeout).await
        }
        _ => Ok(Outcome::Success),
    }
}

/// Reads feedback batches until one holds a record for `message_id`, completes
/// that batch and leaves the others locked (they return when the lock expires).
async fn wait_for_feedback(
    service: &ServiceClient,
    mut feedback: courier_client::FeedbackReceiver,
    printer: &Printer,
    message_id: &str,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Some(batch) = feedback
            .receive(remaining)
            .await
            .context("cannot receive feedback")?
        else {
            return timed_out(printer, message_id, timeout);
        };
        let Some(record) = batch
            .records
            .iter()
            .find(|r| r.original_message_id == message_id)
        else {
            // Batches for other messages keep coming while any are unlocked, so
            // the deadline is checked here as well as in the long poll.
            if Instant::now() >= deadline {
                return timed_out(printer, message_id, timeout);
            }
            continue;
        };
        feedback
            .complete(&batch)
            .await
            .context("cannot complete the feedback batch")?;
        printer.emit(
            &json!({ "messageId": message_id, "feedback": record }),
            || {
                format!(
                    "feedback: {} ({})",
                    record.status_code.as_str(),
                    record.description
                )
            },
        )?;
        service.close().await;
        return Ok(if record.status_code == FeedbackStatus::Success {
            Outcome::Success
        } else {
            Outcome::NegativeFeedback
        });
    }
}

fn timed_out(printer: &Printer, message_id: &str, timeout: Duration) -> anyhow::Result<Outcome> {
    printer.emit(
        &json!({ "messageId": message_id, "feedback": null }),
        || {
            format!(
                "no feedback for message {message_id} within {}s",
                timeout.as_secs()
            )
        },
    )?;
    Ok(Outcome::FeedbackTimedOut)
}

fn read_body(source: &BodySource) -> anyhow::Result<Vec<u8>> {
    match source {
        BodySource::Literal(text) => Ok(text.as_bytes().to_vec()),
        BodySource::File(path) => std::fs::read(path)
            .with_context(|| format!("cannot read the body file {}", path.display())),
        BodySource::Stdin => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .context("cannot read the body from standard input")?;
            Ok(body)
        }
    }
}

async fn receive(args: &ClientArgs, receive: &ReceiveArgs) -> anyhow::Result<Outcome> {
    let device_id = receive.device.as_str();
    let target = Target::from_args(args, receive.device_connection_string.as_deref())?;
    let transport = receive.transport.into();
    let device = target.device_client(device_id, transport)?;
    let printer = printer(args);
    let limit = receive.count.or((!receive.follow).then_some(1));
    let settlement = receive.settlement();

    let receiving = async {
        let mut received = 0_u64;
        while limit.is_none_or(|limit| received < limit) {
            let message = device.receive(receive.wait).await.with_context(|| {
                format!("cannot receive as device '{device_id}' over {transport}")
            })?;
            let Some(message) = message else {
                if receive.follow {
                    continue;
                }
                break;
            };
            received += 1;
            // Print before settling: if the output is lost (a closed pipe), the
            // message stays unsettled and is delivered again.
            printer.emit(&output::message_json(&message, settlement.as_str()), || {
                output::message_text(&message)
            })?;
            settle(&device, &message, settlement).await?;
            printer.note(past_tense(settlement))?;
        }
        if received == 0 {
            printer.note("no message")?;
        }
        anyhow::Ok(Outcome::Success)
    };
    let outcome = tokio::select! {
        outcome = receiving => outcome,
        () = interrupted(receive.follow) => Ok(Outcome::Success),
    };
    device.close().await;
    outcome
}

async fn settle(
    device: &DeviceClient,
    message: &courier_client::ReceivedMessage,
    settlement: Settle,
) -> anyhow::Result<()> {
    device.settle(message, settlement).await.with_context(|| {
        format!(
            "cannot {} the message{}",
            settlement.as_str(),
            message
                .message_id
                .as_deref()
                .map(|id| format!(" with id {id}"))
                .unwrap_or_default()
        )
    })
}

fn past_tense(settlement: Settle) -> &'static str {
    match settlement {
        Settle::Complete => "completed",
        Settle::Reject => "rejected",
        Settle::Abandon => "abandoned",
    }
}
