//! The Rust SDK (`courier-client`) against a real `courier serve`: one
//! scenario suite run on every device transport, and the service client on
//! every service transport.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier_client::{
    Ack, ClientError, ConnectionStatus, DeviceClient, DeviceOptions, FeedbackStatus, Message,
    RetryPolicy, ServiceClient, ServiceOptions, ServiceTransport, StatusChange, StatusReason,
    Transport, X509Identity,
};

use crate::support::Hub;

/// Longest any one step may take on a busy CI machine.
const PATIENCE: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {PATIENCE:?}"))
}

/// Registers `id` and returns its connection string.
fn create_device(hub: &Hub, id: &str) -> String {
    hub.ok(&["device", "create", id]).trim().to_owned()
}

fn device_options(hub: &Hub) -> DeviceOptions {
    let ports = hub.ports();
    DeviceOptions::new()
        .ca_certificate_file(hub.ca_path())
        .unwrap()
        .mqtt_port(ports.mqtt)
        .amqp_port(ports.amqp)
        .https_port(ports.https)
        .http_poll_interval(Duration::from_millis(200))
        .operation_timeout(Duration::from_secs(20))
        .retry_policy(
            RetryPolicy::exponential()
                .initial_delay(Duration::from_millis(50))
                .max_delay(Duration::from_millis(500)),
        )
}

fn service(hub: &Hub, transport: ServiceTransport) -> ServiceClient {
    let ports = hub.ports();
    let options = ServiceOptions::new()
        .transport(transport)
        .ca_certificate_file(hub.ca_path())
        .unwrap()
        .amqp_port(ports.amqp)
        .https_port(ports.https)
        .retry_policy(
            RetryPolicy::exponential()
                .initial_delay(Duration::from_millis(50))
                .max_delay(Duration::from_millis(500)),
        );
    ServiceClient::with_options(&hub.owner_connection_string(), options).unwrap()
}

/// Every status change a client reports, in order.
fn record_statuses(client: &DeviceClient) -> Arc<Mutex<Vec<StatusChange>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    client.set_connection_status_handler(move |change| sink.lock().unwrap().push(change));
    seen
}

async fn send(service: &ServiceClient, device: &str, message: Message) {
    within("send", service.send(device, &message, PATIENCE))
        .await
        .unwrap_or_else(|e| panic!("send to {device}: {e}"));
}

/// Waits for the feedback record of `message_id` and completes its batch.
async fn feedback_for(service: &ServiceClient, message_id: &str) -> FeedbackStatus {
    let mut receiver = within("open feedback", service.feedback_receiver())
        .await
        .unwrap();
    loop {
        let batch = within("feedback", receiver.receive(PATIENCE))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no feedback for {message_id}"));
        receiver.complete(&batch).await.unwrap();
        if let Some(record) = batch
            .records
            .iter()
            .find(|r| r.original_message_id == message_id)
        {
            return record.status_code.clone();
        }
    }
}

async fn receives_with_properties_and_completes(transport: Transport) {
    let hub = Hub::start();
    let cs = create_device(&hub, "dev1");
    let device = DeviceClient::with_options(&cs, transport, device_options(&hub)).unwrap();
    within("connect", device.connect()).await.unwrap();
    assert_eq!(device.status().status, ConnectionStatus::Connected);

    let service = service(&hub, ServiceTransport::Http);
    let tricky = "a b&c=d/e%f?g#h+é✓";
    send(
        &service,
        "dev1",
        Message::new("hello")
            .message_id("m1")
            .correlation_id("c1")
            .content_type("text/plain")
            .content_encoding("utf-8")
            .property("colour", "blue")
            .property("tricky", tricky)
            .ttl(Duration::from_secs(600))
            .ack(Ack::Full),
    )
    .await;

    let message = within("receive", device.receive(PATIENCE))
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(message.body_str(), Some("hello"));
    assert_eq!(message.message_id.as_deref(), Some("m1"));
    assert_eq!(message.correlation_id.as_deref(), Some("c1"));
    assert_eq!(message.content_type.as_deref(), Some("text/plain"));
    assert_eq!(message.content_encoding.as_deref(), Some("utf-8"));
    assert_eq!(message.property("colour"), Some("blue"));
    assert_eq!(message.property("tricky"), Some(tricky));
    assert!(message.expiry.is_some(), "the sender set a TTL");

    within("complete", device.complete(&message)).await.unwrap();
    assert_eq!(feedback_for(&service, "m1").await, FeedbackStatus::Success);
    let nothing = device.receive(Duration::from_millis(500)).await.unwrap();
    assert!(
        nothing.is_none(),
        "completed, yet delivered again: {nothing:?}"
    );
    device.close().await;
    assert_eq!(device.status().status, ConnectionStatus::Disconnected);
    assert_eq!(device.status().reason, StatusReason::ClientClose);
}

