//! One document's text → a typed value, with every error located in the file (line, column,
//! field path). YAML is read by serde-saphyr within safety limits (alias expansion and node
//! counts proportional to the input, nesting depth 64), so no input makes reading expensive:
//! a billion-laughs document or 100,000 nested brackets are refused in linear time.

use super::LoadError;
use serde::de::DeserializeOwned;
use serde_saphyr::{Budget, DefaultMessageFormatter, MessageFormatter, Options};
use std::borrow::Cow;

/// How a document's text is written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Yaml,
    Json,
}

/// Where a document sits in its file, to turn document positions into file positions.
pub(super) struct Ctx<'a> {
    pub file: &'a str,
    /// 1-based line of the file where the document starts.
    pub base_line: usize,
}

impl Ctx<'_> {
    /// An error at a position of the document (1-based), or at its start when unknown.
    pub fn err(
        &self,
        line: Option<usize>,
        column: Option<usize>,
        path: String,
        message: String,
    ) -> LoadError {
        let (line, column) = match (line, column) {
            (Some(l), Some(c)) if l > 0 && c > 0 => (self.base_line + l - 1, c),
            _ => (self.base_line, 1),
        };
        LoadError {
            file: self.file.to_string(),
            line,
            column,
            path,
            message,
            unknown_kind: false,
        }
    }
}

/// Deepest nesting read. The library's default: reading a level takes ~20 KB of stack in a debug
/// build (~3 KB optimised), so 64 levels fit a 2 MiB thread with room to spare, where
/// serde_yaml's 128 did not. Manifests of the kinds Cellwall reads nest about 10 deep.
const MAX_DEPTH: usize = 64;

/// The YAML reader's limits. Nodes and events may not outnumber the input's bytes (plus the
/// library's defaults), so aliases cannot amplify a document beyond its own size while a
/// `kubectl get -o yaml` list of a large cluster still reads.
fn yaml_options(text: &str) -> Options {
    let mut budget = Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.flow_nesting_limit = MAX_DEPTH;
    budget.max_nodes = budget.max_nodes.max(text.len());
    budget.max_events = budget.max_events.max(2 * text.len());
    let mut options = Options::default();
    options.budget = Some(budget);
    // Aliases may replay at most as many events as the input has bytes.
    options.alias_limits.max_total_replayed_events = text.len().max(10_000);
    options.with_snippet = false;
    // As serde_yaml read YAML (1.2): `yes`/`on` are strings, not booleans, and a plain `null`,
    // `~` or empty value read as a string is that text (`app:` is the label value "").
    options.strict_booleans = true;
    options.null_as_string = true;
    options
}

/// Messages say what was expected; the library's defaults, except where they do not.
struct Messages;

impl MessageFormatter for Messages {
    fn format_message<'a>(&self, err: &'a serde_saphyr::Error) -> Cow<'a, str> {
        use serde_saphyr::Error as E;
        match err {
            E::InvalidScalar { ty, .. } => {
                Cow::Owned(format!("invalid value: expected {}", expected_scalar(ty)))
            }
            E::DuplicateMappingKey { key, .. } => Cow::Owned(match key {
                Some(k) => format!("duplicate key {k}"),
                None => "duplicate key".into(),
            }),
            E::Budget { .. }
            | E::AliasReplayLimitExceeded { .. }
            | E::AliasExpansionLimitExceeded { .. }
            | E::AliasReplayStackDepthExceeded { .. }
            | E::AliasReplayCounterOverflow { .. } => Cow::Owned(format!(
                "refused: {} (a safety limit of the YAML reader: nesting deeper than \
                 {MAX_DEPTH}, or aliases expanding beyond the input's size)",
                DefaultMessageFormatter.format_message(err)
            )),
            other => DefaultMessageFormatter.format_message(other),
        }
    }
}

fn expected_scalar(ty: &str) -> &str {
    match ty {
        "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128" | "isize"
        | "usize" => "an integer",
        "f32" | "f64" => "a number",
        "bool" => "true or false",
        "char" => "a single character",
        other => other,
    }
}

pub(super) fn decode<T: DeserializeOwned>(
    ctx: &Ctx,
    text: &str,
    format: Format,
) -> Result<T, LoadError> {
    match format {
        Format::Yaml => decode_yaml(ctx, text),
        Format::Json => decode_json(ctx, text),
    }
}

fn decode_yaml<T: DeserializeOwned>(ctx: &Ctx, text: &str) -> Result<T, LoadError> {
    // Read without path tracking first (it doubles the stack a nesting level takes); only an
    // error is read again, with it, for the field path.
    let plain =
        serde_saphyr::with_deserializer_from_str_with_options(text, yaml_options(text), |de| {
            T::deserialize(de)
        });
    let first = match plain {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let mut path = String::new();
    let tracked =
        serde_saphyr::with_deserializer_from_str_with_options(text, yaml_options(text), |de| {
            serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
                path = clean_path(&e.path().to_string());
                e.into_inner()
            })
        });
    let e = match tracked {
        Err(e) => e,
        // Unreachable in practice (the same text and options); report the first error.
        Ok(_) => first,
    };
    let loc = e.location();
    Err(ctx.err(
        loc.map(|l| l.line() as usize),
        loc.map(|l| l.column() as usize),
        path,
        clean_message(&e.render_with_formatter(&Messages)),
    ))
}

