//! `logit-lens`: with no arguments the desktop app; with a subcommand, the CLI.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
