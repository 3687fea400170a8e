//! The `parkguard` binary: parses the command line, starts logging and hands the command to
//! `cli`, which does the work through the library and returns the exit code.

use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    let cli = match cli::Cli::parse_args() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    cli::init_logging(cli.log_json);
    cli.command.run()
}
