//! The forms names and addresses from outside must have (Kubernetes' own rules), checked before
//! anything an outside party sends is used, stored or logged.

use std::net::IpAddr;

/// A DNS-1123 label: 1-63 of a-z, 0-9, '-', starting and ending alphanumeric (namespaces).
pub fn dns_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && dns_chars(s, false)
}

/// A DNS-1123 subdomain: 1-253 of a-z, 0-9, '-', '.', starting and ending alphanumeric (pod
/// and host names).
pub fn dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && dns_chars(s, true)
}

fn dns_chars(s: &str, dots: bool) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// `namespace/name` with a valid namespace and name; the namespace may be a watched
/// cluster's (`CLUSTER:namespace`).
pub fn workload_key(s: &str) -> bool {
    s.split_once('/').is_some_and(|(ns, name)| {
        cellwall_policy::clusters::without_valid_prefix(ns).is_some_and(dns_label)
            && dns_subdomain(name)
    })
}

/// A Linux interface name: 1-15 bytes, no '/', no whitespace, no control characters.
pub fn interface_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// Free text a node sends (an apply error): at most `max` bytes, control characters (newlines,
/// terminal escapes) replaced, so it cannot forge log lines or flood alerts and webhooks.
pub fn node_text(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > max {
            out.push('…');
            break;
        }
        out.push(c);
    }
    out
}

/// An address a workload can have: not unspecified, loopback, multicast or broadcast.
pub fn workload_address(ip: IpAddr) -> bool {
    !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast())
        && match ip {
            IpAddr::V4(v4) => !v4.is_broadcast(),
            IpAddr::V6(_) => true,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_text_is_bounded_and_printable() {
        assert_eq!(node_text("map full", 64), "map full");
        let t = node_text(&format!("a\nb\x1b[31m{}", "é".repeat(1000)), 100);
        assert!(t.len() <= 100 + '…'.len_utf8(), "{}", t.len());
        assert!(!t.chars().any(char::is_control));
        assert!(t.starts_with("a b [31m") && t.ends_with('…'));
    }

    #[test]
    fn kubernetes_names() {
        assert!(workload_key("prod/db-0"));
        assert!(workload_key("prod/a.b-c"));
        let long = "x".repeat(253);
        assert!(workload_key(&format!("ns/{long}")));
        for bad in [
            "prod",
            "/db",
            "prod/",
            "Prod/db",
            "prod/BAD KEY!!",
            "prod/evil_host.",
            "prod/a\nb",
            "prod/\u{202e}db",
            "a/b/c",
        ] {
            assert!(!workload_key(bad), "{bad:?}");
        }
        assert!(!workload_key(&format!("ns/{long}x")));
        assert!(!dns_label(&"n".repeat(64)));
        // A watched cluster's namespace.
        assert!(workload_key("east:prod/db-0"));
        for bad in [
            "East:prod/db",
            ":prod/db",
            "east:/db",
            "a:b:c/db",
            "east:Prod/db",
        ] {
            assert!(!workload_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn interfaces_and_addresses() {
        assert!(interface_name("veth12ab"));
        assert!(interface_name("eth0"));
        assert!(!interface_name("a-name-too-long1"));
        assert!(!interface_name("../etc"));
        assert!(!interface_name("eth 0"));
        assert!(workload_address("10.0.0.1".parse().unwrap()));
        assert!(workload_address("fd00::1".parse().unwrap()));
        for bad in [
            "0.0.0.0",
            "127.0.0.1",
            "::1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
        ] {
            assert!(!workload_address(bad.parse().unwrap()), "{bad}");
        }
    }
}
