//! What each configuration of the benchmark loads: the lab manifests (Cellwall's policy with N
//! decoy rules) and the same filter for netfilter (iptables, ipset, nftables), loaded in the
//! lab's node namespace.

use super::PORT;
use std::io::Write;
use std::process::{Command, Stdio};

/// Decoy sources: 198.18.0.0/15 (benchmarking addresses), entries in tables, never traffic.
pub fn decoy(i: usize) -> String {
    format!("198.18.{}.{}/32", i / 250, i % 250)
}

/// `both`: the server's policy also isolates its egress (no egress rule: replies only).
pub fn manifests(net: u8, rules: usize, both: bool) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: b}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: client, namespace: b, labels: {{app: client}}}}\nspec: {{containers: [{{ports: [{{containerPort: 9}}]}}]}}\nstatus: {{podIP: 10.81.{net}.1}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: server, namespace: b, labels: {{app: server}}}}\nspec: {{containers: [{{ports: [{{containerPort: 80}}]}}]}}\nstatus: {{podIP: 10.81.{net}.2}}\n"
    );
    if rules > 0 {
        s.push_str("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: server-in, namespace: b}\nspec:\n  podSelector: {matchLabels: {app: server}}\n");
        if both {
            s.push_str("  policyTypes: [Ingress, Egress]\n");
        }
        s.push_str("  ingress:\n");
        for i in 0..rules - 1 {
            s.push_str(&format!(
                "  - from: [{{ipBlock: {{cidr: {}}}}}]\n    ports: [{{port: {PORT}}}]\n",
                decoy(i)
            ));
        }
        s.push_str(&format!("  - from: [{{podSelector: {{matchLabels: {{app: client}}}}}}]\n    ports: [{{port: {PORT}}}]\n"));
    }
    s
}

/// iptables-legacy-restore input: conntrack first, then `body`; with no rules nothing is
/// enforced (default accept), as with Cellwall and no policy.
pub fn iptables_table(rules: usize, body: &str) -> String {
    let policy = if rules > 0 { "DROP" } else { "ACCEPT" };
    format!(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD {policy} [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n{body}COMMIT\n"
    )
}

pub fn iptables_rules(net: u8, rules: usize) -> String {
    let mut body = String::new();
    if rules > 0 {
        for i in 0..rules - 1 {
            body.push_str(&format!(
                "-A FORWARD -s {} -d 10.81.{net}.2/32 -p tcp --dport {PORT} -j ACCEPT\n",
                decoy(i)
            ));
        }
        body.push_str(&format!(
            "-A FORWARD -s 10.81.{net}.1/32 -d 10.81.{net}.2/32 -p tcp --dport {PORT} -j ACCEPT\n"
        ));
    }
    iptables_table(rules, &body)
}

/// (`ipset restore` input, iptables-legacy-restore input).
pub fn ipset_rules(net: u8, rules: usize) -> (String, String) {
    let mut set = String::from("create cwallow hash:net family inet maxelem 65536\n");
    if rules > 0 {
        for i in 0..rules - 1 {
            set.push_str(&format!("add cwallow {}\n", decoy(i)));
        }
        set.push_str(&format!("add cwallow 10.81.{net}.1/32\n"));
    }
    let rule = format!(
        "-A FORWARD -d 10.81.{net}.2/32 -p tcp --dport {PORT} -m set --match-set cwallow src -j ACCEPT\n"
    );
    (set, iptables_table(rules, &rule))
}

pub fn nft_rules(net: u8, rules: usize) -> String {
    let mut elements: Vec<String> = (0..rules.saturating_sub(1)).map(decoy).collect();
    if rules > 0 {
        elements.push(format!("10.81.{net}.1/32"));
    }
    let elements = if elements.is_empty() {
        String::new()
    } else {
        format!(" elements = {{ {} }};", elements.join(", "))
    };
    let policy = if rules > 0 { "drop" } else { "accept" };
    format!(
        "table ip cwbench {{\n  set allow {{ type ipv4_addr; flags interval;{elements} }}\n  \
         chain forward {{\n    type filter hook forward priority filter; policy {policy};\n    \
         ct state established,related accept\n    \
         ip daddr 10.81.{net}.2 tcp dport {PORT} ip saddr @allow accept\n  }}\n}}\n"
    )
}

/// Runs `cmd` inside the lab's node namespace with `input` on stdin.
pub fn in_node(lab: &str, cmd: &[&str], input: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &format!("cw-{lab}-node")])
        .args(cmd)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/setup.sh installs it)", cmd[0]));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{} in lab {lab}: {}",
        cmd.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