async fn settles_by_the_transports_rules(transport: Transport) {
    let hub = Hub::start();
    let cs = create_device(&hub, "dev1");
    let device = DeviceClient::with_options(&cs, transport, device_options(&hub)).unwrap();
    let service = service(&hub, ServiceTransport::Http);
    send(
        &service,
        "dev1",
        Message::new("x").message_id("m1").ack(Ack::Full),
    )
    .await;
    let first = within("receive", device.receive(PATIENCE))
        .await
        .unwrap()
        .expect("a message");

    if matches!(transport, Transport::Mqtt | Transport::MqttWs) {
        for refused in [device.reject(&first).await, device.abandon(&first).await] {
            assert!(
                matches!(refused, Err(ClientError::NotSupported { .. })),
                "{refused:?}"
            );
        }
        within("complete", device.complete(&first)).await.unwrap();
        assert_eq!(feedback_for(&service, "m1").await, FeedbackStatus::Success);
        return;
    }

    within("abandon", device.abandon(&first)).await.unwrap();
    let again = within("receive again", device.receive(PATIENCE))
        .await
        .unwrap()
        .expect("the abandoned message again");
    assert_eq!(again.message_id.as_deref(), Some("m1"));
    if let (Some(before), Some(after)) = (first.delivery_count, again.delivery_count) {
        assert!(after > before, "delivery count {before} then {after}");
    }
    // The first delivery's lock is gone.
    let stale = device.complete(&first).await;
    assert!(matches!(stale, Err(ClientError::LockLost(_))), "{stale:?}");

    within("reject", device.reject(&again)).await.unwrap();
    assert_eq!(feedback_for(&service, "m1").await, FeedbackStatus::Rejected);
}

async fn resumes_after_a_hub_restart_without_losing_messages(transport: Transport) {
    // Messages locked when the hub dies come back after the lock timeout.
    let flags = ["--lock-timeout", "2s"];
    let mut hub = Hub::start_with(&flags);
    let cs = create_device(&hub, "dev1");
    let device = DeviceClient::with_options(&cs, transport, device_options(&hub)).unwrap();
    let statuses = record_statuses(&device);
    within("connect", device.connect()).await.unwrap();
    let service = service(&hub, ServiceTransport::Http);

    let mut completed = BTreeSet::new();
    for i in 0..5 {
        send(
            &service,
            "dev1",
            Message::new("x").message_id(format!("m{i}")),
        )
        .await;
    }
    while completed.len() < 3 {
        let message = within("receive", device.receive(PATIENCE))
            .await
            .unwrap()
            .expect("a message");
        within("complete", device.complete(&message)).await.unwrap();
        completed.insert(message.message_id.unwrap());
    }

    hub.kill_and_restart_on_same_ports(&flags);
    for i in 5..10 {
        send(
            &service,
            "dev1",
            Message::new("x").message_id(format!("m{i}")),
        )
        .await;
    }
    let expected: BTreeSet<String> = (0..10).map(|i| format!("m{i}")).collect();
    while completed != expected {
        let message = within("receive after restart", device.receive(PATIENCE))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("lost: {:?}", expected.difference(&completed)));
        // A message whose settlement the restart swallowed comes again; its
        // lock from before the restart is gone.
        match device.complete(&message).await {
            Ok(()) | Err(ClientError::LockLost(_)) => {}
            Err(e) => panic!("complete after restart: {e}"),
        }
        completed.insert(message.message_id.unwrap());
    }
    device.close().await;
    if transport == Transport::Http {
        // HTTPS has no connection to lose: no poll was in flight while the
        // hub was down, so there was nothing to report.
        return;
    }
    let seen: Vec<_> = statuses.lock().unwrap().iter().map(|c| c.status).collect();
    let retrying = seen
        .iter()
        .position(|s| *s == ConnectionStatus::DisconnectedRetrying)
        .unwrap_or_else(|| panic!("never reported DisconnectedRetrying: {seen:?}"));
    assert!(
        seen[retrying..].contains(&ConnectionStatus::Connected),
        "never reconnected: {seen:?}"
    );
}

