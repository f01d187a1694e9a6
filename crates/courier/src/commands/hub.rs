//! `courier hub …`: Courier's own hub-level API (`GET /courier/hub`), which
//! IoT Hub does not have and so the SDK does not cover.

use anyhow::Context as _;
use courier_client::HubError;

use super::{printer, Outcome};
use crate::api::HubInfo;
use crate::cli::{ClientArgs, HubCommand};
use crate::output;
use crate::target::Target;

/// Time allowed for the request.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs a hub command.
pub(super) async fn run(args: &ClientArgs, command: &HubCommand) -> anyhow::Result<Outcome> {
    match command {
        HubCommand::Info => {
            let target = Target::from_args(args, None)?;
            let info = hub_info(&target)
                .await
                .context("cannot get the hub's info")?;
            printer(args).emit(&info, || output::hub_info_text(&info))?;
        }
    }
    Ok(Outcome::Success)
}

async fn hub_info(target: &Target) -> anyhow::Result<HubInfo> {
    let pem = std::fs::read(&target.ca_path)
        .with_context(|| format!("cannot read the CA file {}", target.ca_path.display()))?;
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .timeout(REQUEST_TIMEOUT);
    for certificate in reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("{} holds no PEM certificate", target.ca_path.display()))?
    {
        builder = builder.add_root_certificate(certificate);
    }
    let http = builder.build().context("cannot set up the HTTPS client")?;
    let mut url = target.endpoint.clone();
    url.set_path("/courier/hub");
    let response = http
        .get(url.clone())
        .header("authorization", target.authorization()?)
        .send()
        .await
        .with_context(|| format!("no answer from the hub at {url}"))?;
    let status = response.status().as_u16();
    if !response.status().is_success() {
        let header = response
            .headers()
            .get("iothub-errorcode")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.unwrap_or_default();
        return Err(HubError::from_http_response(status, header.as_deref(), &body).into());
    }
    response
        .json()
        .await
        .with_context(|| format!("the hub's answer to {url} is not its hub info JSON"))
}
