//! `shardcast-tune`: doctor, apply and profile for shardcast hosts.

fn main() {
    std::process::exit(shardcast_tuning::cli_main(std::env::args().collect()));
}
