use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    genq::telemetry::init();
    match genq::cli::main().await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
