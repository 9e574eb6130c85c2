//! `claude-relay serve`: run the service until SIGINT / SIGTERM.

use crate::app::Application;
use crate::config::Config;

pub async fn run(config: Config) -> std::io::Result<()> {
    let app = Application::start(config.clone()).await?;
    log::info!(
        "claude-relay {} listening on {}:{} (mode {})",
        env!("CARGO_PKG_VERSION"),
        config.host,
        app.port(),
        config.mode.as_str()
    );
    let router = app.actors().router.clone();
    let served = app.run_until_stopped().await;
    // Shutting down: counters summed in process and journaled events go out first
    // (bounded); what is left stays in the journal for the next start.
    if !router.drain_usage(std::time::Duration::from_secs(5)).await {
        log::warn!("usage events left in the journal; they are archived after the next start");
    }
    served
}
