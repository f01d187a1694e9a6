//! `courier hub …`

use anyhow::Context as _;

use super::{printer, service_client, Outcome};
use crate::cli::{ClientArgs, HubCommand};
use crate::output;

/// Runs a hub command.
pub(super) async fn run(args: &ClientArgs, command: &HubCommand) -> anyhow::Result<Outcome> {
    let (client, _) = service_client(args)?;
    match command {
        HubCommand::Info => {
            let info = client
                .hub_info()
                .await
                .context("cannot get the hub's info")?;
            printer(args).emit(&info, || output::hub_info_text(&info))?;
        }
    }
    Ok(Outcome::Success)
}
