//! `courier serve`: wires configuration, data directory, TLS, the store, the
//! engine and the heads together, runs until Ctrl-C or SIGTERM, and shuts
//! down in order (stop accepting, finish requests, close MQTT and AMQP
//! connections, flush the engine).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use courier_amqp::{AmqpConfig, AmqpHead};
use courier_auth::Authenticator;
use courier_core::{FeedbackSettings, HubSettings, QueueLimits};
use courier_hub::{Hub, HubOptions, SystemClock};
use courier_mqtt::{ConnectionInfo, MqttConfig, MqttHead, Transport};
use courier_store::{WalOptions, WalStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::{Config, DeliveryCountMode, TlsSource};
use crate::datadir::{DataDir, RunFile};
use crate::https::{self, HTTPS_ALPN};
use crate::listener::{self, Accepted, Handshake, PlainTcp, Tls};
use crate::tls::{self, TlsFiles};
use crate::ws::{self, WsConnection};
use crate::ServeArgs;

/// ALPN of the MQTT listener: none, so any client is served (paho sends none,
/// others may send `mqtt`).
const MQTT_ALPN: &[&[u8]] = &[];
/// ALPN of the AMQP listener: none (the SDKs send none).
const AMQP_ALPN: &[&[u8]] = &[];

/// Runs a hub until Ctrl-C or SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::resolve(&args).context("invalid configuration")?;
    init_tracing(&config.log_level);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    check_open_files(config.max_connections);
    let data = DataDir::open_or_create(&config.data_dir)
        .with_context(|| format!("cannot use data directory {}", config.data_dir.display()))?;
    let hub_file = data
        .load_or_create_hub(&config.hostname, &mut rand::rngs::OsRng)
        .context("cannot load or create the hub's policies")?;
    let tls_files = match &config.tls {
        TlsSource::Generated => tls::ensure_dev_certs(&data, &config.hostname)
            .context("cannot create the development certificates")?,
        TlsSource::Files { cert, key } => TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: None,
        },
    };
    let https_tls = tls::server_config(&tls_files.cert, &tls_files.key, HTTPS_ALPN)
        .context("cannot load the TLS certificate")?;
    let mqtt_tls = tls::server_config(&tls_files.cert, &tls_files.key, MQTT_ALPN)
        .context("cannot load the TLS certificate")?;
    let amqp_tls = tls::server_config(&tls_files.cert, &tls_files.key, AMQP_ALPN)
        .context("cannot load the TLS certificate")?;

    let store = WalStore::open(&data.wal_dir(), WalOptions::default())
        .with_context(|| format!("cannot open the store in {}", data.wal_dir().display()))?;
    let (hub, engine, opened) = Hub::open(
        Arc::new(store),
        hub_settings(&config),
        Arc::new(SystemClock),
        HubOptions::default(),
    )
    .context("cannot recover the hub's state from the store")?;

    let https_listener =
        listener::bind(SocketAddr::new(config.bind, config.https_port), "HTTPS").await?;
    let mqtt_listener =
        listener::bind(SocketAddr::new(config.bind, config.mqtt_port), "MQTT").await?;
    let amqp_listener =
        listener::bind(SocketAddr::new(config.bind, config.amqp_port), "AMQP").await?;
    let plain_listener = match config.mqtt_plain_port {
        Some(port) => Some(listener::bind(SocketAddr::new(config.bind, port), "MQTT plain").await?),
        None => None,
    };
    let https_addr = https_listener
        .local_addr()
        .context("listener has no address")?;
    let mqtt_addr = mqtt_listener
        .local_addr()
        .context("listener has no address")?;
    let amqp_addr = amqp_listener
        .local_addr()
        .context("listener has no address")?;
    let plain_addr = match &plain_listener {
        Some(l) => Some(l.local_addr().context("listener has no address")?),
        None => None,
    };

    let authenticator = Arc::new(Authenticator::new(vec![config.hostname.clone()]));
    let policies = Arc::new(hub_file.policies.clone());
    let mut mqtt_config = MqttConfig::new(
        hub.clone(),
        Arc::clone(&authenticator),
        Arc::clone(&policies),
    );
    mqtt_config.max_in_flight = config.mqtt_max_in_flight.into();
    let mqtt = MqttHead::new(mqtt_config);
    let amqp = AmqpHead::new(AmqpConfig::new(
        hub.clone(),
        Arc::clone(&authenticator),
        Arc::clone(&policies),
    ));

    let ws_mqtt = mqtt.clone();
    let ws_amqp = amqp.clone();
    let router = courier_http::router(courier_http::HttpConfig {
        host_name: config.hostname.clone(),
        hub: hub.clone(),
        authenticator,
        policies,
        version: env!("CARGO_PKG_VERSION"),
    })
    .merge(ws::routes(
        move |connection: WsConnection| {
            let head = ws_mqtt.clone();
            async move {
                let info = ConnectionInfo {
                    remote: connection.remote,
                    peer_certificate: connection.peer_certificate,
                    transport: Transport::WebSocket,
                };
                head.serve_connection(connection.stream, info).await;
            }
        },
        move |connection: WsConnection| {
            let head = ws_amqp.clone();
            async move {
                let info = courier_amqp::ConnectionInfo {
                    remote: connection.remote,
                    peer_certificate: connection.peer_certificate,
                    transport: courier_amqp::Transport::WebSocket,
                };
                head.serve_connection(connection.stream, info).await;
            }
        },
    ));

    // One signal stops every listener.
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let mut listeners: Vec<(&str, JoinHandle<std::io::Result<()>>)> = vec![
        (
            "HTTPS",
            tokio::spawn(https::serve_tls(
                https_listener,
                https_tls,
                router,
                config.max_connections,
                stopped(),
            )),
        ),
        (
            "MQTT",
            tokio::spawn(serve_mqtt(
                mqtt_listener,
                Tls::new(mqtt_tls),
                mqtt.clone(),
                Transport::Tls,
                config.max_connections,
                stopped(),
            )),
        ),
        (
            "AMQP",
            tokio::spawn(serve_amqp(
                amqp_listener,
                Tls::new(amqp_tls),
                amqp.clone(),
                config.max_connections,
                stopped(),
            )),
        ),
    ];
    if let Some(plain) = plain_listener {
        listeners.push((
            "MQTT plain",
            tokio::spawn(serve_mqtt(
                plain,
                PlainTcp,
                mqtt.clone(),
                Transport::Plain,
                config.max_connections,
                stopped(),
            )),
        ));
    }

    let run = RunFile {
        pid: std::process::id(),
        host_name: config.hostname.clone(),
        https_port: https_addr.port(),
        https_endpoint: format!("https://{}:{}", config.hostname, https_addr.port()),
        ca_path: tls_files.ca.as_deref().map(absolute),
        mqtt_port: Some(mqtt_addr.port()),
        amqp_port: Some(amqp_addr.port()),
    };
    data.write_run(&run).context("cannot write run.json")?;
    let addrs = Addrs {
        https: https_addr,
        mqtt: mqtt_addr,
        mqtt_plain: plain_addr,
        amqp: amqp_addr,
    };
    print_banner(&config, &data, &run, &addrs, &hub_file, &opened);

    wait_for_signal().await;
    info!("shutting down");
    // Stop accepting everywhere, then end the MQTT sessions (the listeners
    // give their connections a grace period to close), then the engine.
    stop_tx.send_replace(true);
    mqtt.shutdown();
    amqp.shutdown();
    for (what, task) in listeners {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "{what} listener ended with an error"),
            Err(e) => tracing::warn!(error = %e, "{what} listener task failed"),
        }
    }
    hub.shutdown().await;
    drop(hub);
    let _ = engine.await;
    data.remove_run().context("cannot remove run.json")?;
    info!("stopped");
    Ok(())
}

