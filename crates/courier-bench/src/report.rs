//! What a run measured: serialisable for `--json`, printable as text.

use std::fmt::Write as _;

use serde::Serialize;

use crate::options::{AckMode, HttpVersion, SendOver, Transport};

/// Send→receive latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencyReport {
    /// Median.
    pub p50_micros: u64,
    /// 90th percentile.
    pub p90_micros: u64,
    /// 99th percentile.
    pub p99_micros: u64,
    /// 99.9th percentile.
    pub p999_micros: u64,
    /// Largest.
    pub max_micros: u64,
    /// Mean.
    pub mean_micros: f64,
}

/// One kind of error and how often it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorCount {
    /// What failed, e.g. `send: HTTP 404 DeviceNotFound`.
    pub kind: String,
    /// How many times.
    pub count: u64,
}

/// Rates over the run's delivery window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Throughput {
    /// First send started → the last message settled by its device (MQTT PUBACK written, AMQP or HTTPS complete answered), in seconds.
    pub seconds: f64,
    /// Messages delivered per second over that window (end to end).
    pub delivered_per_second: f64,
    /// First send started → last send answered, in seconds.
    pub send_seconds: f64,
    /// Messages the hub accepted per second over the send window.
    pub sent_per_second: f64,
}

/// The broker a broker-mode run drove instead of the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerReport {
    /// `mqtt://…` or `mqtts://…`.
    pub url: String,
    /// Unacknowledged QoS 1 PUBLISHes per publisher connection.
    pub publish_window: u32,
}

/// The hub process's cost during the run (when it runs on this machine); in
/// broker mode, the broker's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HubUsage {
    /// The hub's process id.
    pub pid: u32,
    /// CPU seconds (user + system) the hub spent during the run.
    pub cpu_seconds: f64,
    /// Those CPU seconds per delivered message, in microseconds.
    pub cpu_micros_per_message: f64,
    /// Highest VmRSS sampled during the run, in bytes.
    pub peak_rss_bytes: u64,
    /// VmHWM at the end: the highest RSS since the hub started, in bytes.
    pub high_water_rss_bytes: u64,
}

/// The load generator's own cost during the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GeneratorUsage {
    /// CPU seconds the bench process spent.
    pub cpu_seconds: f64,
    /// Those CPU seconds per delivered message, in microseconds.
    pub cpu_micros_per_message: f64,
}

/// The result of `courier bench c2d`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct C2dReport {
    /// How devices connected.
    pub transport: Transport,
    /// Bench devices.
    pub devices: u32,
    /// Messages per device.
    pub messages_per_device: u32,
    /// Concurrent senders.
    pub senders: u32,
    /// Target rate in msg/s; `None` = flat out.
    pub rate: Option<u32>,
    /// HTTP version of the senders (when they send over HTTPS).
    pub http: HttpVersion,
    /// How the senders sent to the hub (ignored in broker mode).
    pub send_over: SendOver,
    /// AMQP connections the senders shared, when they sent over AMQP.
    pub amqp_connections: Option<u32>,
    /// Feedback asked for.
    pub ack: AckMode,
    /// Bytes per body.
    pub body_bytes: u32,
    /// The per-device `c2dLimits.maxQueueDepth` the run set (the hub default
    /// is 50); `None` in broker mode.
    pub max_queue_depth: Option<u32>,
    /// The broker driven instead of the hub (broker mode); `None` for the hub.
    pub broker: Option<BrokerReport>,
    /// Messages the hub accepted.
    pub sent: u64,
    /// Messages devices received (first deliveries).
    pub delivered: u64,
    /// Redeliveries (PUBLISH with DUP) devices received.
    pub redelivered: u64,
    /// Feedback records received, with `ack = full`.
    pub feedback_records: Option<u64>,
    /// Rates.
    pub throughput: Throughput,
    /// Latency percentiles; `None` if nothing was delivered.
    pub latency: Option<LatencyReport>,
    /// Errors by kind, most frequent first.
    pub errors: Vec<ErrorCount>,
    /// The hub's (in broker mode the broker's) CPU and memory, when its
    /// process could be read.
    pub hub: Option<HubUsage>,
    /// The bench process's own CPU.
    pub generator: GeneratorUsage,
}

impl C2dReport {
    /// Total errors.
    pub fn error_total(&self) -> u64 {
        self.errors.iter().map(|e| e.count).sum()
    }

