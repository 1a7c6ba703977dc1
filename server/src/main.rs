//! The `larder-server` binary: configuration, logging, then [`larder_server::run`].

use larder_server::config::{CONVENTION, SECTIONS, Settings};

fn main() -> std::process::ExitCode {
    let settings: Settings = larder_store::cli::parse_with_sections(&CONVENTION, SECTIONS);
    let check_only = settings.check_config;
    let config = match settings.resolve() {
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
    larder_store::cli::init_logging(&CONVENTION, &config.log);
    match actix_web::rt::System::new().block_on(larder_server::run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("larder-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
