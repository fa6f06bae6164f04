//! `fleet-controller`: only `--version` works until the controller issue lands.

fn main() {
    println!("fleet-controller {}", fleet_controller::VERSION);
}