/// Serves MQTT connections accepted on `listener`. Connections are not cut
/// at the listener's stop: `MqttHead::shutdown` closes them.
async fn serve_mqtt<H: Handshake>(
    listener: TcpListener,
    handshake: H,
    head: MqttHead,
    transport: Transport,
    max_connections: usize,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handler = move |accepted: Accepted<H::Stream>| {
        let head = head.clone();
        let info = ConnectionInfo {
            remote: accepted.remote,
            peer_certificate: accepted.peer_certificate,
            transport,
        };
        async move { head.serve_connection(accepted.stream, info).await }
    };
    listener::serve(listener, handshake, handler, max_connections, stopped).await
}

/// Serves AMQP connections accepted on `listener` (TLS already unwrapped:
/// the SDKs start TLS at once, without AMQP's TLS header). Connections are
/// not cut at the listener's stop: `AmqpHead::shutdown` closes them.
async fn serve_amqp<H: Handshake>(
    listener: TcpListener,
    handshake: H,
    head: AmqpHead,
    max_connections: usize,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handler = move |accepted: Accepted<H::Stream>| {
        let head = head.clone();
        let info = courier_amqp::ConnectionInfo {
            remote: accepted.remote,
            peer_certificate: accepted.peer_certificate,
            transport: courier_amqp::Transport::Tls,
        };
        async move { head.serve_connection(accepted.stream, info).await }
    };
    listener::serve(listener, handshake, handler, max_connections, stopped).await
}

