//! `herald-bench`: the load generator's entry point. Everything it does lives in the library;
//! this file only parses the command line, raises the open-files limit, runs the scenarios and
//! prints one JSON line per scenario on stdout.

// The JSON lines are this program's output, and progress goes to stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use clap::Parser;
use herald_bench::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    // Built with the workspace, reqwest has rustls without a provider
    // (herald-shared's JWKS client): install ring before any client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match herald_bench::raise_open_files_limit() {
        Ok(limit) => eprintln!("herald-bench: open files limit {limit}"),
        Err(err) => eprintln!("herald-bench: cannot raise the open files limit: {err}"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("herald-bench: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(herald_bench::run(args, |line| println!("{line}")));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("herald-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}
