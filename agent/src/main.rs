//! `heliostat-agent`: the device daemon. Only `--version` works until the agent issue lands.

fn main() {
    println!("heliostat-agent {}", heliostat_agent::VERSION);
}
