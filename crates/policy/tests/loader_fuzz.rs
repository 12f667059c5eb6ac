//! Mutation fuzzing of the manifest loader: arbitrary corruptions of valid manifests must give a
//! result or a located error, never a panic, and errors must point inside the input.

use cellwall_policy::parse_file;
use cellwall_policy::synth::Rng;

const SEEDS: &[&str] = &[
    "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {app: web}}\nspec:\n  nodeName: n1\n  containers:\n  - ports:\n    - {name: http, containerPort: 80}\n    - {containerPort: 53, protocol: UDP}\nstatus: {podIP: 10.0.0.1}\n",
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: x}\nspec:\n  podSelector: {matchExpressions: [{key: app, operator: In, values: [a, b]}]}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {team: a}}\n      podSelector: {}\n    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}\n    ports: [{port: 80, endPort: 90}, {port: http, protocol: TCP}]\n  egress: [{}]\n",
    "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: anp}\nspec:\n  priority: 5\n  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {a: b}}}}\n  egress:\n  - name: r\n    action: Pass\n    to: [{nodes: {matchLabels: {kubernetes.io/os: linux}}}, {networks: [0.0.0.0/0, \"::/0\"]}]\n    ports: [{portRange: {protocol: UDP, start: 1, end: 100}}, {namedPort: dns}]\n",
    "apiVersion: cellwall.io/v1alpha1\nkind: ClusterPolicy\nmetadata: {name: c}\nspec:\n  tier: admin\n  priority: 3\n  mode: audit\n  expiresAt: \"2026-12-01T00:00:00Z\"\n  namespaceSelector: {matchLabels: {env: prod}}\n  ingress:\n  - {action: Deny, from: [{entity: world}, {cidr: 192.0.2.0/24, except: [192.0.2.1/32]}]}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
    "{\"apiVersion\": \"v1\", \"kind\": \"Node\", \"metadata\": {\"name\": \"n\"}, \"status\": {\"addresses\": [{\"type\": \"InternalIP\", \"address\": \"10.0.0.9\"}]}}\n",
];

const ALPHABET: &[char] = &[
    ':', '-', ' ', '\n', '{', '}', '[', ']', ',', '"', '\'', '#', '&', '*', '!', '|', '>', '%',
    '@', '`', '0', '9', 'a', 'Z', '\t', '\\', '/', '.', 'é', '\u{0}', '?',
];

fn mutate(rng: &mut Rng, s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    for _ in 0..1 + rng.below(4) {
        if chars.is_empty() {
            chars.push('x');
        }
        let i = rng.below(chars.len());
        match rng.below(7) {
            0 => {
                chars.remove(i);
            }
            1 => chars.insert(i, *rng.pick(ALPHABET)),
            2 => chars[i] = *rng.pick(ALPHABET),
            3 => chars.truncate(i),
            4 => {
                let j = rng.below(chars.len());
                let (a, b) = (i.min(j), i.max(j));
                let seg: Vec<char> = chars[a..b].to_vec();
                chars.splice(b..b, seg);
            }
            5 => {
                let scalar = *rng.pick(&[
                    "-1",
                    "70000",
                    "null",
                    "[]",
                    "{}",
                    "~",
                    "true",
                    "1e9",
                    "\"\"",
                    "0x10",
                    "::1",
                    "999.1.1.1/8",
                ]);
                let end = (i + rng.below(6)).min(chars.len());
                chars.splice(i..end, scalar.chars());
            }
            _ => {
                let j = rng.below(chars.len());
                chars.swap(i, j);
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn loader_never_panics_and_locates_errors() {
    let mut rng = Rng::new(0xC311);
    let (mut ok, mut err) = (0, 0);
    for iter in 0..20_000 {
        let seed = *rng.pick(SEEDS);
        let input = mutate(&mut rng, seed);
        let name = if seed.starts_with('{') {
            "fuzz.json"
        } else {
            "fuzz.yaml"
        };
        match parse_file(name, &input) {
            Ok(_) => ok += 1,
            Err(e) => {
                err += 1;
                let lines = input.lines().count().max(1) + 1;
                assert!(
                    e.line >= 1 && e.line <= lines,
                    "iteration {iter}: line {} outside 1..={lines}: {e}\n{input}",
                    e.line
                );
                assert!(e.column >= 1, "iteration {iter}: column 0: {e}");
                assert!(!e.message.is_empty(), "iteration {iter}: empty message");
                assert!(e.to_string().starts_with(name), "iteration {iter}: {e}");
            }
        }
    }
    assert!(
        ok > 100 && err > 1000,
        "the fuzzer should produce both outcomes: ok={ok} err={err}"
    );
}

#[test]
fn valid_seeds_parse() {
    for s in SEEDS {
        let name = if s.starts_with('{') {
            "s.json"
        } else {
            "s.yaml"
        };
        parse_file(name, s).unwrap_or_else(|e| panic!("{e}\n{s}"));
    }
}