async fn keeps_receiving_across_token_renewals(transport: Transport) {
    let hub = Hub::start();
    let cs = create_device(&hub, "dev1");
    let lifetime = Duration::from_secs(4);
    let options = device_options(&hub).token_lifetime(lifetime);
    let device = DeviceClient::with_options(&cs, transport, options).unwrap();
    let statuses = record_statuses(&device);
    within("connect", device.connect()).await.unwrap();
    let service = service(&hub, ServiceTransport::Http);

    // Three token lifetimes: a connection still on its first token would
    // have been refused by now.
    let start = tokio::time::Instant::now();
    let mut round = 0;
    while start.elapsed() < lifetime * 3 {
        let id = format!("m{round}");
        send(&service, "dev1", Message::new("x").message_id(id.clone())).await;
        let message = within("receive", device.receive(PATIENCE))
            .await
            .unwrap()
            .expect("a message");
        assert_eq!(message.message_id.as_deref(), Some(id.as_str()));
        within("complete", device.complete(&message)).await.unwrap();
        round += 1;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let statuses = statuses.lock().unwrap().clone();
    assert!(
        statuses
            .iter()
            .all(|c| c.status != ConnectionStatus::Disconnected),
        "{statuses:?}"
    );
    if matches!(transport, Transport::Mqtt | Transport::MqttWs) {
        assert!(
            statuses
                .iter()
                .any(|c| c.reason == StatusReason::ExpiredSasToken),
            "MQTT renews by reconnecting: {statuses:?}"
        );
    }
    device.close().await;
}

/// The error a device whose credentials the hub refuses gets: at connect,
/// or (HTTPS has no connection) at its first poll.
async fn refusal(device: &DeviceClient) -> ClientError {
    match within("connect", device.connect()).await {
        Err(e) => e,
        Ok(()) => within("receive", device.receive(PATIENCE))
            .await
            .expect_err("the credentials must be refused"),
    }
}

async fn a_wrong_key_is_refused_without_retrying(transport: Transport) {
    let hub = Hub::start();
    create_device(&hub, "dev1");
    let wrong =
        "HostName=localhost;DeviceId=dev1;SharedAccessKey=d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXk=";
    let device = DeviceClient::with_options(wrong, transport, device_options(&hub)).unwrap();
    let error = refusal(&device).await;
    assert!(matches!(error, ClientError::Unauthorized(_)), "{error:?}");
    let mut watch = device.status_watch();
    within(
        "final status",
        watch.wait_for(|c| c.status == ConnectionStatus::Disconnected),
    )
    .await
    .unwrap();
    assert_eq!(device.status().reason, StatusReason::BadCredential);
}

/// A self-signed X.509 device: no key, no token; its TLS client certificate
/// is its identity (on AMQP without SASL or CBS, wire spec §1.6). A second
/// certificate, not registered, is refused.
async fn a_self_signed_device_receives_with_its_certificate(transport: Transport) {
    let hub = Hub::start();
    let certified = rcgen::generate_simple_self_signed(vec!["x509-dev".to_owned()]).unwrap();
    let (_, sha256) = courier_auth::thumbprints(certified.cert.der());
    hub.ok(&[
        "device",
        "create",
        "x509-dev",
        "--x509",
        "--primary-thumbprint",
        &sha256,
    ]);
    let cs = "HostName=localhost;DeviceId=x509-dev;x509=true";
    let identity = X509Identity::from_pem(
        certified.cert.pem().into_bytes(),
        certified.signing_key.serialize_pem().into_bytes(),
    );
    let options = device_options(&hub).x509_identity(identity);
    let device = DeviceClient::with_options(cs, transport, options).unwrap();
    within("connect", device.connect()).await.unwrap();

    let service = service(&hub, ServiceTransport::Amqp);
    send(&service, "x509-dev", Message::new("for the certificate")).await;
    let message = within("receive", device.receive(PATIENCE))
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(message.body_str(), Some("for the certificate"));
    within("complete", device.complete(&message)).await.unwrap();
    device.close().await;

    let stranger = rcgen::generate_simple_self_signed(vec!["x509-dev".to_owned()]).unwrap();
    let identity = X509Identity::from_pem(
        stranger.cert.pem().into_bytes(),
        stranger.signing_key.serialize_pem().into_bytes(),
    );
    let options = device_options(&hub).x509_identity(identity);
    let device = DeviceClient::with_options(cs, transport, options).unwrap();
    let error = refusal(&device).await;
    assert!(matches!(error, ClientError::Unauthorized(_)), "{error:?}");
    device.close().await;
}

macro_rules! device_scenarios {
    ($($name:ident => $transport:expr),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test]
            async fn receives_with_properties_and_completes() {
                super::receives_with_properties_and_completes($transport).await;
            }

            #[tokio::test]
            async fn settles_by_the_transports_rules() {
                super::settles_by_the_transports_rules($transport).await;
            }

            #[tokio::test]
            async fn resumes_after_a_hub_restart_without_losing_messages() {
                super::resumes_after_a_hub_restart_without_losing_messages($transport).await;
            }

            #[tokio::test]
            async fn keeps_receiving_across_token_renewals() {
                super::keeps_receiving_across_token_renewals($transport).await;
            }

            #[tokio::test]
            async fn a_wrong_key_is_refused_without_retrying() {
                super::a_wrong_key_is_refused_without_retrying($transport).await;
            }

            #[tokio::test]
            async fn a_self_signed_device_receives_with_its_certificate() {
                super::a_self_signed_device_receives_with_its_certificate($transport).await;
            }

            #[tokio::test]
            async fn a_receiver_that_stops_leaves_the_rest_to_the_next() {
                super::a_receiver_that_stops_leaves_the_rest_to_the_next($transport).await;
            }
        }
    )*};
}

