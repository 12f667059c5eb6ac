//! IP networks (CIDRs) without a dependency: parse, contain, canonicalise. And DNS name
//! patterns of FQDN egress peers ([`DomainPattern`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 network in canonical form (host bits cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Builds a network, clearing host bits. `None` if the prefix is too long for the family.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        match addr {
            IpAddr::V4(a) if prefix <= 32 => {
                let m = if prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - prefix)
                };
                Some(Self {
                    addr: IpAddr::V4(Ipv4Addr::from(u32::from(a) & m)),
                    prefix,
                })
            }
            IpAddr::V6(a) if prefix <= 128 => {
                let m = if prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - prefix)
                };
                Some(Self {
                    addr: IpAddr::V6(Ipv6Addr::from(u128::from(a) & m)),
                    prefix,
                })
            }
            _ => None,
        }
    }

    /// The single-address network of `ip` (/32 or /128).
    pub fn host(ip: IpAddr) -> Self {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        Self { addr: ip, prefix }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let m = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(*a) & m == u32::from(n)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let m = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(*a) & m == u128::from(n)
            }
            _ => false,
        }
    }

    /// The network's last address (so the networks inside it sort between `addr` and this).
    pub fn last(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(n) => {
                let host = u32::MAX.checked_shr(self.prefix as u32).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(n) | host))
            }
            IpAddr::V6(n) => {
                let host = u128::MAX.checked_shr(self.prefix as u32).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(n) | host))
            }
        }
    }

    /// True when `other` lies entirely inside `self`.
    pub fn contains_net(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(&other.addr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Error for a malformed CIDR, with what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {input:?}: {reason}")]
pub struct CidrError {
    pub input: String,
    pub reason: &'static str,
}

impl FromStr for Cidr {
    type Err = CidrError;
    /// Parses `a.b.c.d/n` or `x::/n`. A bare address is rejected: Kubernetes requires a prefix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| CidrError {
            input: s.to_string(),
            reason,
        };
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| err("expected ADDRESS/PREFIX, e.g. 10.0.0.0/8"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| err("the address part is not an IPv4 or IPv6 address"))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| err("the prefix length is not a number"))?;
        Cidr::new(addr, prefix).ok_or_else(|| err("prefix length too long for the address family"))
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A DNS name pattern of an FQDN egress peer (ClusterNetworkPolicy `domainNames`): an exact
/// name, or `*.` + a name, which matches one or more whole labels in front of that name
/// (`*.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com`).
/// Stored lowercase without the trailing dot, so comparison is plain string comparison.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainPattern {
    pub wildcard: bool,
    pub name: String,
}

impl DomainPattern {
    /// Whether a fully qualified name (any case, trailing dot or not) matches.
    pub fn matches(&self, fqdn: &str) -> bool {
        let n = fqdn.strip_suffix('.').unwrap_or(fqdn).to_ascii_lowercase();
        if self.wildcard {
            n.len() > self.name.len() + 1
                && n.ends_with(&self.name)
                && n.as_bytes()[n.len() - self.name.len() - 1] == b'.'
        } else {
            n == self.name
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)
    }
}

impl FromStr for DomainPattern {
    type Err = String;
    /// The upstream API's pattern: optional `*.`, then at least two labels of letters, digits,
    /// `-` and `_` that start and end with a letter or digit, optional trailing dot; plus DNS's
    /// own limits (labels of at most 63 bytes, names of at most 253).
    fn from_str(s: &str) -> Result<Self, String> {
        let err = |why: &str| format!("invalid domain name {s:?}: {why}");
        let (wildcard, rest) = match s.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, s),
        };
        let rest = rest.strip_suffix('.').unwrap_or(rest);
        if rest.contains('*') {
            return Err(err("'*' may only be the first label, as \"*.\""));
        }
        if rest.len() > 253 {
            return Err(err("longer than 253 characters"));
        }
        let labels: Vec<&str> = rest.split('.').collect();
        if labels.len() < 2 {
            return Err(err("expected at least two labels, like example.com"));
        }
        for l in &labels {
            let b = l.as_bytes();
            let edge_ok = |c: &u8| c.is_ascii_alphanumeric();
            if b.is_empty() || b.len() > 63 {
                return Err(err("every label must be 1-63 characters"));
            }
            if !edge_ok(&b[0]) || !edge_ok(&b[b.len() - 1]) {
                return Err(err("labels must start and end with a letter or digit"));
            }
            if !b
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
            {
                return Err(err("labels may hold only letters, digits, '-' and '_'"));
            }
        }
        Ok(Self {
            wildcard,
            name: rest.to_ascii_lowercase(),
        })
    }
}

impl serde::Serialize for DomainPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DomainPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_address_of_a_network() {
        let last = |c: &str| c.parse::<Cidr>().unwrap().last().to_string();
        assert_eq!(last("10.1.0.0/16"), "10.1.255.255");
        assert_eq!(last("0.0.0.0/0"), "255.255.255.255");
        assert_eq!(last("192.0.2.7/32"), "192.0.2.7");
        assert_eq!(
            last("2001:db8::/32"),
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        assert_eq!(last("::/0"), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    }

    #[test]
    fn parse_and_contain() {
        let n: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert!(n.contains(&"10.200.0.1".parse().unwrap()));
        assert!(!n.contains(&"11.0.0.1".parse().unwrap()));
        assert!(!n.contains(&"::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(&"1.2.3.4".parse().unwrap()));
        let v6: Cidr = "::/0".parse().unwrap();
        assert!(v6.contains(&"fd00::1".parse().unwrap()));
        assert!(n.contains_net(&"10.1.0.0/16".parse().unwrap()));
        assert!(!"10.1.0.0/16".parse::<Cidr>().unwrap().contains_net(&n));
    }

    #[test]
    fn parse_errors() {
        assert!("10.0.0.1".parse::<Cidr>().is_err());
        assert!("10.0.0.1/33".parse::<Cidr>().is_err());
        assert!("x/8".parse::<Cidr>().is_err());
        assert!("::1/129".parse::<Cidr>().is_err());
    }

    #[test]
    fn domain_patterns_match_whole_labels() {
        let d = |s: &str| s.parse::<DomainPattern>().unwrap();
        let exact = d("Kubernetes.IO.");
        assert_eq!(exact.to_string(), "kubernetes.io");
        assert!(exact.matches("kubernetes.io") && exact.matches("KUBERNETES.io."));
        assert!(!exact.matches("www.kubernetes.io") && !exact.matches("my-kubernetes.io"));
        let wild = d("*.kubernetes.io");
        assert!(wild.matches("www.kubernetes.io") && wild.matches("a.b.kubernetes.io"));
        assert!(!wild.matches("kubernetes.io") && !wild.matches("xkubernetes.io"));
        assert!(!wild.matches(".kubernetes.io"));
        for bad in [
            "io", "*.io", "a.*.io", "-a.io", "a_.io", "a..io", "a b.io", "*", "",
        ] {
            assert!(bad.parse::<DomainPattern>().is_err(), "{bad}");
        }
        let long = format!("{}.io", "a".repeat(64));
        assert!(long.parse::<DomainPattern>().is_err());
        assert!(d("under_score.example.com").matches("under_score.example.com"));
    }
}
