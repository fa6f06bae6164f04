//! The faults a test may ask a job's worker for (`HELIOSTAT_WORKER_FAULT`): stand-ins for
//! a kernel that hangs or faults, a job that reaches for the key or the network, and a
//! device that returns wrong results, on machines without a GPU. Nothing sets the
//! variable but the tests.

use std::time::Duration;

/// Faults the tests ask a worker for (`HELIOSTAT_WORKER_FAULT`, `;`-separated), armed
/// before the sandbox (which would keep the worker from its file) and fired in its chunks:
/// - `once:FILE`: the next worker to find FILE removes it and then hangs or aborts in its
///   chunk, as FILE says (`hang` or `abort`): how the tests stand in for a kernel that
///   never ends or faults, on machines without a GPU;
/// - `read:PATH`: every chunk tries to read PATH and fails if it can, and
///   `connect:HOST:PORT` to connect there: how the tests stand in for a job that goes
///   after the device key or out to the network;
/// - `corrupt`: the first value of the first output is changed before it is sent (the
///   receipt then signs the wrong output): how the tests stand in for a device that
///   returns wrong results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TestFault {
    Hang,
    Abort,
    Read(String),
    Connect(String),
    Corrupt,
}

impl TestFault {
    pub(super) fn arm() -> Vec<TestFault> {
        let Ok(spec) = std::env::var("HELIOSTAT_WORKER_FAULT") else {
            return Vec::new();
        };
        spec.split(';').filter_map(TestFault::arm_one).collect()
    }

    fn arm_one(spec: &str) -> Option<TestFault> {
        if let Some(path) = spec.strip_prefix("read:") {
            return Some(TestFault::Read(path.to_string()));
        }
        if let Some(addr) = spec.strip_prefix("connect:") {
            return Some(TestFault::Connect(addr.to_string()));
        }
        if spec == "corrupt" {
            return Some(TestFault::Corrupt);
        }
        let path = spec.strip_prefix("once:")?;
        let what = std::fs::read_to_string(path).ok()?;
        std::fs::remove_file(path).ok()?;
        match what.trim() {
            "hang" => Some(TestFault::Hang),
            "abort" => Some(TestFault::Abort),
            _ => None,
        }
    }

    pub(super) fn fire(faults: &[TestFault]) -> Result<(), String> {
        for f in faults {
            match f {
                TestFault::Hang => loop {
                    std::thread::sleep(Duration::from_secs(3600));
                },
                TestFault::Abort => std::process::abort(),
                TestFault::Read(path) => {
                    if let Ok(b) = std::fs::read(path) {
                        return Err(format!("the job read {path} ({} bytes)", b.len()));
                    }
                }
                TestFault::Connect(addr) => {
                    if std::net::TcpStream::connect(addr.as_str()).is_ok() {
                        return Err(format!("the job connected to {addr}"));
                    }
                }
                TestFault::Corrupt => {}
            }
        }
        Ok(())
    }
}