device_scenarios! {
    mqtt => Transport::Mqtt,
    mqtt_ws => Transport::MqttWs,
    amqp => Transport::Amqp,
    amqp_ws => Transport::AmqpWs,
    http => Transport::Http,
}

async fn sends_and_reads_feedback(transport: ServiceTransport) {
    let hub = Hub::start();
    let cs = create_device(&hub, "dev1");
    let service = service(&hub, transport);
    let mut feedback = within("open feedback", service.feedback_receiver())
        .await
        .unwrap();
    let receipt = within(
        "send",
        service.send(
            "dev1",
            &Message::new("hi")
                .message_id("m1")
                .property("k", "v")
                .ack(Ack::Full),
            PATIENCE,
        ),
    )
    .await
    .unwrap();
    assert_eq!(receipt.device_id, "dev1");
    assert_eq!(receipt.message_id.as_deref(), Some("m1"));
    if transport == ServiceTransport::Http {
        assert_eq!(receipt.sequence_number, Some(1));
    }

    // Feedback names messages by id: one asking for feedback gets an id.
    let anonymous = within(
        "send without an id",
        service.send("dev1", &Message::new("no id").ack(Ack::Positive), PATIENCE),
    )
    .await
    .unwrap();
    assert!(anonymous.message_id.is_some_and(|id| !id.is_empty()));

    let device = DeviceClient::with_options(&cs, Transport::Http, device_options(&hub)).unwrap();
    let message = within("receive", device.receive(PATIENCE))
        .await
        .unwrap()
        .expect("the message");
    assert_eq!(message.property("k"), Some("v"));
    within("complete", device.complete(&message)).await.unwrap();

    let batch = within("feedback", feedback.receive(PATIENCE))
        .await
        .unwrap()
        .expect("a feedback batch");
    let record = &batch.records[0];
    assert_eq!(record.original_message_id, "m1");
    assert_eq!(record.device_id, "dev1");
    assert_eq!(record.status_code, FeedbackStatus::Success);
    within("complete feedback", feedback.complete(&batch))
        .await
        .unwrap();
    let none = feedback.receive(Duration::from_millis(500)).await.unwrap();
    assert!(none.is_none(), "completed feedback came back: {none:?}");
    feedback.close().await;
    service.close().await;
}

