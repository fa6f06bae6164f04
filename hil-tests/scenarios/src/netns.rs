//! A device behind its own network link: a Linux network namespace joined to the host by a
//! veth pair the test makes (and removes when dropped), so that a partition, loss, delay or
//! reordering hits that device's traffic alone (tc netem where the kernel has it; nftables
//! and tbf where it has not). Traffic only ever flows between the
//! namespace and the host end of its pair; the broker listens on the host end's address.
//! Needs root (CAP_NET_ADMIN), `ip` and `tc` (iproute2) and `nft` (nftables).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// How a link is degraded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Impairment {
    /// Packets lost, per cent, each direction.
    pub loss_pct: u32,
    /// Added delay and its jitter, milliseconds (netem only).
    pub delay_ms: u32,
    pub jitter_ms: u32,
    /// Packets sent out of order, per cent (netem only, with a delay).
    pub reorder_pct: u32,
    /// Bandwidth cap, kbit/s.
    pub rate_kbit: Option<u32>,
}

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

    /// Cuts the link (nftables in the namespace drops everything crossing it, both ways)
    /// or restores it (removing every impairment).
    pub fn partition(&self, cut: bool) -> anyhow::Result<()> {
        if cut {
            self.nft_drop(None)
        } else {
            self.clear()
        }
    }

    /// nftables rules in the namespace that drop packets crossing the link both ways: all of
    /// them, or `per_mille` of them at random (`numgen random`).
    fn nft_drop(&self, per_mille: Option<u32>) -> anyhow::Result<()> {
        let _ = self.nft("delete table inet hil");
        self.nft("add table inet hil")?;
        self.nft("add chain inet hil in { type filter hook input priority 0 ; }")?;
        self.nft("add chain inet hil out { type filter hook output priority 0 ; }")?;
        let pick = per_mille.map_or(String::new(), |n| format!("numgen random mod 1000 < {n} "));
        self.nft(&format!(
            "add rule inet hil in iifname {} {pick}counter drop",
            self.ns_if
        ))?;
        self.nft(&format!(
            "add rule inet hil out oifname {} {pick}counter drop",
            self.ns_if
        ))
    }

    /// Packets the namespace's nftables rules have dropped since they were made (0 when
    /// there are none).
    pub fn dropped(&self) -> u64 {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.name, "nft", "list", "table", "inet", "hil",
            ])
            .output();
        let text = out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        text.split("counter packets ")
            .skip(1)
            .filter_map(|t| t.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    fn nft(&self, command: &str) -> anyhow::Result<()> {
        run("ip", &["netns", "exec", &self.name, "nft", command])
    }

    /// Degrades the link both ways. With the kernel's netem (`sch_netem`) every field
    /// applies; without it (this project's CI kernel has none) loss is applied with
    /// nftables, the rate with `tbf`, and delay and reordering cannot be: the answer says
    /// what was applied.
    pub fn impair(&self, imp: &Impairment) -> anyhow::Result<String> {
        self.clear()?;
        let mut netem: Vec<String> = vec![
            "delay".into(),
            format!("{}ms", imp.delay_ms),
            format!("{}ms", imp.jitter_ms),
        ];
        if imp.loss_pct > 0 {
            netem.extend(["loss".into(), format!("{}%", imp.loss_pct)]);
        }
        if imp.reorder_pct > 0 && imp.delay_ms > 0 {
            netem.extend(["reorder".into(), format!("{}%", imp.reorder_pct)]);
        }
        if let Some(kbit) = imp.rate_kbit {
            netem.extend(["rate".into(), format!("{kbit}kbit")]);
        }
        let opts: Vec<&str> = netem.iter().map(String::as_str).collect();
        match self.netem(&opts) {
            Ok(()) => return Ok(format!("netem {}", netem.join(" "))),
            Err(e) if e.to_string().contains("qdisc kind is unknown") => {}
            Err(e) => return Err(e),
        }
        let mut applied = Vec::new();
        if imp.loss_pct > 0 {
            self.nft_drop(Some(imp.loss_pct * 10))?;
            applied.push(format!("nftables loss {}%", imp.loss_pct));
        }
        if let Some(kbit) = imp.rate_kbit {
            let rate = format!("{kbit}kbit");
            run(
                "tc",
                &[
                    "qdisc",
                    "replace",
                    "dev",
                    &self.host_if,
                    "root",
                    "tbf",
                    "rate",
                    &rate,
                    "burst",
                    "4kb",
                    "latency",
                    "2s",
                ],
            )?;
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.name,
                    "tc",
                    "qdisc",
                    "replace",
                    "dev",
                    &self.ns_if,
                    "root",
                    "tbf",
                    "rate",
                    &rate,
                    "burst",
                    "4kb",
                    "latency",
                    "2s",
                ],
            )?;
            applied.push(format!("tbf rate {rate}"));
        }
        if imp.delay_ms > 0 || imp.reorder_pct > 0 {
            applied.push("no delay or reordering (the kernel has no sch_netem)".into());
        }
        Ok(applied.join(", "))
    }

    /// Applies `tc netem` options (e.g. `["delay", "80ms", "20ms", "loss", "5%"]`) to both
    /// directions of the link.
    fn netem(&self, options: &[&str]) -> anyhow::Result<()> {
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

    /// Removes every impairment (a healthy link).
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
        let _ = self.nft("delete table inet hil");
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
