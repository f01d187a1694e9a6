//! `courier bench` smoke test: a tiny run against a real hub must deliver
//! every message and clean up. Not a timed test: figures live in BENCHMARKS.md.

use crate::support::Hub;

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
    ]);
    assert_eq!(report.len(), 1, "{report:?}");
    let report = &report[0];
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
    ]);
    let report = &report[0];
    assert_eq!(report["delivered"], 4, "{report}");
    assert_eq!(report["feedbackRecords"], 4, "{report}");
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
}

#[test]
fn bench_idle_reports_memory_per_connection() {
    let hub = Hub::start();
    let report = hub.json(&["bench", "idle", "--connections", "3"]);
    let report = &report[0];
    assert_eq!(report["connections"], 3, "{report}");
    assert!(report["rssAfterBytes"].as_u64().unwrap() > 0, "{report}");
}
