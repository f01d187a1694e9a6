//! `courier bench …`: resolves the hub like every other verb, then hands the
//! run to the `courier-bench` load generator and prints its report.

use std::io::Write as _;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use courier_bench::{
    AckMode, BenchTarget, BrokerTarget, C2dPlan, FillPlan, HttpVersion, IdlePlan, Observer,
    Progress, SendOver, Silent, Transport,
};

use super::Outcome;
use crate::cli::{
    BenchAck, BenchArgs, BenchC2dArgs, BenchCommand, BenchCommonArgs, BenchFillArgs, BenchHttp,
    BenchIdleArgs, BenchSendOver, BenchTransport, ClientArgs,
};
use crate::target::{Credential, LocalHub, Target};

/// Runs a bench on a runtime of its own.
pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<Outcome> {
    let common = match &args.command {
        BenchCommand::C2d(c2d) => &c2d.common,
        BenchCommand::Idle(idle) => &idle.common,
        BenchCommand::Fill(fill) => &fill.common,
    };
    check_open_files(&args.command)?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = common.threads {
        runtime.worker_threads(usize::from(threads));
    }
    let runtime = runtime.enable_all().build()?;
    let stderr = StderrObserver::default();
    let observer: &dyn Observer = if args.client.json { &Silent } else { &stderr };
    if let BenchCommand::C2d(
        c2d @ BenchC2dArgs {
            broker: Some(url), ..
        },
    ) = &args.command
    {
        let target = broker_target(url, c2d)?;
        let plan = c2d_plan(c2d)?;
        let report = runtime
            .block_on(courier_bench::run_c2d_broker(&target, &plan, observer))
            .context("bench c2d (broker mode) failed")?;
        stderr.end_line();
        print(args.client.json, &report, || report.to_text())?;
        if !report.is_clean() {
            anyhow::bail!(
                "{} of {} messages delivered, {} errors",
                report.delivered,
                report.sent,
                report.error_total()
            );
        }
        return Ok(Outcome::Success);
    }
    let target = bench_target(&args.client, common)?;
    match &args.command {
        BenchCommand::C2d(c2d) => {
            let plan = c2d_plan(c2d)?;
            let report = runtime
                .block_on(courier_bench::run_c2d(&target, &plan, observer))
                .context("bench c2d failed")?;
            stderr.end_line();
            print(args.client.json, &report, || report.to_text())?;
            if !report.is_clean() {
                anyhow::bail!(
                    "{} of {} messages delivered, {} errors",
                    report.delivered,
                    report.sent,
                    report.error_total()
                );
            }
        }
        BenchCommand::Idle(idle) => {
            let plan = idle_plan(idle);
            let report = runtime
                .block_on(courier_bench::run_idle(&target, &plan, observer))
                .context("bench idle failed")?;
            stderr.end_line();
            print(args.client.json, &report, || report.to_text())?;
        }
        BenchCommand::Fill(fill) => {
            let plan = fill_plan(fill);
            let report = runtime
                .block_on(courier_bench::run_fill(&target, &plan, observer))
                .context("bench fill failed")?;
            stderr.end_line();
            print(args.client.json, &report, || report.to_text())?;
            if !report.is_clean() {
                anyhow::bail!(
                    "{} of {} messages queued",
                    report.sent,
                    plan.total_messages()
                );
            }
        }
    }
    Ok(Outcome::Success)
}

/// Raises the open-files limit to the hard limit and fails early when the run
/// needs more descriptors than that: every connection costs one.
fn check_open_files(command: &BenchCommand) -> anyhow::Result<()> {
    let connections = match command {
        BenchCommand::C2d(c2d) => u64::from(c2d.devices) + u64::from(c2d.senders),
        BenchCommand::Idle(idle) => u64::from(idle.connections),
        BenchCommand::Fill(fill) => u64::from(fill.senders),
    };
    // Room for the runtime, stdio and the registry's HTTPS connections.
    let needed = connections + 128;
    let limit =
        courier_server::limits::raise_open_files().context("cannot raise the open files limit")?;
    if limit < needed {
        anyhow::bail!(
            "this run opens ~{needed} file descriptors, but this process may open only {limit} \
             (the hard limit, ulimit -Hn): raise it, or run fewer connections"
        );
    }
    Ok(())
}

fn print<T: serde::Serialize>(
    json: bool,
    value: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut stdout, value)?;
        writeln!(stdout)?;
    } else {
        write!(stdout, "{}", text())?;
    }
    Ok(())
}

