use sidecar_order::cli::{
    Command, ConformanceOutput, LogFormat, exit_code, parse, run_analyze, run_show,
};
use std::process::ExitCode;

// The image's allocator; its options and why: controller/memory.rs.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Plain => logs.init(),
    }
}

// One thread: the controller's work is many small messages (watch events,
// writes). With a worker thread per core, the run loop (on the main
// thread) handed each one to a worker: a profile of a 5,000-pod take-in
// (README, "One tokio thread again") found 22 % of the CPU in the kernel's
// task switches.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match parse().command {
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
        Command::Show(args) => match run_show(&args).await {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Conformance(args) => {
            use sidecar_order::conformance::{exit_code, output, runner};
            let progress = |s: &str| eprintln!("conformance: {s}");
            match runner::run(&args.options(), &progress).await {
                Ok(run) => {
                    print!(
                        "{}",
                        match args.output {
                            ConformanceOutput::Table => output::table(&run),
                            ConformanceOutput::Json => output::json(&run),
                            ConformanceOutput::Junit => output::junit(&run),
                        }
                    );
                    ExitCode::from(exit_code(&run.rows))
                }
                Err(e @ runner::RunError::Interrupted(_)) => {
                    eprintln!("error: {e}");
                    ExitCode::from(130)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Crd => {
            print!("{}", sidecar_order::crd::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            init_logs(args.log_format);
            let client = kube::Client::try_default().await;
            match sidecar_order::controller::run::run(client, args.settings()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
