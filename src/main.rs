use clap::Parser;
use sidecar_order::cli::{Cli, Command, exit_code, run_analyze};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Analyze(args) => match run_analyze(&args).await {
            Ok((analyses, text)) => {
                print!("{text}");
                ExitCode::from(exit_code(&analyses))
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Crd => {
            print!("{}", sidecar_order::crd::crd_yaml());
            ExitCode::SUCCESS
        }
    }
}
