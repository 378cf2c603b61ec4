//! `logit-lens`: with no subcommand the desktop app; with a subcommand, the CLI.

fn main() -> std::process::ExitCode {
    lens_app::cli::main()
}
