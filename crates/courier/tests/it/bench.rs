//! `courier bench` smoke test: a tiny run against a real hub must deliver
//! every message and clean up. Not a timed test: figures live in BENCHMARKS.md.

use crate::support::{assert_success, courier, Hub, Mosquitto};

#[test]
fn bench_c2d_delivers_every_message_and_deletes_its_devices() {
    let hub = Hub::start();
    let report = hub.json(&[
        "bench",
        "c2d",
        "--devices",
        "5",
        "--messages",
        "3",
        "--senders",
        "4",
        "--amqp-connections",
        "2",
    ]);
    assert_eq!(report.len(), 1, "{report:?}");
    let report = &report[0];
    assert_eq!(report["sendOver"], "amqp", "{report}");
    assert_eq!(report["amqpConnections"], 2, "{report}");
    assert_eq!(report["sent"], 15, "{report}");
    assert_eq!(report["delivered"], 15, "{report}");
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    assert_eq!(report["maxQueueDepth"], 3, "{report}");
    assert_eq!(
        report["latency"]["p50Micros"].as_u64().map(|p| p > 0),
        Some(true),
        "{report}"
    );
    // run.json names the hub's pid, so its CPU and memory are reported.
    assert!(
        report["hub"]["peakRssBytes"].as_u64().unwrap() > 0,
        "{report}"
    );

    let devices = hub.json(&["device", "list"]);
    assert_eq!(
        devices[0],
        serde_json::json!([]),
        "bench devices left behind"
    );
}

/// Devices over AMQP and HTTPS, through the Rust SDK, complete every message.
#[test]
fn bench_c2d_devices_on_amqp_and_https_complete_every_message() {
    for transport in ["amqp", "https"] {
        let hub = Hub::start();
        let report = hub.json(&[
            "bench",
            "c2d",
            "--devices",
            "3",
            "--messages",
            "4",
            "--senders",
            "2",
            "--transport",
            transport,
            "--keep-devices",
        ]);
        let report = &report[0];
        assert_eq!(report["transport"], transport, "{report}");
        assert_eq!(report["sent"], 12, "{report}");
        assert_eq!(report["delivered"], 12, "{report}");
        assert_eq!(report["errors"], serde_json::json!([]), "{report}");
        assert_eq!(
            report["latency"]["p50Micros"].as_u64().map(|p| p > 0),
            Some(true),
            "{report}"
        );
        // The devices stay (--keep-devices): their queues are empty because
        // every message was completed, not because the devices went.
        let info = hub.json(&["hub", "info"]);
        assert_eq!(info[0]["deviceCount"], 3, "{info:?}");
        assert_eq!(info[0]["queuedMessages"], 0, "{info:?}");
    }
}

/// Also the HTTPS send path (the default is AMQP).
#[test]
fn bench_c2d_with_full_ack_counts_a_feedback_record_per_message() {
    let hub = Hub::start();
    let report = hub.json(&[
        "bench",
        "c2d",
        "--devices",
        "2",
        "--messages",
        "2",
        "--ack",
        "full",
        "--send-over",
        "https",
    ]);
    let report = &report[0];
    assert_eq!(report["sendOver"], "https", "{report}");
    assert_eq!(
        report["amqpConnections"],
        serde_json::Value::Null,
        "{report}"
    );
    assert_eq!(report["delivered"], 4, "{report}");
    assert_eq!(report["feedbackRecords"], 4, "{report}");
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
}

#[test]
fn bench_idle_reports_memory_per_connection() {
    let hub = Hub::start();
    // Two loopback source addresses: how a large run passes one address's ports.
    let report = hub.json(&[
        "bench",
        "idle",
        "--connections",
        "3",
        "--source-addresses",
        "2",
    ]);
    let report = &report[0];
    assert_eq!(report["connections"], 3, "{report}");
    assert_eq!(report["sourceAddresses"], 2, "{report}");
    assert!(report["rssAfterBytes"].as_u64().unwrap() > 0, "{report}");
}

#[test]
fn bench_fill_leaves_the_messages_queued() {
    let hub = Hub::start();
    let report = hub.json(&[
        "bench",
        "fill",
        "--devices",
        "3",
        "--messages",
        "2",
        "--senders",
        "2",
    ]);
    let report = &report[0];
    assert_eq!(report["sent"], 6, "{report}");
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    let info = hub.json(&["hub", "info"]);
    assert_eq!(info[0]["deviceCount"], 3, "{info:?}");
    assert_eq!(info[0]["queuedMessages"], 6, "{info:?}");
}

#[test]
fn bench_c2d_broker_mode_drives_a_plain_broker_with_the_same_report() {
    let Some(broker) = Mosquitto::start() else {
        eprintln!("skipped: mosquitto is not installed");
        return;
    };
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let args = [
        "bench",
        "c2d",
        "--broker",
        &url,
        "--devices",
        "3",
        "--messages",
        "2",
        "--senders",
        "2",
        "--publish-window",
        "2",
        "--json",
    ];
    let output = courier(&args);
    assert_success(&args, &output);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["sent"], 6, "{report}");
    assert_eq!(report["delivered"], 6, "{report}");
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    assert_eq!(report["broker"]["url"], url.as_str(), "{report}");
    assert_eq!(report["maxQueueDepth"], serde_json::Value::Null, "{report}");
    // The broker's process is found from its port, for its CPU and memory.
    assert_eq!(report["hub"]["pid"], broker.pid(), "{report}");
}