    /// True when every message sent was delivered and nothing failed.
    pub fn is_clean(&self) -> bool {
        self.error_total() == 0
            && self.delivered == self.sent
            && self
                .feedback_records
                .is_none_or(|records| records == self.sent)
    }

    /// True when a rate was asked for and the sends kept within 5 % of it.
    pub fn sustained_rate(&self) -> Option<bool> {
        self.rate
            .map(|rate| self.throughput.sent_per_second >= 0.95 * f64::from(rate))
    }

    /// The report as the text `courier bench c2d` prints.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let rate = self
            .rate
            .map_or_else(|| "flat out".to_owned(), |r| format!("{r} msg/s"));
        let senders = match &self.broker {
            Some(b) => format!(
                "{} MQTT publishers (QoS 1, window {})",
                self.senders, b.publish_window
            ),
            None => match (self.send_over, self.amqp_connections) {
                (SendOver::Amqp, connections) => format!(
                    "{} senders (AMQP, {} connections, pipelined)",
                    self.senders,
                    connections.unwrap_or(1)
                ),
                (SendOver::Https, _) => format!(
                    "{} senders (HTTP/{})",
                    self.senders,
                    match self.http {
                        HttpVersion::Http1 => "1.1",
                        HttpVersion::Http2 => "2",
                    }
                ),
            },
        };
        let _ = writeln!(
            out,
            "c2d over {}: {} devices × {} messages, {senders}, {rate}, ack {}, {}-byte bodies",
            self.transport.as_str(),
            self.devices,
            self.messages_per_device,
            self.ack.as_str(),
            self.body_bytes,
        );
        match (&self.broker, self.max_queue_depth) {
            (Some(b), _) => {
                let _ = writeln!(
                    out,
                    "broker mode:  {} (persistent sessions; not the hub)",
                    b.url
                );
            }
            (None, Some(depth)) => {
                let _ = writeln!(
                    out,
                    "queue depth:  c2dLimits.maxQueueDepth = {depth} per bench device (hub default 50)"
                );
            }
            (None, None) => {}
        }
        let _ = writeln!(
            out,
            "delivered:    {} of {} sent ({} redelivered){}",
            self.delivered,
            self.sent,
            self.redelivered,
            self.feedback_records
                .map(|n| format!(", {n} feedback records"))
                .unwrap_or_default()
        );
        let t = &self.throughput;
        let _ = writeln!(
            out,
            "throughput:   {:.0} msg/s end to end ({:.2} s first send → last settled); sends {:.0} msg/s",
            t.delivered_per_second, t.seconds, t.sent_per_second
        );
        if self.sustained_rate() == Some(false) {
            let _ = writeln!(
                out,
                "              (the target rate was NOT sustained: sends fell behind schedule)"
            );
        }
        match &self.latency {
            Some(l) => {
                let _ = writeln!(
                    out,
                    "latency:      p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (send → device)",
                    micros(l.p50_micros),
                    micros(l.p90_micros),
                    micros(l.p99_micros),
                    micros(l.p999_micros),
                    micros(l.max_micros),
                );
            }
            None => {
                let _ = writeln!(out, "latency:      (nothing delivered)");
            }
        }
        let who = if self.broker.is_some() {
            "broker:      "
        } else {
            "hub:         "
        };
        match &self.hub {
            Some(h) => {
                let _ = writeln!(
                    out,
                    "{who} {:.2} CPU s = {:.1} µs/message; peak RSS {} (high water {})",
                    h.cpu_seconds,
                    h.cpu_micros_per_message,
                    mebibytes(h.peak_rss_bytes),
                    mebibytes(h.high_water_rss_bytes),
                );
            }
            None => {
                let _ = writeln!(out, "{who} (process not on this machine: no CPU or RSS)");
            }
        }
        let _ = writeln!(
            out,
            "generator:    {:.2} CPU s = {:.1} µs/message",
            self.generator.cpu_seconds, self.generator.cpu_micros_per_message
        );
        if self.errors.is_empty() {
            let _ = writeln!(out, "errors:       none");
        } else {
            let _ = writeln!(out, "errors:       {}", self.error_total());
            for e in &self.errors {
                let _ = writeln!(out, "  {:>8}  {}", e.count, e.kind);
            }
        }
        out
    }
}