fn decode_json<T: DeserializeOwned>(ctx: &Ctx, text: &str) -> Result<T, LoadError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let json_err = |path: String, inner: serde_json::Error| {
        let (l, c) = (inner.line(), inner.column());
        ctx.err(
            (l > 0).then_some(l),
            (l > 0).then_some(c.max(1)),
            path,
            clean_message(&inner.to_string()),
        )
    };
    let v = serde_path_to_error::deserialize::<_, T>(&mut de)
        .map_err(|e| json_err(clean_path(&e.path().to_string()), e.into_inner()))?;
    de.end().map_err(|e| json_err(String::new(), e))?;
    Ok(v)
}

/// serde_path_to_error prints `.` for the root and `?` for unknown positions.
fn clean_path(p: &str) -> String {
    if p == "." || p == "?" {
        String::new()
    } else {
        p.to_string()
    }
}

/// Drops the location suffix the readers add (we print our own, relative to the file).
fn clean_message(m: &str) -> String {
    let m = match m.find(" at line ") {
        Some(i) => &m[..i],
        None => m,
    };
    m.trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use crate::load::parse_file;

    const HEAD: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n";

    #[test]
    fn alias_bombs_are_refused() {
        // A billion laughs: ten levels of ten aliases each (10^10 nodes if expanded).
        let mut bomb = format!("{HEAD}a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = format!("*a{}", i - 1);
            let items = [p.as_str(); 10].join(", ");
            bomb.push_str(&format!("a{i}: &a{i} [{items}]\n"));
        }
        let e = parse_file("bomb.yaml", &bomb).unwrap_err();
        assert!(e.message.contains("safety limit"), "{e}");
        assert!(e.line >= 4, "{e}");
    }

    #[test]
    fn deep_nesting_is_refused_quickly() {
        // libyaml needed ~80 s of CPU for this many nested brackets; the budget stops at 64.
        let n = 100_000;
        let flow = format!("{HEAD}x: {}{}\n", "[".repeat(n), "]".repeat(n));
        let e = parse_file("deep.yaml", &flow).unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        let mut block = format!("{HEAD}x:\n");
        for i in 0..100 {
            block.push_str(&format!("{}- \n", " ".repeat(i + 1)));
        }
        let e = parse_file("deep.yaml", &block).unwrap_err();
        assert!(e.message.contains("safety limit"), "{e}");
        // Nesting a real manifest uses is read.
        let mut ok = format!("{HEAD}x:\n");
        for i in 0..60 {
            ok.push_str(&format!("{}- \n", " ".repeat(i + 1)));
        }
        parse_file("ok.yaml", &ok).unwrap();
    }

    #[test]
    fn large_lists_are_within_budget() {
        // A `kubectl get pods -o yaml` of a large cluster: more nodes (~45 a pod) than the
        // library's default budget (250,000), all of them real input.
        let mut list = String::from("apiVersion: v1\nkind: List\nitems:\n");
        for i in 0..6_000 {
            list.push_str(&format!(
                "- apiVersion: v1\n  kind: Pod\n  metadata: {{name: p{i}, namespace: x, labels: {{a: b, c: d, e: f, g: h}}}}\n  spec:\n    containers:\n    - ports: [{{containerPort: 80, name: http}}, {{containerPort: 81}}, {{containerPort: 82}}]\n  status: {{podIP: 10.{}.{}.{}, podIPs: [{{ip: 10.{}.{}.{}}}]}}\n",
                i / 65536 % 256, i / 256 % 256, i % 256, i / 65536 % 256, i / 256 % 256, i % 256
            ));
        }
        assert_eq!(parse_file("pods.yaml", &list).unwrap().objects.len(), 6_000);
    }

    #[test]
    fn errors_point_at_the_value_and_say_what_was_expected() {
        let t = format!("{HEAD}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: a}}\nspec:\n  containers:\n  - ports:\n    - containerPort: http\n");
        let e = parse_file("f.yaml", &t).unwrap_err();
        assert_eq!(
            (e.line, e.path.as_str()),
            (11, "spec.containers[0].ports[0].containerPort")
        );
        assert!(e.message.contains("expected a port number 1-65535"), "{e}");
        let t = format!("{HEAD}metadata: {{name: y}}\n");
        let e = parse_file("f.yaml", &t).unwrap_err();
        assert_eq!(e.message, "duplicate key metadata", "{e}");
        // YAML 1.2 booleans only, as before: `yes` is not true.
        let t = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {hostNetwork: yes}\n";
        assert!(parse_file("f.yaml", t).is_err());
        // A null list or object is empty, as the API server reads it.
        let t = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers:\n";
        assert_eq!(parse_file("f.yaml", t).unwrap().objects.len(), 1);
    }
}
