//! The SDK's examples (`crates/courier-client/examples`) run against a real
//! hub the way the README shows: connection strings and settings from the
//! environment.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::{assert_success, Hub};

/// Longest an example may run.
const PATIENCE: Duration = Duration::from_secs(60);

/// Builds the examples once (with the cargo that built this test, so the
/// build is shared) and returns the directory that holds them.
fn examples_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = Command::new(env!("CARGO"))
                .args(["build", "--quiet", "-p", "courier-client", "--examples"])
                .status()
                .expect("run cargo build --examples");
            assert!(status.success(), "cargo build --examples failed");
            PathBuf::from(env!("CARGO_BIN_EXE_courier"))
                .parent()
                .expect("the target directory")
                .join("examples")
        })
        .clone()
}

fn example(hub: &Hub, name: &str, env: &[(&str, &str)]) -> Command {
    let ports = hub.ports();
    let mut command = Command::new(examples_dir().join(name));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("COURIER_CA", hub.ca_path())
        .env("COURIER_HTTPS_PORT", ports.https.to_string())
        .env("COURIER_MQTT_PORT", ports.mqtt.to_string())
        .env("COURIER_AMQP_PORT", ports.amqp.to_string())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits for `child` to exit within [`PATIENCE`] and returns its output.
fn finish(child: Child, what: &str) -> Output {
    let deadline = Instant::now() + PATIENCE;
    let mut child = child;
    while child.try_wait().expect("poll the example").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("reap the example");
            panic!(
                "{what} did not finish within {PATIENCE:?}:\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child
        .wait_with_output()
        .expect("collect the example's output")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_device_example_receives_what_send_c2d_sends_and_the_feedback_monitor_sees_it() {
    let hub = Hub::start();
    let device = hub
        .ok(&["device", "create", "thermostat-1"])
        .trim()
        .to_owned();
    let service = hub.owner_connection_string();
    for transport in ["mqtt", "amqp-ws", "http"] {
        let polling = example(
            &hub,
            "polling_device",
            &[
                ("DEVICE_CONNECTION_STRING", device.as_str()),
                ("COURIER_TRANSPORT", transport),
                ("COUNT", "1"),
            ],
        )
        .spawn()
        .expect("start polling_device");
        let sent = example(
            &hub,
            "send_c2d",
            &[
                ("SERVICE_CONNECTION_STRING", service.as_str()),
                ("COURIER_TRANSPORT", "amqp"),
            ],
        )
        .args(["thermostat-1", &format!("set 21.5 via {transport}")])
        .spawn()
        .expect("start send_c2d");
        let received = finish(polling, "polling_device");
        assert_success(&["polling_device", transport], &received);
        assert!(
            stdout(&received).contains(&format!("set 21.5 via {transport}")),
            "{}",
            stdout(&received)
        );
        assert!(
            stdout(&received).contains("celsius"),
            "{}",
            stdout(&received)
        );
        let sent = finish(sent, "send_c2d");
        assert_success(&["send_c2d"], &sent);
        assert!(
            stdout(&sent).contains("feedback: Success"),
            "{}",
            stdout(&sent)
        );
    }

    // Feedback left for the monitor: a message completed by the device CLI.
    hub.ok(&[
        "c2d",
        "send",
        "thermostat-1",
        "reboot",
        "--ack",
        "full",
        "--message-id",
        "m-monitor",
    ]);
    hub.ok(&["c2d", "receive", "thermostat-1"]);
    let monitor = example(
        &hub,
        "feedback_monitor",
        &[
            ("SERVICE_CONNECTION_STRING", service.as_str()),
            ("COUNT", "1"),
        ],
    )
    .spawn()
    .expect("start feedback_monitor");
    let monitored = finish(monitor, "feedback_monitor");
    assert_success(&["feedback_monitor"], &monitored);
    assert!(
        stdout(&monitored).contains("thermostat-1 m-monitor Success"),
        "{}",
        stdout(&monitored)
    );
}

#[test]
fn the_callback_device_example_prints_and_completes_until_interrupted() {
    let hub = Hub::start();
    let device = hub
        .ok(&["device", "create", "thermostat-1"])
        .trim()
        .to_owned();
    let simulated = example(
        &hub,
        "simulated_device",
        &[
            ("DEVICE_CONNECTION_STRING", device.as_str()),
            ("COURIER_TRANSPORT", "amqp"),
        ],
    )
    .spawn()
    .expect("start simulated_device");
    hub.ok(&[
        "c2d",
        "send",
        "thermostat-1",
        "hello",
        "--prop",
        "unit=celsius",
        "--ack",
        "full",
        "--wait-feedback",
    ]);
    // Ctrl-C: the example closes its client and exits 0.
    let pid = simulated.id().to_string();
    let status = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let output = finish(simulated, "simulated_device");
    assert_success(&["simulated_device"], &output);
    let printed = stdout(&output);
    assert!(printed.contains("status: Connected"), "{printed}");
    assert!(printed.contains("received: hello"), "{printed}");
    assert!(printed.contains("unit = celsius"), "{printed}");
}
