//! The `shardcast-loadgen` command (see docs/loadgen.md).

use std::process::ExitCode;

use clap::Parser;
use shardcast_loadgen::{procs, run, svg, Opts};

fn main() -> ExitCode {
    let opts = Opts::parse();
    let plan = match opts.plan() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("shardcast-loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    if plan.opts.worker_index.is_some() {
        return ExitCode::from(procs::worker_main(plan) as u8);
    }
    let exe = std::env::current_exe().ok();
    let report = match run(&plan, exe.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shardcast-loadgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.summary());
    if let Some(path) = &plan.opts.json {
        let text = serde_json::to_string_pretty(&report).expect("report serializes");
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("shardcast-loadgen: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if let Some(path) = &plan.opts.svg {
        if let Err(e) = svg::write(&report, path) {
            eprintln!("shardcast-loadgen: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