/// The plan the flags ask for, validated.
fn c2d_plan(args: &BenchC2dArgs) -> anyhow::Result<C2dPlan> {
    let plan = C2dPlan {
        devices: args.devices,
        messages_per_device: args.messages,
        senders: args.senders,
        rate: args.rate.and_then(NonZeroU32::new),
        transport: match args.transport {
            BenchTransport::Mqtt => Transport::Mqtt,
            BenchTransport::Amqp => Transport::Amqp,
            BenchTransport::Https => Transport::Https,
        },
        ack: match args.ack {
            BenchAck::None => AckMode::None,
            BenchAck::Full => AckMode::Full,
        },
        body_bytes: args.body_size,
        http: http_version(args.http),
        send_over: match args.send_over {
            BenchSendOver::Amqp => SendOver::Amqp,
            BenchSendOver::Https => SendOver::Https,
        },
        amqp_connections: args.amqp_connections,
        keep_devices: args.common.keep_devices,
        publish_window: args.publish_window,
        source_addresses: args.common.source_addresses,
    };
    plan.validate()?;
    Ok(plan)
}

fn idle_plan(args: &BenchIdleArgs) -> IdlePlan {
    IdlePlan {
        connections: args.connections,
        keep_devices: args.common.keep_devices,
        source_addresses: args.common.source_addresses,
    }
}

fn fill_plan(args: &BenchFillArgs) -> FillPlan {
    FillPlan {
        devices: args.devices,
        messages_per_device: args.messages,
        senders: args.senders,
        body_bytes: args.body_size,
        http: http_version(args.http),
    }
}

fn http_version(http: BenchHttp) -> HttpVersion {
    match http {
        BenchHttp::Http1 => HttpVersion::Http1,
        BenchHttp::Http2 => HttpVersion::Http2,
    }
}

/// The broker of `--broker`, its CA, and its process: `--hub-pid`, else the
/// process listening on the broker's port when the broker is on this machine.
fn broker_target(url: &str, args: &BenchC2dArgs) -> anyhow::Result<BrokerTarget> {
    let ca_pem = match &args.broker_ca {
        Some(path) => Some(std::fs::read(path).with_context(|| {
            format!(
                "cannot read the broker's CA certificate file {}",
                path.display()
            )
        })?),
        None => None,
    };
    let mut target = BrokerTarget::new(url, ca_pem, args.common.hub_pid)?;
    if target.pid.is_none() {
        target.pid = courier_bench::pid_listening_on(target.port);
    }
    Ok(target)
}

/// The hub as the other verbs resolve it, plus its MQTT port and process id
/// from run.json when that file describes the same running hub.
fn bench_target(client: &ClientArgs, common: &BenchCommonArgs) -> anyhow::Result<BenchTarget> {
    let target = Target::from_args(client, None)?;
    let Credential::Policy { name, key } = target.credential.clone() else {
        anyhow::bail!("the bench needs a shared access policy with RegistryWrite and ServiceConnect, not a device's key");
    };
    let local = LocalHub::read(&client.data_dir)?;
    let running = local.running.filter(|run| {
        run.host_name.eq_ignore_ascii_case(&target.host_name)
            && reqwest::Url::parse(&run.https_endpoint).is_ok_and(|url| url == target.endpoint)
    });
    let ca_pem = std::fs::read(&target.ca_path).with_context(|| {
        format!(
            "cannot read the CA certificate file {}",
            target.ca_path.display()
        )
    })?;
    Ok(BenchTarget {
        host_name: target.host_name,
        https_endpoint: target.endpoint,
        mqtt_port: common
            .mqtt_port
            .or(running.as_ref().and_then(|run| run.mqtt_port)),
        amqp_port: common
            .amqp_port
            .or(running.as_ref().and_then(|run| run.amqp_port)),
        ca_pem,
        policy_name: name,
        policy_key: key,
        hub_pid: common.hub_pid.or(running.map(|run| run.pid)),
    })
}

/// Phases as lines and progress as one rewritten line on stderr.
#[derive(Default)]
struct StderrObserver {
    state: Mutex<ProgressLine>,
}

#[derive(Default)]
struct ProgressLine {
    open: bool,
    last: Option<Instant>,
    started: Option<Instant>,
}

/// How often the progress line is redrawn.
const REDRAW: Duration = Duration::from_millis(500);

impl StderrObserver {
    /// Ends an open progress line, so what follows starts on its own line.
    fn end_line(&self) {
        if let Ok(mut line) = self.state.lock() {
            if line.open {
                eprintln!();
                line.open = false;
            }
        }
    }
}

impl Observer for StderrObserver {
    fn phase(&self, text: &str) {
        self.end_line();
        eprintln!("… {text}");
    }

    fn progress(&self, progress: Progress) {
        let Ok(mut line) = self.state.lock() else {
            return;
        };
        let now = Instant::now();
        let started = *line.started.get_or_insert(now);
        if line.last.is_some_and(|last| now - last < REDRAW) {
            return;
        }
        line.last = Some(now);
        line.open = true;
        let seconds = (now - started).as_secs_f64();
        let rate = if seconds > 0.0 {
            progress.delivered as f64 / seconds
        } else {
            0.0
        };
        eprint!(
            "\r  sent {}/{}  delivered {}  ({rate:.0} msg/s)  errors {}   ",
            progress.sent, progress.total, progress.delivered, progress.errors
        );
    }
}
