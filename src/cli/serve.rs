//! `claude-relay serve`: run the service until SIGINT / SIGTERM.

use crate::app::Application;
use crate::config::Config;

pub async fn run(config: Config) -> std::io::Result<()> {
    let app = Application::build(config.clone())?;
    log::info!(
        "claude-relay {} listening on {}:{} (mode {})",
        env!("CARGO_PKG_VERSION"),
        config.host,
        app.port(),
        config.mode.as_str()
    );
    app.run_until_stopped().await
}