/// Raises the open-files limit (each connection is a file descriptor) and
/// warns when it still cannot hold a full listener.
fn check_open_files(max_connections: usize) {
    match crate::limits::raise_open_files() {
        Ok(limit) => {
            tracing::debug!(limit, "open files limit");
            // Room for the store's files, the listeners and a few HTTPS peers.
            let needed = u64::try_from(max_connections)
                .unwrap_or(u64::MAX)
                .saturating_add(256);
            if limit < needed {
                tracing::warn!(
                    "the open files limit ({limit}) is below --max-connections ({max_connections}) \
                     + 256: connections past about {} will be refused; raise the hard limit \
                     (ulimit -Hn, or LimitNOFILE= under systemd)",
                    limit.saturating_sub(256)
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
}

/// The addresses actually bound, for the banner.
struct Addrs {
    https: SocketAddr,
    mqtt: SocketAddr,
    mqtt_plain: Option<SocketAddr>,
    amqp: SocketAddr,
}

fn hub_settings(config: &Config) -> HubSettings {
    let l = &config.limits;
    let f = &config.feedback;
    HubSettings {
        hub_name: config
            .hostname
            .split('.')
            .next()
            .unwrap_or(&config.hostname)
            .to_owned(),
        limits: QueueLimits {
            max_queue_depth: l.max_queue_depth,
            max_message_size: u32::try_from(l.max_message_size).unwrap_or(u32::MAX),
            default_ttl: l.default_ttl,
            max_ttl: l.max_ttl,
            max_delivery_count: l.max_delivery_count,
            lock_timeout: l.lock_timeout,
        },
        delivery_count_mode: match l.delivery_count_mode {
            DeliveryCountMode::EveryDelivery => courier_core::DeliveryCountMode::EveryDelivery,
            DeliveryCountMode::AbandonOnly => courier_core::DeliveryCountMode::AbandonOnly,
        },
        feedback: FeedbackSettings {
            ttl: f.ttl,
            max_delivery_count: f.max_delivery_count,
            lock_timeout: f.lock_timeout,
            batch_window: f.batch_window,
            max_batch_records: f.max_batch_records,
        },
    }
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("COURIER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // A second init (tests running serve twice in one process) is harmless.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn absolute(p: &Path) -> std::path::PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[allow(clippy::print_stdout)] // The banner is the command's output.
fn print_banner(
    config: &Config,
    data: &DataDir,
    run: &RunFile,
    addrs: &Addrs,
    hub_file: &crate::datadir::HubFile,
    opened: &courier_hub::OpenStats,
) {
    println!(
        "Courier {} is serving hub '{}'",
        env!("CARGO_PKG_VERSION"),
        config.hostname
    );
    println!(
        "  HTTPS   {}   (listening on {})",
        run.https_endpoint, addrs.https
    );
    println!(
        "  MQTT    mqtts://{}:{}   (listening on {})",
        config.hostname,
        addrs.mqtt.port(),
        addrs.mqtt
    );
    println!(
        "  MQTT/WS wss://{}:{}{}",
        config.hostname,
        addrs.https.port(),
        ws::IOTHUB_WEBSOCKET_PATH
    );
    println!(
        "  AMQP    amqps://{}:{}   (listening on {})",
        config.hostname,
        addrs.amqp.port(),
        addrs.amqp
    );
    println!(
        "  AMQP/WS wss://{}:{}{}",
        config.hostname,
        addrs.https.port(),
        ws::IOTHUB_WEBSOCKET_PATH
    );
    if let Some(plain) = addrs.mqtt_plain {
        println!(
            "  MQTT    mqtt://{}:{}   (listening on {plain}; no TLS, development only)",
            config.hostname,
            plain.port()
        );
    }
    match &run.ca_path {
        Some(ca) => println!("  CA      {}   (trust this CA in clients)", ca.display()),
        None => println!("  TLS     certificate from --tls-cert"),
    }
    println!(
        "  Data    {}   ({} devices, {} queued messages, recovered in {} ms)",
        absolute(data.root()).display(),
        opened.devices,
        opened.queued_messages,
        opened.elapsed.as_millis()
    );
    if let Some(cs) = hub_file.owner_connection_string() {
        println!("  Owner connection string:\n    {cs}");
    }
    println!("Press Ctrl-C to stop.");
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
