//! Validating field types for manifest deserialisation. Validation happens while deserialising so
//! a bad value is reported with the line, column and field path of that value.

use crate::labels::{
    validate_label_key, validate_label_value, LabelSelector, Labels, Operator, Requirement,
};
use crate::model::Protocol;
use crate::net::Cidr;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;

/// A port number 1-65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortNum(pub u16);

impl<'de> Deserialize<'de> for PortNum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortNum;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number 1-65535")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortNum, E> {
                if (1..=65535).contains(&v) {
                    Ok(PortNum(v as u16))
                } else {
                    Err(E::custom(format!(
                        "port {v} is out of range: expected a port number 1-65535"
                    )))
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortNum, E> {
                self.visit_i64(v.min(i64::MAX as u64) as i64)
            }
        }
        // `any`, not `i64`: a string is then reported as "invalid type: string, expected a port
        // number" rather than as an unparsable integer.
        d.deserialize_any(V)
    }
}

/// A null value (`containers:` with nothing after it) reads as the default, as the API server
/// reads a null list or object; absent fields take `#[serde(default)]` as usual.
pub fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `TCP`, `UDP` or `SCTP` (case-sensitive, as the API server requires).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolDe(pub Protocol);

impl<'de> Deserialize<'de> for ProtocolDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Protocol::parse(&s).map(ProtocolDe).ok_or_else(|| {
            de::Error::custom(format!("unknown protocol {s:?}: expected TCP, UDP or SCTP"))
        })
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A port given as a number or as a container port name (`IntOrString`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntOrName {
    Num(u16),
    Name(String),
}

impl<'de> Deserialize<'de> for IntOrName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number 1-65535 or a port name")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrName, E> {
                if (1..=65535).contains(&v) {
                    Ok(IntOrName::Num(v as u16))
                } else {
                    Err(E::custom(format!(
                        "port {v} is out of range: expected a port number 1-65535"
                    )))
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrName, E> {
                self.visit_i64(v.min(i64::MAX as u64) as i64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrName, E> {
                if let Ok(n) = v.parse::<i64>() {
                    return self.visit_i64(n);
                }
                validate_port_name(v).map_err(E::custom)?;
                Ok(IntOrName::Name(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// IANA_SVC_NAME: 1-15 lowercase alphanumerics or '-', at least one letter, no '--'.
pub fn validate_port_name(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 15
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && v.chars().any(|c| c.is_ascii_lowercase())
        && !v.starts_with('-')
        && !v.ends_with('-')
        && !v.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid port name {v:?}: expected 1-15 lowercase letters, digits or '-', with at least one letter"
        ))
    }
}

/// A label map with validated keys and values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelsDe(pub Labels);

impl<'de> Deserialize<'de> for LabelsDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = Option::<Labels>::deserialize(d)?.unwrap_or_default();
        for (k, v) in &m {
            validate_label_key(k).map_err(de::Error::custom)?;
            validate_label_value(v).map_err(de::Error::custom)?;
        }
        Ok(LabelsDe(m))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRequirement {
    key: String,
    operator: String,
    #[serde(default)]
    values: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSelector {
    #[serde(default)]
    match_labels: LabelsDe,
    #[serde(default)]
    match_expressions: Option<Vec<RawRequirement>>,
}

/// A `LabelSelector`, validated as the API server does (`In`/`NotIn` need values,
/// `Exists`/`DoesNotExist` must have none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectorDe(pub LabelSelector);

impl<'de> Deserialize<'de> for SelectorDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Option::<RawSelector>::deserialize(d)?;
        let Some(raw) = raw else {
            return Ok(SelectorDe(LabelSelector::everything()));
        };
        let mut sel = LabelSelector {
            match_labels: raw.match_labels.0,
            match_expressions: Vec::new(),
        };
        for (i, r) in raw
            .match_expressions
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let op = Operator::parse(&r.operator).ok_or_else(|| {
                de::Error::custom(format!(
                    "matchExpressions[{i}].operator: unknown operator {:?}: expected In, NotIn, Exists or DoesNotExist",
                    r.operator
                ))
            })?;
            validate_label_key(&r.key)
                .map_err(|e| de::Error::custom(format!("matchExpressions[{i}].key: {e}")))?;
            let values = r.values.unwrap_or_default();
            match op {
                Operator::In | Operator::NotIn if values.is_empty() => {
                    return Err(de::Error::custom(format!(
                        "matchExpressions[{i}].values: operator {} needs at least one value",
                        op.as_str()
                    )))
                }
                Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                    return Err(de::Error::custom(format!(
                        "matchExpressions[{i}].values: operator {} takes no values",
                        op.as_str()
                    )))
                }
                _ => {}
            }
            sel.match_expressions.push(Requirement {
                key: r.key,
                operator: op,
                values: values.into_iter().collect(),
            });
        }
        Ok(SelectorDe(sel))
    }
}

/// An RFC 3339 time (`2026-12-01T10:00:00Z`, offsets and fractions accepted) as Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub i64);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_rfc3339(&s).map(Timestamp).ok_or_else(|| {
            de::Error::custom(format!(
                "invalid time {s:?}: expected RFC 3339, e.g. 2026-12-01T10:00:00Z"
            ))
        })
    }
}

/// Parses RFC 3339 into Unix seconds (fractions truncated). No dependency needed for this.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ')
    {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        rest = &r[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || rb[3] != b':' || !(rb[0] == b'+' || rb[0] == b'-') {
                return None;
            }
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            let sign = if rb[0] == b'-' { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
    };
    Some(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Formats Unix seconds as RFC 3339 UTC.
pub fn format_rfc3339(t: i64) -> String {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    let z = days + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-11-28T16:00:00Z"), Some(1795881600));
        assert_eq!(parse_rfc3339("2026-11-28T17:00:00+01:00"), Some(1795881600));
        assert_eq!(parse_rfc3339("2026-11-28T16:00:00.123Z"), Some(1795881600));
        assert_eq!(format_rfc3339(1795881600), "2026-11-28T16:00:00Z");
        assert_eq!(parse_rfc3339("2026-13-28T16:00:00Z"), None);
        assert_eq!(parse_rfc3339("tomorrow"), None);
        for t in [0i64, 951782400, 1795881600, 4102444800] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
    }

    #[test]
    fn port_names() {
        assert!(validate_port_name("serve-80-tcp").is_ok());
        assert!(validate_port_name("80").is_err());
        assert!(validate_port_name("Web").is_err());
        assert!(validate_port_name("a--b").is_err());
    }
}
