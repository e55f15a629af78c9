use clap::Parser;

fn main() -> std::process::ExitCode {
    agent::cli::dispatch(agent::cli::Cli::parse())
}
