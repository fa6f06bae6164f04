//! A device behind its own network link: a Linux network namespace joined to the host by a
//! veth pair the test makes (and removes when dropped), so that a partition, loss, delay or
//! reordering hits that device's traffic alone. Traffic only ever flows between the
//! namespace and the host end of its pair; the broker listens on the host end's address.
//! Needs root (CAP_NET_ADMIN), `ip` and `tc` (iproute2).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A namespace, its veth pair and their addresses.
pub struct Netns {
    /// The namespace's name (for `ip netns exec`).
    pub name: String,
    /// The host end's interface.
    pub host_if: String,
    /// The namespace end's interface.
    pub ns_if: String,
    /// The host end's address (the broker's, as the device sees it).
    pub host_ip: String,
    /// The device's address.
    pub ns_ip: String,
}

/// Runs `ip`/`tc` with `args`; an error names the command and what it said.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("running {program}: {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Whether this process may make namespaces and links (root with CAP_NET_ADMIN).
pub fn available() -> bool {
    let probe = format!("hilprobe{}", std::process::id());
    let ok = run("ip", &["netns", "add", &probe]).is_ok();
    if ok {
        let _ = run("ip", &["netns", "del", &probe]);
    }
    ok
}

impl Netns {
    /// Makes a namespace with its link up: the host end `10.X.Y.1/30`, the device `.2`.
    pub fn create() -> anyhow::Result<Netns> {
        let pid = std::process::id();
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("hil{pid}-{k}");
        let tag = format!("{}x{k}", pid % 100_000);
        let (host_if, ns_if) = (format!("h{tag}a"), format!("h{tag}b"));
        // 10.(200 + pid % 50).(k / 64).(4 * (k % 64) + 1|2): one /30 per link.
        let (b, c, d) = (200 + pid % 50, k / 64, 4 * (k % 64));
        let host_ip = format!("10.{b}.{c}.{}", d + 1);
        let ns_ip = format!("10.{b}.{c}.{}", d + 2);
        run("ip", &["netns", "add", &name])?;
        let ns = Netns {
            name,
            host_if,
            ns_if,
            host_ip,
            ns_ip,
        };
        ns.setup()?;
        Ok(ns)
    }

    fn setup(&self) -> anyhow::Result<()> {
        let (n, h, d) = (&self.name, &self.host_if, &self.ns_if);
        run("ip", &["link", "add", h, "type", "veth", "peer", "name", d])?;
        run("ip", &["link", "set", d, "netns", n])?;
        run(
            "ip",
            &["addr", "add", &format!("{}/30", self.host_ip), "dev", h],
        )?;
        run("ip", &["link", "set", h, "up"])?;
        let ns_addr = format!("{}/30", self.ns_ip);
        for args in [
            vec!["addr", "add", ns_addr.as_str(), "dev", d],
            vec!["link", "set", d, "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            let mut full = vec!["netns", "exec", n, "ip"];
            full.extend(args);
            run("ip", &full)?;
        }
        Ok(())
    }

    /// Cuts the link (both directions drop everything) or restores it.
    pub fn partition(&self, cut: bool) -> anyhow::Result<()> {
        if cut {
            self.netem(&["loss", "100%"])
        } else {
            self.clear()
        }
    }

    /// Applies `tc netem` options (e.g. `["delay", "80ms", "20ms", "loss", "5%", "reorder",
    /// "25%"]`) to both directions of the link.
    pub fn netem(&self, options: &[&str]) -> anyhow::Result<()> {
        let mut host = vec!["qdisc", "replace", "dev", &self.host_if, "root", "netem"];
        host.extend(options);
        run("tc", &host)?;
        let mut inside = vec![
            "netns",
            "exec",
            &self.name,
            "tc",
            "qdisc",
            "replace",
            "dev",
            &self.ns_if,
            "root",
            "netem",
        ];
        inside.extend(options);
        run("ip", &inside)
    }

    /// Removes any netem (a healthy link).
    pub fn clear(&self) -> anyhow::Result<()> {
        let _ = run("tc", &["qdisc", "del", "dev", &self.host_if, "root"]);
        let _ = run(
            "ip",
            &[
                "netns",
                "exec",
                &self.name,
                "tc",
                "qdisc",
                "del",
                "dev",
                &self.ns_if,
                "root",
            ],
        );
        Ok(())
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn exec_prefix(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &self.host_if]);
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}
