#!/usr/bin/env python3
"""Writes the committed seed corpora (fuzz/corpus/TARGET/) from the repository's examples and
fixtures and a few hand-picked inputs. Rerun after changing the formats the targets read
(`python3 fuzz/seeds.py`); review the diff. Binary seeds (protobuf) are encoded here by hand from
crates/proto/proto/cellwall.proto, so no protobuf package is needed.

Input formats: see the doc comment at the top of each fuzz_targets/*.rs. Files named
regression-* (inputs that once found a bug) are added by hand and kept.
"""

import json
import pathlib
import zlib

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
CORPUS = FUZZ / "corpus"


def write(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def read(path):
    return (ROOT / path).read_text()


# --- protobuf, by hand --------------------------------------------------------------------


def varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(num, n):
    return varint(num << 3) + varint(n)


def field_bytes(num, b):
    if isinstance(b, str):
        b = b.encode()
    return varint(num << 3 | 2) + varint(len(b)) + b


def join_request(token, node):
    return field_bytes(1, token) + field_bytes(2, node)


def local_workload(key, ips, interface, labels=None, host=False):
    m = field_bytes(1, key)
    for ip in ips:
        m += field_bytes(2, ip)
    m += field_bytes(3, interface)
    for k, v in (labels or {}).items():
        m += field_bytes(4, field_bytes(1, k) + field_bytes(2, v))
    if host:
        m += field_varint(5, 1)
    return m


def watch_request(node, applied, workloads, version="0.1.0"):
    m = field_bytes(1, node) + field_varint(2, applied)
    for w in workloads:
        m += field_bytes(3, w)
    return m + field_bytes(4, version)


def ack_request(node, version, micros, error=""):
    m = field_bytes(1, node) + field_varint(2, version) + field_varint(3, micros)
    if error:
        m += field_bytes(4, error)
    return m + field_varint(5, 1_780_000_000_000_000)


def flow_record(src, dst, src_ip, dst_ip, proto, port, verdict, direction, rule="", count=1):
    m = field_varint(1, 1_780_000_000_000_000_000)
    m += field_bytes(2, src) + field_bytes(3, dst) + field_bytes(4, src_ip) + field_bytes(5, dst_ip)
    m += field_varint(6, proto) + field_varint(7, port)
    if rule:
        m += field_bytes(10, rule)
    return m + field_varint(11, count) + field_varint(12, verdict) + field_varint(13, direction)


def flow_batch(node, records, seq=1, lost=0, dropped=0):
    m = field_bytes(1, node)
    for r in records:
        m += field_bytes(2, r)
    return m + field_varint(3, lost) + field_varint(4, dropped) + field_varint(5, seq)


def desired_state(version, state, base=0, deflate=False):
    m = field_varint(1, version) + field_bytes(2, state) + field_varint(3, 1_780_000_000_000)
    if base:
        m += field_varint(4, base)
    if deflate:
        m += field_varint(5, 1)
    return m


def raw_deflate(b):
    z = zlib.compressobj(1, zlib.DEFLATED, -15)
    return z.compress(b) + z.flush()


# --- manifest ----------------------------------------------------------------------------


def manifest():
    for path in [
        "examples/shop/inventory.yaml",
        "examples/shop/policies.yaml",
        "examples/boutique/app.yaml",
        "examples/cve/inventory.yaml",
        "examples/cve/deny-smb.yaml",
        "examples/demo/app.yaml",
        "examples/demo/policy.yaml",
        "crates/proto/tests/fixtures/model.yaml",
    ]:
        write("manifest", path.replace("/", "_"), read(path))
    seeds = {
        "pod.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {app: web}}\nspec:\n  nodeName: n1\n  containers:\n  - ports:\n    - {name: http, containerPort: 80}\n    - {containerPort: 53, protocol: UDP}\nstatus: {podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}, {ip: 'fd00::1'}]}\n",
        "netpol.yaml": "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: x}\nspec:\n  podSelector: {matchExpressions: [{key: app, operator: In, values: [a, b]}, {key: t, operator: DoesNotExist}]}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {team: a}}\n      podSelector: {}\n    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}\n    ports: [{port: 80, endPort: 90}, {port: http, protocol: TCP}, {protocol: SCTP}]\n  egress: [{}]\n",
        "anp.yaml": "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: anp}\nspec:\n  priority: 5\n  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {a: b}}}}\n  egress:\n  - name: r\n    action: Pass\n    to: [{nodes: {matchLabels: {kubernetes.io/os: linux}}}, {networks: [0.0.0.0/0, \"::/0\"]}]\n    ports: [{portRange: {protocol: UDP, start: 1, end: 100}}, {namedPort: dns}]\n",
        "cellwall.yaml": "apiVersion: cellwall.io/v1alpha1\nkind: ClusterPolicy\nmetadata: {name: c}\nspec:\n  tier: admin\n  priority: 3\n  mode: audit\n  expiresAt: \"2026-12-01T00:00:00Z\"\n  namespaceSelector: {matchLabels: {env: prod}}\n  ingress:\n  - {action: Deny, from: [{entity: world}, {cidr: 192.0.2.0/24, except: [192.0.2.1/32]}]}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
        "policy.yaml": "apiVersion: cellwall.io/v1alpha1\nkind: Policy\nmetadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {app: db}}\n  egress:\n  - {action: Allow, to: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}\n",
        "list.yaml": "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: x}}\n- {apiVersion: v1, kind: Pod, metadata: {name: p, namespace: x}, spec: {hostNetwork: true, nodeName: n}}\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}\n",
        "node.json": "{\"apiVersion\": \"v1\", \"kind\": \"Node\", \"metadata\": {\"name\": \"n\"}, \"status\": {\"addresses\": [{\"type\": \"InternalIP\", \"address\": \"10.0.0.9\"}]}}\n",
        "list.json": "{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"a\", \"namespace\": \"x\"}, \"status\": {\"podIP\": \"10.0.0.2\"}}]}\n",
        "anchors.yaml": "apiVersion: v1\nkind: Pod\nmetadata: &m {name: a, namespace: x, labels: &l {app: web}}\nspec: {nodeName: n1}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: *l}\n...\n",
        "host.yaml": "apiVersion: cellwall.io/v1alpha1\nkind: Host\nmetadata: {name: db-vm, namespace: hosts, labels: {role: db}}\nspec: {node: db-vm, addresses: [192.0.2.10, 10.1.0.0/24]}\n",
        "unknown.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\napiVersion: networking.k8s.io/v2\nkind: NetworkPolicy\nmetadata: {name: n}\n",
    }
    for name, text in seeds.items():
        write("manifest", name, text)


# --- import ------------------------------------------------------------------------------


def imports():
    write("import", "scanner-report.csv", read("examples/cve/scanner-report.csv"))
    seeds = {
        "quoted.csv": "# cmdb export\r\nworkload,owner,\"cost center\",tier\r\nshop/web,\"shop\",\"a\"\"b\",1\r\nvms/vm1,,x,\r\n",
        "hostname.csv": "hostname,env,team\nvm1,prod,ops\nweb,dev,\n",
        "ipv6.csv": "name,ip\nweb,2001:db8::1\ndb,10.0.0.2\n",
        "labels.json": "[\n  {\"workload\": \"shop/web\", \"labels\": {\"owner\": \"shop\", \"tier\": 1}},\n  {\"hostname\": \"vm1\", \"tier\": 1, \"pci\": true},\n  {\"ip\": \"10.0.0.2\", \"labels\": {}}\n]\n",
        "bad.json": "[{\"ip\": \"1.2.3.4\", \"hostname\": \"x\"}, {\"ip\": 5}, {\"workload\": \"a\"}]",
        "bad.csv": "ip,owner\n10.0.0.1,team a\n10.0.0.x,b\n\"10.0.0.3\"x,c\n",
    }
    for name, text in seeds.items():
        write("import", name, text)


# --- proto -------------------------------------------------------------------------------


def proto():
    snapshot = json.loads(read("crates/proto/tests/fixtures/snapshot.json"))
    delta = json.loads(read("crates/proto/tests/fixtures/delta.json"))
    snap = json.dumps(snapshot, separators=(",", ":")).encode()
    dlt = json.dumps(delta, separators=(",", ":")).encode()
    # A delta over 64 changes takes apply's merge path: 70 workloads, one of them twice, one
    # also removed.
    web = snapshot["workloads"][1]
    many = []
    for i in range(70):
        w = dict(web, name=f"w{i:02}", ips=[f"10.1.0.{i + 1}"])
        many.append(w)
    many.append(dict(many[3], labels={"app": "again"}))
    big = {
        "workloads": many,
        "removed_workloads": [{"namespace": "prod", "name": "w05"}, {"namespace": "prod", "name": "agent"}],
        "removed_policies": delta["removed_policies"],
    }
    bigj = json.dumps(big, separators=(",", ":")).encode()
    wl = local_workload("prod/web", ["10.0.0.1", "fd00::1"], "veth1")
    host = local_workload("default/n1", ["192.0.2.10"], "eth0", {"role": "db"}, True)
    rec = flow_record("prod/web", "prod/db", "10.0.0.1", "10.0.0.2", 6, 5432, 1, 2, "NetworkPolicy/prod/web ingress[0]", 3)
    rec2 = flow_record("", "", "fd00::1", "8.8.8.8", 17, 53, 2, 1)
    seeds = {
        "join": b"\x00" + join_request("cwb_0123456789abcdef", "node-1"),
        "watch": b"\x01" + watch_request("n1", 4, [wl, host]),
        "ack": b"\x02" + ack_request("n1", 5, 1200),
        "ack-error": b"\x02" + ack_request("n1", 5, 0, "loading the maps: EPERM"),
        "flows": b"\x03" + flow_batch("n1", [rec, rec2], seq=7, lost=2, dropped=1),
        "state-snapshot": b"\x04" + desired_state(3, snap),
        "state-delta": b"\x04" + desired_state(4, dlt, base=3),
        "state-snapshot-deflated": b"\x04" + desired_state(3, raw_deflate(snap), deflate=True),
        "state-delta-deflated": b"\x04" + desired_state(4, raw_deflate(bigj), base=3, deflate=True),
        "state-marker": b"\x04" + desired_state(4, b"{}", base=4),
        "json-snapshot": b"\x05" + snap,
        "json-delta": b"\x06" + dlt,
        "json-delta-large": b"\x06" + bigj,
        "deflate-snapshot": b"\x07" + snap,
        "deflate-delta": b"\x08" + dlt,
        "renew": b"\x09" + field_bytes(1, "node-1"),
    }
    for name, data in seeds.items():
        write("proto", name, data)


# --- api ---------------------------------------------------------------------------------


def api():
    shop = read("examples/shop/policies.yaml")
    bodies = [
        (0, "apply", {"documents": [{"file": "policies.yaml", "text": shop}], "ignore_unknown_kinds": True}),
        (1, "simulate", {"documents": [{"file": "p.yaml", "text": "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"}], "since": "24h"}),
        (2, "quarantine", {"workload": "tools/debug", "reason": "compromised", "allow_from": "cidr:10.0.0.0/8"}),
        (3, "release", {"workload": "tools/debug"}),
        (4, "import", {"source": "scanner", "file": "r.csv", "text": read("examples/cve/scanner-report.csv"), "every": "1h"}),
        (5, "token", {"role": "bootstrap", "name": "rack-2", "node": "web-*", "ttl": "2h", "single_use": True, "replace": False}),
        (6, "revoke-token", {"id": 4}),
        (7, "revoke-node", {"node": "node-1"}),
    ]
    for sel, name, body in bodies:
        write("api", name, bytes([sel]) + json.dumps(body).encode())
    queries = [
        (8, "flows", "since=10m&after=5&verdict=denied&workload=shop%2Fweb&rule=NetworkPolicy%2Fshop%2Fweb&limit=10"),
        (9, "alerts", "after=-1&limit=100000"),
        (10, "explain", "from=tools%2Fdebug&to=data%2Fdb&probe=TCP%2F5432"),
        (11, "map", "since=7d&group_by=namespace&format=dot"),
        (12, "propose", "since=24h&namespace=shop&format=networkpolicy&review_below=3"),
    ]
    for sel, name, q in queries:
        write("api", name, bytes([sel]) + q.encode())


# --- rest --------------------------------------------------------------------------------


def rest():
    def req(head, body=b""):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        return head.encode() + b"\n" + body

    np = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db, namespace: data}\nspec:\n  podSelector: {matchLabels: {app: postgres}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {team: storefront}}, podSelector: {matchLabels: {app: api}}}]\n    ports: [{port: pg}]\n"
    wl = local_workload("shop/web", ["10.244.0.9"], "veth9")
    rec = flow_record("", "", "10.244.0.1", "10.244.0.2", 6, 5432, 2, 2, "", 4)
    seeds = {
        "healthz": req("GET /healthz none"),
        "apply": req("POST /v1/apply", {"documents": [{"file": "np.yaml", "text": np}]}),
        "delete": req("POST /v1/delete", {"documents": [{"file": "np.yaml", "text": np}]}),
        "policies": req("GET /v1/policies read"),
        "history": req("GET /v1/policies/history?id=NetworkPolicy/data/db"),
        "workloads": req("GET /v1/workloads"),
        "audit": req("GET /v1/audit?limit=5"),
        "token-create": req("POST /v1/tokens", {"role": "read", "name": "ci", "ttl": "1h"}),
        "token-revoke": req("POST /v1/tokens/revoke", {"id": 2}),
        "node-revoke": req("POST /v1/nodes/revoke", {"node": "node-2"}),
        "nodes": req("GET /v1/nodes"),
        "flows": req("GET /v1/flows?since=1h&verdict=denied&limit=5"),
        "alerts": req("GET /v1/alerts?after=0"),
        "explain": req("GET /v1/explain?from=tools/debug&to=data/db&probe=TCP/5432"),
        "map": req("GET /v1/map?since=1d&group_by=workload&format=dot"),
        "propose": req("GET /v1/propose?since=1d&format=networkpolicy&namespace=shop"),
        "simulate": req("POST /v1/simulate read", {"documents": [{"file": "np.yaml", "text": np}], "since": "1d"}),
        "quarantine": req("POST /v1/quarantine", {"workload": "tools/debug", "reason": "fuzz", "allow_from": "app=web"}),
        "release": req("POST /v1/release", {"workload": "tools/debug"}),
        "import": req("POST /v1/imports", {"source": "scanner", "file": "r.csv", "text": "ip,cve\n10.244.0.1,vulnerable\n"}),
        "imports": req("GET /v1/imports"),
        "forbidden": req("POST /v1/apply read", {"documents": []}),
        "bad-auth": req("GET /v1/policies Basic Zm9vOmJhcg=="),
        "openapi": req("GET /v1/openapi.json none"),
        "metrics": req("GET /metrics read"),
        "apply-host": req("POST /v1/apply", {"documents": [{"file": "h.yaml", "text": "apiVersion: cellwall.io/v1alpha1\nkind: Host\nmetadata: {name: vm, namespace: hosts, labels: {role: web}}\nspec: {node: node-2, addresses: [10.40.0.1]}\n"}]}),
        "agent-watch-host": b"AGENT watch node-2\n" + watch_request("node-2", 0, [local_workload("hosts/vm", ["10.40.0.1"], "eth0", {"role": "db"}, True)]),
        "no-route": req("PUT /v1/nothing"),
        "whoami": req("GET /v1/whoami read"),
        "flows-page": req("GET /v1/flows?before=50&port=5432&limit=20"),
        "console": req("GET /ui/ none"),
        "console-js": req("GET /ui/app.js none"),
        "console-redirect": req("GET / none"),
        "agent-join": b"AGENT join\n" + join_request("bootstrap", "node-3"),
        "agent-join-bad": b"AGENT join\n" + join_request("cwb_guess", "Node_3"),
        "agent-watch": b"AGENT watch node-1\n" + watch_request("node-1", 0, [wl]),
        "agent-flows": b"AGENT flows node-1\n" + flow_batch("node-1", [rec]),
        "agent-renew": b"AGENT renew node-2\n" + field_bytes(1, "node-2"),
    }
    for name, data in seeds.items():
        write("rest", name, data)


if __name__ == "__main__":
    for t in ["manifest", "import", "proto", "api", "rest"]:
        d = CORPUS / t
        if d.exists():
            # Inputs that once crashed a target (regression-*) are kept.
            for f in d.iterdir():
                if not f.name.startswith("regression-"):
                    f.unlink()
    manifest()
    imports()
    proto()
    api()
    rest()
    for t in sorted(CORPUS.iterdir()):
        print(f"{t.name}: {len(list(t.iterdir()))} seeds")
