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
    // Shutting down: counters summed in process and queued events go out first (bounded).
    if tokio::time::timeout(std::time::Duration::from_secs(5), router.drain_usage())
        .await
        .is_err()
    {
        log::warn!("usage not fully drained within 5 s at shutdown (the spool keeps the rest)");
    }
    served
}