async fn refusals_are_typed(transport: ServiceTransport) {
    let hub = Hub::start();
    hub.ok(&[
        "device",
        "create",
        "small",
        "--max-queue-depth",
        "1",
        "--max-message-size",
        "1024",
    ]);
    let service = service(&hub, transport);
    let unknown = service
        .send("nobody", &Message::new("x"), PATIENCE)
        .await
        .unwrap_err();
    assert!(matches!(unknown, ClientError::NotFound(_)), "{unknown:?}");
    assert_eq!(unknown.code(), Some(404001));

    send(&service, "small", Message::new("first")).await;
    let full = service
        .send("small", &Message::new("second"), PATIENCE)
        .await
        .unwrap_err();
    assert!(matches!(full, ClientError::QueueFull(_)), "{full:?}");
    assert_eq!(full.code(), Some(403004));

    let purged = within("purge", service.purge("small")).await.unwrap();
    assert_eq!(purged.total_messages_purged, 1);
    let big = service
        .send("small", &Message::new(vec![b'x'; 4096]), PATIENCE)
        .await
        .unwrap_err();
    assert!(matches!(big, ClientError::MessageTooLarge(_)), "{big:?}");
    // Refusals are not retried: the hub saw one send of each.
    assert!(!big.is_transient() && !full.is_transient() && !unknown.is_transient());

    let wrong = ServiceClient::with_options(
        "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXk=",
        ServiceOptions::new()
            .transport(transport)
            .ca_certificate_file(hub.ca_path())
            .unwrap()
            .amqp_port(hub.ports().amqp)
            .https_port(hub.ports().https),
    )
    .unwrap();
    let refused = wrong
        .send("small", &Message::new("x"), PATIENCE)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ClientError::Unauthorized(_)),
        "{refused:?}"
    );
}

/// Many sends at once on one client: on AMQP they share one sender link and
/// the hub pipelines them, so each must still get its own outcome, refusals
/// among acceptances included.
async fn concurrent_sends_each_get_their_own_outcome(transport: ServiceTransport) {
    let hub = Hub::start();
    hub.ok(&["device", "create", "busy", "--max-queue-depth", "250"]);
    let service = service(&hub, transport);
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..350 {
        let service = service.clone();
        let device = if i % 7 == 3 { "nobody" } else { "busy" };
        sends.spawn(async move {
            let result = service
                .send(device, &Message::new(format!("m{i}")), PATIENCE)
                .await;
            (device, result)
        });
    }
    let results = within("350 concurrent sends", sends.join_all()).await;
    let (mut accepted, mut full, mut unknown) = (0, 0, 0);
    for (device, result) in results {
        match (device, result) {
            ("busy", Ok(_)) => accepted += 1,
            ("busy", Err(ClientError::QueueFull(_))) => full += 1,
            ("nobody", Err(ClientError::NotFound(_))) => unknown += 1,
            (device, other) => panic!("send to {device}: unexpected {other:?}"),
        }
    }
    assert_eq!((accepted, full, unknown), (250, 50, 50));
    let purged = within("purge", service.purge("busy")).await.unwrap();
    assert_eq!(purged.total_messages_purged, 250);
}

macro_rules! service_scenarios {
    ($($name:ident => $transport:expr),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test]
            async fn sends_and_reads_feedback() {
                super::sends_and_reads_feedback($transport).await;
            }

            #[tokio::test]
            async fn refusals_are_typed() {
                super::refusals_are_typed($transport).await;
            }

            #[tokio::test]
            async fn concurrent_sends_each_get_their_own_outcome() {
                super::concurrent_sends_each_get_their_own_outcome($transport).await;
            }
        }
    )*};
}

service_scenarios! {
    service_amqp => ServiceTransport::Amqp,
    service_amqp_ws => ServiceTransport::AmqpWs,
    service_http => ServiceTransport::Http,
}

/// One receive per client, as the CLI does: what the first client did not
/// take is there for the next one at once, not after a lock timeout.
async fn a_receiver_that_stops_leaves_the_rest_to_the_next(transport: Transport) {
    let hub = Hub::start();
    let cs = create_device(&hub, "dev1");
    let service = service(&hub, ServiceTransport::Http);
    for i in 0..3 {
        send(
            &service,
            "dev1",
            Message::new("x").message_id(format!("m{i}")),
        )
        .await;
    }
    // Messages a closed connection had in flight come back at once (in
    // whatever order), not when their locks lapse.
    let mut completed = BTreeSet::new();
    for i in 0..3 {
        let device = DeviceClient::with_options(&cs, transport, device_options(&hub)).unwrap();
        let message = within("receive", device.receive(Duration::from_secs(10)))
            .await
            .unwrap()
            .unwrap_or_else(|| {
                panic!("client {i} got nothing: a message is locked by a client that is gone")
            });
        within("complete", device.complete(&message)).await.unwrap();
        assert!(
            completed.insert(message.message_id.unwrap()),
            "delivered twice"
        );
        device.close().await;
    }
    assert_eq!(completed.len(), 3);
}
