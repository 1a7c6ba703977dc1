//! The `larder-server` binary: configuration, logging, then [`larder_server::run`].

use std::io::IsTerminal;

use clap::Parser;
use larder_server::config::Settings;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let settings = Settings::parse();
    let check_only = settings.check_config;
    let config = match settings.with_file().and_then(Settings::resolve) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("larder-server: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if check_only {
        return match larder_server::check(&config) {
            Ok(summary) => {
                println!("larder-server: configuration OK: {summary}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("larder-server: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|e| {
        eprintln!(
            "larder-server: setting log = {:?}: {e}; using \"info\"",
            config.log
        );
        EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match actix_web::rt::System::new().block_on(larder_server::run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("larder-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