/// The result of `courier bench idle`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdleReport {
    /// Idle MQTT TLS connections held.
    pub connections: u32,
    /// Loopback addresses the connections came from (1 = no bind).
    pub source_addresses: u32,
    /// Seconds the connections took to open and subscribe.
    pub connect_seconds: f64,
    /// The hub's process id.
    pub pid: u32,
    /// Hub VmRSS before connecting, bytes.
    pub rss_before_bytes: u64,
    /// Hub VmRSS with every connection open, bytes.
    pub rss_after_bytes: u64,
    /// (after − before) ÷ connections, bytes.
    pub rss_per_connection_bytes: f64,
    /// The bench's own VmRSS with every connection open, bytes.
    pub generator_rss_bytes: u64,
}

impl IdleReport {
    /// The report as the text `courier bench idle` prints.
    pub fn to_text(&self) -> String {
        format!(
            "idle: {} MQTT TLS connections from {} source address(es) (connected and subscribed in {:.2} s)\n\
             hub RSS: {} before, {} with the connections open\n\
             per idle TLS connection: {:.1} KiB\n\
             generator RSS: {}\n",
            self.connections,
            self.source_addresses,
            self.connect_seconds,
            mebibytes(self.rss_before_bytes),
            mebibytes(self.rss_after_bytes),
            self.rss_per_connection_bytes / 1024.0,
            mebibytes(self.generator_rss_bytes),
        )
    }
}

/// The result of `courier bench fill`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FillReport {
    /// Devices created (and left registered, with their queues).
    pub devices: u32,
    /// Messages per device.
    pub messages_per_device: u32,
    /// Concurrent HTTPS senders.
    pub senders: u32,
    /// HTTP version of the senders.
    pub http: HttpVersion,
    /// Bytes per body.
    pub body_bytes: u32,
    /// Seconds creating the devices.
    pub create_seconds: f64,
    /// Messages the hub accepted (each answered after its fdatasync).
    pub sent: u64,
    /// First send → last answer, seconds.
    pub send_seconds: f64,
    /// `sent` ÷ `send_seconds`.
    pub sent_per_second: f64,
    /// Errors by kind, most frequent first.
    pub errors: Vec<ErrorCount>,
    /// The hub's CPU and memory over the sends, when its process could be read.
    pub hub: Option<HubUsage>,
}

impl FillReport {
    /// True when every message was accepted.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
            && self.sent == u64::from(self.devices) * u64::from(self.messages_per_device)
    }

    /// The report as the text `courier bench fill` prints.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "fill: {} devices × {} messages queued ({} sent) by {} HTTPS senders\n\
             devices created in {:.1} s; sends {:.0} msg/s over {:.1} s\n",
            self.devices,
            self.messages_per_device,
            self.sent,
            self.senders,
            self.create_seconds,
            self.sent_per_second,
            self.send_seconds,
        );
        if let Some(h) = &self.hub {
            let _ = writeln!(
                out,
                "hub: {:.2} CPU s = {:.1} µs/message; RSS {}",
                h.cpu_seconds,
                h.cpu_micros_per_message,
                mebibytes(h.peak_rss_bytes)
            );
        }
        for e in &self.errors {
            let _ = writeln!(out, "  {:>8}  {}", e.count, e.kind);
        }
        out
    }
}

/// `850 µs`, `12.3 ms`, `1.20 s`.
fn micros(value: u64) -> String {
    match value {
        0..1_000 => format!("{value} µs"),
        1_000..1_000_000 => format!("{:.1} ms", value as f64 / 1e3),
        _ => format!("{:.2} s", value as f64 / 1e6),
    }
}

fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> C2dReport {
        C2dReport {
            transport: Transport::Mqtt,
            devices: 5,
            messages_per_device: 3,
            senders: 64,
            rate: None,
            http: HttpVersion::Http1,
            send_over: SendOver::Https,
            amqp_connections: None,
            ack: AckMode::None,
            body_bytes: 64,
            max_queue_depth: Some(3),
            broker: None,
            sent: 15,
            delivered: 15,
            redelivered: 0,
            feedback_records: None,
            throughput: Throughput {
                seconds: 0.5,
                delivered_per_second: 30.0,
                send_seconds: 0.25,
                sent_per_second: 60.0,
            },
            latency: Some(LatencyReport {
                p50_micros: 850,
                p90_micros: 1_500,
                p99_micros: 12_345,
                p999_micros: 20_000,
                max_micros: 1_200_000,
                mean_micros: 900.0,
            }),
            errors: vec![],
            hub: None,
            generator: GeneratorUsage {
                cpu_seconds: 0.01,
                cpu_micros_per_message: 666.7,
            },
        }
    }

    #[test]
    fn durations_use_a_readable_unit() {
        assert_eq!(micros(850), "850 µs");
        assert_eq!(micros(12_345), "12.3 ms");
        assert_eq!(micros(1_200_000), "1.20 s");
    }

    #[test]
    fn the_text_report_shows_rates_percentiles_and_queue_depth() {
        let text = report().to_text();
        assert!(
            text.contains("5 devices × 3 messages, 64 senders (HTTP/1.1), flat out"),
            "{text}"
        );
        assert!(
            text.contains("maxQueueDepth = 3 per bench device"),
            "{text}"
        );
        assert!(text.contains("15 of 15 sent"), "{text}");
        assert!(text.contains("30 msg/s end to end"), "{text}");
        assert!(
            text.contains("p50 850 µs  p90 1.5 ms  p99 12.3 ms  p99.9 20.0 ms  max 1.20 s"),
            "{text}"
        );
        assert!(text.contains("errors:       none"), "{text}");
    }

    #[test]
    fn errors_make_a_run_unclean_and_are_listed() {
        let mut failed = report();
        assert!(failed.is_clean());
        failed.errors = vec![ErrorCount {
            kind: "send: transport".into(),
            count: 2,
        }];
        failed.delivered = 13;
        assert!(!failed.is_clean());
        let text = failed.to_text();
        assert!(
            text.contains("errors:       2\n         2  send: transport"),
            "{text}"
        );
    }

    #[test]
    fn missing_feedback_makes_a_run_unclean() {
        let mut run = report();
        run.feedback_records = Some(14);
        assert!(!run.is_clean());
        run.feedback_records = Some(15);
        assert!(run.is_clean());
    }

    #[test]
    fn the_json_report_uses_camel_case_names() {
        let json = serde_json::to_value(report()).unwrap();
        assert_eq!(json["delivered"], 15);
        assert_eq!(json["maxQueueDepth"], 3);
        assert_eq!(json["throughput"]["deliveredPerSecond"], 30.0);
        assert_eq!(json["latency"]["p999Micros"], 20_000);
        assert_eq!(json["transport"], "mqtt");
        assert_eq!(json["http"], "1.1");
        assert_eq!(json["errors"], serde_json::json!([]));
        assert_eq!(json["broker"], serde_json::Value::Null);
    }

    #[test]
    fn broker_mode_names_the_broker_and_its_publishers() {
        let mut run = report();
        run.max_queue_depth = None;
        run.broker = Some(BrokerReport {
            url: "mqtts://localhost:18883".into(),
            publish_window: 8,
        });
        let text = run.to_text();
        assert!(
            text.contains("64 MQTT publishers (QoS 1, window 8)"),
            "{text}"
        );
        assert!(
            text.contains("broker mode:  mqtts://localhost:18883"),
            "{text}"
        );
        assert!(!text.contains("maxQueueDepth"), "{text}");
        let json = serde_json::to_value(&run).unwrap();
        assert_eq!(json["broker"]["publishWindow"], 8);
        assert_eq!(json["maxQueueDepth"], serde_json::Value::Null);
    }

    #[test]
    fn a_rate_that_was_not_kept_is_flagged() {
        let mut run = report();
        assert_eq!(run.sustained_rate(), None);
        run.rate = Some(100);
        assert_eq!(run.sustained_rate(), Some(false));
        assert!(run.to_text().contains("NOT sustained"));
        run.rate = Some(60);
        assert_eq!(run.sustained_rate(), Some(true));
    }

    #[test]
    fn idle_reports_kibibytes_per_connection() {
        let idle = IdleReport {
            connections: 1000,
            source_addresses: 1,
            generator_rss_bytes: 1 << 20,
            connect_seconds: 1.5,
            pid: 1,
            rss_before_bytes: 10 << 20,
            rss_after_bytes: (10 << 20) + 1000 * 20 * 1024,
            rss_per_connection_bytes: 20.0 * 1024.0,
        };
        assert!(idle.to_text().contains("per idle TLS connection: 20.0 KiB"));
    }
}
