use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match genq::cli::main().await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
