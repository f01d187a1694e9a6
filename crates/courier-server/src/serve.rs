//! `courier serve`: wires configuration, data directory, TLS, the store, the
//! engine and the heads together, runs until Ctrl-C or SIGTERM, and shuts
//! down in order (stop accepting, finish requests, flush the engine).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use courier_auth::Authenticator;
use courier_core::{FeedbackSettings, HubSettings, QueueLimits};
use courier_hub::{Hub, HubOptions, SystemClock};
use courier_store::{WalOptions, WalStore};
use tracing::info;

use crate::config::{Config, DeliveryCountMode, TlsSource};
use crate::datadir::{DataDir, RunFile};
use crate::https::{self, HTTPS_ALPN};
use crate::tls::{self, TlsFiles};
use crate::ServeArgs;

/// Runs a hub until Ctrl-C or SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::resolve(&args).context("invalid configuration")?;
    init_tracing(&config.log_level);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
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
    let tls_config = tls::server_config(&tls_files.cert, &tls_files.key, HTTPS_ALPN)
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

    let listener = https::bind(SocketAddr::new(config.bind, config.https_port), "HTTPS").await?;
    let https_addr = listener.local_addr().context("listener has no address")?;
    let router = courier_http::router(courier_http::HttpConfig {
        host_name: config.hostname.clone(),
        hub: hub.clone(),
        authenticator: Arc::new(Authenticator::new(vec![config.hostname.clone()])),
        policies: Arc::new(hub_file.policies.clone()),
        version: env!("CARGO_PKG_VERSION"),
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(https::serve_tls(listener, tls_config, router, async move {
        let _ = stop_rx.await;
    }));

    let run = RunFile {
        pid: std::process::id(),
        host_name: config.hostname.clone(),
        https_port: https_addr.port(),
        https_endpoint: format!("https://{}:{}", config.hostname, https_addr.port()),
        ca_path: tls_files.ca.as_deref().map(absolute),
    };
    data.write_run(&run).context("cannot write run.json")?;
    print_banner(&config, &data, &run, https_addr, &hub_file, &opened);

    wait_for_signal().await;
    info!("shutting down");
    let _ = stop_tx.send(());
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTPS listener ended with an error"),
        Err(e) => tracing::warn!(error = %e, "HTTPS listener task failed"),
    }
    hub.shutdown().await;
    drop(hub);
    let _ = engine.await;
    data.remove_run().context("cannot remove run.json")?;
    info!("stopped");
    Ok(())
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
    https_addr: SocketAddr,
    hub_file: &crate::datadir::HubFile,
    opened: &courier_hub::OpenStats,
) {
    println!(
        "Courier {} is serving hub '{}'",
        env!("CARGO_PKG_VERSION"),
        config.hostname
    );
    println!(
        "  HTTPS   {}   (listening on {https_addr})",
        run.https_endpoint
    );
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
