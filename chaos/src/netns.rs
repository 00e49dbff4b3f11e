//! A network namespace joined to the host by a veth pair, and iptables rules inside it:
//! the collector runs in the namespace (see the launcher in `chaos/build.rs`), so rules
//! there cut, thin or heal its path to NATS on the host without touching anything else.
//!
//! Addresses are link-local (169.254.x.y/30), on links that exist only for the test;
//! the namespace, its veth pair and every rule in it are deleted when the guard drops,
//! also when the scenario panics.

use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether namespaces and iptables can be used here; the reason when not.
pub fn available() -> Result<(), String> {
    if !is_root() {
        return Err("needs root and ip netns".into());
    }
    for tool in ["ip", "iptables"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!("needs root and ip netns: {tool} is not installed"));
        }
    }
    let probe = format!("chaos-probe-{}", std::process::id());
    let added = run("ip", &["netns", "add", &probe]);
    let _ = run("ip", &["netns", "del", &probe]);
    match added {
        Ok(_) => Ok(()),
        Err(error) => Err(format!("needs root and ip netns: {error}")),
    }
}

/// Whether this process runs with effective uid 0 (from /proc/self/status).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
            .unwrap_or(false)
    })
}

/// Runs a command; its output, or an error naming it with its stderr.
fn run(program: &str, args: &[&str]) -> Result<Output, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program} {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A namespace named `chaos-<pid>-<n>`, linked to the host: the host end has
/// [`Netns::host_ip`], the namespace end [`Netns::ns_ip`].
pub struct Netns {
    pub name: String,
    host_if: String,
    pub host_ip: Ipv4Addr,
    pub ns_ip: Ipv4Addr,
}

impl Netns {
    /// Creates the namespace and its link; panics (after cleaning up) on failure.
    pub fn create() -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("chaos-{pid}-{n}");
        // One /30 per namespace, from the pid and a counter, in 169.254.0.0/16.
        let slot = (pid.wrapping_mul(7) + n) % 16_000;
        let base = u32::from(Ipv4Addr::new(169, 254, 0, 0)) + 4 * (slot + 64);
        let netns = Netns {
            name,
            host_if: format!("ch{}h{n}", pid % 1_000_000),
            host_ip: Ipv4Addr::from(base + 1),
            ns_ip: Ipv4Addr::from(base + 2),
        };
        let ns_if = format!("ch{}n{n}", pid % 1_000_000);
        let _ = run("ip", &["netns", "del", &netns.name]);
        let _ = run("ip", &["link", "del", &netns.host_if]);
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), netns.name.clone()],
            vec![
                "link".into(),
                "add".into(),
                netns.host_if.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                ns_if.clone(),
            ],
            vec!["link".into(), "set".into(), ns_if.clone(), "netns".into(), netns.name.clone()],
            vec![
                "addr".into(),
                "add".into(),
                format!("{}/30", netns.host_ip),
                "dev".into(),
                netns.host_if.clone(),
            ],
            vec!["link".into(), "set".into(), netns.host_if.clone(), "up".into()],
        ];
        for step in steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            if let Err(error) = run("ip", &args) {
                drop(netns);
                panic!("network namespace set-up: {error}");
            }
        }
        for step in [
            vec!["ip", "addr", "add", &format!("{}/30", netns.ns_ip), "dev", &ns_if],
            vec!["ip", "link", "set", &ns_if, "up"],
            vec!["ip", "link", "set", "lo", "up"],
        ] {
            if let Err(error) = netns.exec(&step) {
                drop(netns);
                panic!("network namespace set-up: {error}");
            }
        }
        netns
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, command: &[&str]) -> Result<Output, String> {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(command);
        run("ip", &args)
    }

    /// Adds an iptables rule in the namespace (`-A CHAIN ...`); panics on failure.
    pub fn iptables(&self, rule: &[&str]) {
        let mut command = vec!["iptables", "-w"];
        command.extend_from_slice(rule);
        self.exec(&command).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Partition: every packet to and from `port` on the host end is dropped (no RST,
    /// no ICMP: a silent black hole, as a cut link or a dead switch).
    pub fn partition(&self, port: u16) {
        self.drop_tcp(port, None);
    }

    /// Loss: each packet to and from `port` on the host end is dropped with
    /// `probability` (`iptables -m statistic --mode random`).
    pub fn loss(&self, port: u16, probability: f64) {
        self.drop_tcp(port, Some(probability));
    }

    fn drop_tcp(&self, port: u16, probability: Option<f64>) {
        let port = port.to_string();
        let host = self.host_ip.to_string();
        let p = probability.map(|p| format!("{p:.4}"));
        for (chain, addr_flag, port_flag) in
            [("OUTPUT", "-d", "--dport"), ("INPUT", "-s", "--sport")]
        {
            let mut rule = vec!["-A", chain, "-p", "tcp", addr_flag, &host, port_flag, &port];
            if let Some(p) = p.as_deref() {
                rule.extend_from_slice(&[
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    p,
                ]);
            }
            rule.extend_from_slice(&["-j", "DROP"]);
            self.iptables(&rule);
        }
    }

    /// Heal: every rule in the namespace is deleted.
    pub fn heal(&self) {
        self.iptables(&["-F", "INPUT"]);
        self.iptables(&["-F", "OUTPUT"]);
    }

    /// Packets dropped by the namespace's rules so far (both chains).
    pub fn dropped_packets(&self) -> u64 {
        let mut total = 0;
        for chain in ["INPUT", "OUTPUT"] {
            let Ok(output) = self.exec(&["iptables", "-w", "-L", chain, "-v", "-n", "-x"]) else {
                continue;
            };
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            total += text
                .lines()
                .filter(|line| line.contains("DROP"))
                .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
                .sum::<u64>();
        }
        total
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its rules and its veth end, which takes the
        // host end with it; the explicit link delete covers a half-made set-up.
        let _ = run("ip", &["netns", "del", &self.name]);
        let _ = run("ip", &["link", "del", &self.host_if]);
    }
}
