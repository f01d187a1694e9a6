//! The `$cbs` node (wire spec §3.3): put-token requests arrive on the
//! client's request link; each is settled first (uAMQP fails otherwise) and
//! then answered on the client's reply link with `correlation-id` = the
//! request's `message-id` (same AMQP type) and `status-code` as an int.
//! Answers wait in a small queue until the reply link is attached: Python
//! sends its put-token before that attach completes.

use std::sync::Arc;

use courier_core::Clock as _;
use courier_hub::SystemClock;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::types::messaging::{AmqpValue, ApplicationProperties, Body, Message, Properties};
use fe2o3_amqp::types::primitives::{OrderedMap, SimpleValue, Value};
use fe2o3_amqp::Sendable;
use tokio::sync::watch;
use tracing::debug;

use super::stopping;
use crate::connection::{CbsReply, Conn};
use crate::identity::verify_token;
use crate::metrics::Counters;

pub(super) async fn requests(conn: Arc<Conn>, mut link: Receiver, mut stop: watch::Receiver<bool>) {
    loop {
        let delivery = tokio::select! {
            d = link.recv::<Body<Value>>() => d,
            () = stopping(&mut stop) => break,
        };
        let delivery = match delivery {
            Ok(d) => d,
            Err(e) => {
                debug!(error = %e, "CBS request link ended");
                return;
            }
        };
        let (status, description) = put_token(&conn, delivery.message());
        if link.accept(&delivery).await.is_err() {
            return;
        }
        let reply = answer(delivery.message(), status, description);
        if conn.cbs_replies.send(reply).await.is_err() {
            return;
        }
    }
    let _ = link.close().await;
}

pub(super) async fn replies(conn: Arc<Conn>, mut link: Sender, mut stop: watch::Receiver<bool>) {
    let taken = conn
        .cbs_reply_rx
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    // A second reply link while one is attached gets nothing; SDKs open one.
    let Some(mut rx) = taken else {
        let _ = tokio::select! {
            e = link.on_detach() => Err(e),
            () = stopping(&mut stop) => Ok(()),
        };
        return;
    };
    loop {
        tokio::select! {
            reply = rx.recv() => {
                let Some(reply) = reply else { break };
                let sendable = Sendable::builder().message(reply).settled(true).build();
                // Answers are sent settled; the delivery's outcome is not awaited.
                if link.send_batchable(sendable).await.is_err() {
                    break;
                }
            }
            _ = link.on_detach() => break,
            () = stopping(&mut stop) => break,
        }
    }
    // Give the queue back so that a reattached reply link can serve it.
    *conn.cbs_reply_rx.lock().unwrap_or_else(|p| p.into_inner()) = Some(rx);
    let _ = link.close().await;
}

/// Verifies a put-token request and records its identity: (status, description).
fn put_token(conn: &Conn, request: &Message<Body<Value>>) -> (i32, String) {
    let prop = |key: &str| {
        request
            .application_properties
            .as_ref()
            .and_then(|a| a.0.get(key))
            .and_then(|v| match v {
                SimpleValue::String(s) => Some(s.as_str()),
                SimpleValue::Symbol(s) => Some(s.0.as_str()),
                _ => None,
            })
    };
    if prop("operation") != Some("put-token") {
        return (400, "only the put-token operation is supported".into());
    }
    let sas = prop("type").is_some_and(|t| {
        t.eq_ignore_ascii_case("servicebus.windows.net:sastoken")
            || t.eq_ignore_ascii_case("azure-devices.net:sastoken")
    });
    if !sas {
        return (
            400,
            "type must be servicebus.windows.net:sastoken or azure-devices.net:sastoken".into(),
        );
    }
    let Body::Value(AmqpValue(Value::String(token))) = &request.body else {
        return (
            400,
            "the body must be the SAS token as an amqp-value string".into(),
        );
    };
    // The identity comes from the token's `sr`, never from `name` (§3.3).
    match verify_token(&conn.shared.config, token, SystemClock.now()) {
        Ok((principal, expires)) => {
            debug!(remote = %conn.info.remote, ?principal, "CBS token accepted");
            conn.identities.grant(principal, expires);
            Counters::add(&conn.shared.counters.cbs_tokens_accepted);
            (200, "OK".into())
        }
        Err(e) => (401, e.to_string()),
    }
}

fn answer(request: &Message<Body<Value>>, status: i32, description: String) -> CbsReply {
    let request_props = request.properties.as_ref();
    let properties = Properties {
        correlation_id: request_props.and_then(|p| p.message_id.clone()),
        to: request_props.and_then(|p| p.reply_to.clone()),
        ..Properties::default()
    };
    let mut app = OrderedMap::new();
    app.insert("status-code".to_owned(), SimpleValue::Int(status));
    app.insert(
        "status-description".to_owned(),
        SimpleValue::String(description),
    );
    Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: Some(properties),
        application_properties: Some(ApplicationProperties(app)),
        body: Body::Value(AmqpValue(Value::Null)),
        footer: None,
    }
}
