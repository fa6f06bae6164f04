//! The service manager's notification protocol (`sd_notify(3)`), spoken directly: under
//! systemd with `Type=notify` the agent says `READY=1` once its outbox, chain state and
//! sources are open, feeds the watchdog (`WATCHDOG=1`) from its meter loop at half the
//! service's `WatchdogSec`, so a loop that hangs gets the agent restarted, and says
//! `STOPPING=1` on its way out. Without `NOTIFY_SOCKET` (started by hand, in a test)
//! nothing is sent.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Where and how often to notify.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, Target)>,
    /// How often the watchdog wants a ping (half its timeout); `None`: no watchdog.
    watchdog_every: Option<Duration>,
    last_ping_ms: u64,
}

#[derive(Debug, Clone)]
enum Target {
    Path(PathBuf),
    /// A Linux abstract socket (`NOTIFY_SOCKET=@name`).
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From the environment the service manager set: `NOTIFY_SOCKET`, and `WATCHDOG_USEC`
    /// (honoured only when `WATCHDOG_PID` is unset or this process's).
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").map(PathBuf::from);
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|p| p.trim() == std::process::id().to_string());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            .map(Duration::from_micros);
        Notifier::new(socket, watchdog)
    }

    /// To the socket at `socket` (`@name`: abstract), with a watchdog of `watchdog`.
    pub fn new(socket: Option<PathBuf>, watchdog: Option<Duration>) -> Notifier {
        let socket = socket.and_then(|p| {
            let text = p.to_string_lossy();
            let target = match text.strip_prefix('@') {
                Some(name) => Target::Abstract(name.as_bytes().to_vec()),
                None => Target::Path(p.clone()),
            };
            match UnixDatagram::unbound() {
                Ok(s) => Some((s, target)),
                Err(e) => {
                    tracing::warn!(error = %e, "no socket to notify the service manager");
                    None
                }
            }
        });
        Notifier {
            socket,
            watchdog_every: watchdog.map(|w| w / 2),
            last_ping_ms: 0,
        }
    }

    /// Sends `state` (`READY=1`, `STATUS=...`, newline-separated); a failure is logged once
    /// per call and otherwise ignored (the agent runs on without a service manager).
    pub fn notify(&self, state: &str) {
        let Some((socket, target)) = &self.socket else {
            return;
        };
        let sent = match target {
            Target::Path(p) => socket.send_to(state.as_bytes(), p),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|a| socket.send_to_addr(state.as_bytes(), &a))
            }
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "could not notify the service manager");
        }
    }

    /// Feeds the watchdog when a ping is due at `now_ms` (call it from the main loop).
    pub fn tick(&mut self, now_ms: u64) {
        let Some(every) = self.watchdog_every else {
            return;
        };
        if now_ms.saturating_sub(self.last_ping_ms) >= every.as_millis() as u64 {
            self.notify("WATCHDOG=1");
            self.last_ping_ms = now_ms;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_and_watchdog_pings_reach_the_socket_at_half_the_timeout() {
        let dir = std::env::temp_dir().join(format!("sd-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let manager = UnixDatagram::bind(&path).unwrap();
        manager.set_nonblocking(true).unwrap();
        let mut n = Notifier::new(Some(path.clone()), Some(Duration::from_secs(10)));
        n.notify("READY=1");
        n.tick(10_000);
        n.tick(12_000); // 2 s later: not yet (every 5 s)
        n.tick(15_000);
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(k) = manager.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..k]).into_owned());
        }
        assert_eq!(got, ["READY=1", "WATCHDOG=1", "WATCHDOG=1"]);
        // No socket: nothing sent, nothing fails.
        let mut quiet = Notifier::new(None, Some(Duration::from_secs(1)));
        quiet.notify("READY=1");
        quiet.tick(5_000);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
