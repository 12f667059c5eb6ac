#!/usr/bin/env python3
"""Validates deploy/ as a cluster would see it: each kustomization's resources rendered the way
kustomize renders a plain base (its `namespace` set on namespaced objects, `images` rewritten),
then every object checked against the Kubernetes API's own OpenAPI schemas (the
`kubernetes-validate` package, strict: unknown fields are errors) for each supported version.

kustomize itself is not installable on these machines (a Go program; no Debian package here),
so the rendering is done here, and it refuses any kustomization field it does not implement
rather than skip it. `kubectl kustomize deploy/` renders the same objects.
Then Cellwall's own objects are checked against the generated CRDs (deploy/crds.yaml) the way
the API server would check them on create (scripts/crdcheck.py: structural schema and CEL
rules): every example in examples/ must be accepted, and each case in
crates/kube/tests/crd_cases.yaml accepted or refused as it says (the loader is held to the same
list by crates/kube/tests/crds.rs).
Exit status 1 names every file, document and error."""

import sys
from pathlib import Path

import kubernetes_validate
import yaml

import crdcheck

# The Kubernetes versions Cellwall supports (the oldest with TCX-capable nodes is a node
# question, not an API one): every rendered object must validate on each.
VERSIONS = ["1.31", "1.34", "1.37"]
# Kinds without a namespace (everything else gets the kustomization's namespace).
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
KNOWN_FIELDS = {"apiVersion", "kind", "namespace", "resources", "images"}


def render(kdir: Path):
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    unknown = set(k) - KNOWN_FIELDS
    if unknown:
        raise SystemExit(f"{kdir}/kustomization.yaml: fields this renderer does not implement: {sorted(unknown)}")
    images = {i["name"]: i for i in k.get("images", [])}
    for res in k["resources"]:
        path = kdir / res
        for n, doc in enumerate(yaml.safe_load_all(path.read_text()), 1):
            if doc is None:
                continue
            if "namespace" in k and doc["kind"] not in CLUSTER_SCOPED:
                doc.setdefault("metadata", {})["namespace"] = k["namespace"]
            spec = doc.get("spec", {}).get("template", {}).get("spec", {})
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                img = images.get(c["image"])
                if img:
                    c["image"] = f'{img["newName"]}:{img["newTag"]}'
            yield f"{path}#{n} ({doc['kind']} {doc['metadata'].get('name')})", doc


def main() -> int:
    root = Path(__file__).resolve().parent.parent / "deploy"
    kdirs = sorted(p.parent for p in root.rglob("kustomization.yaml"))
    failures, checked = [], 0
    for kdir in kdirs:
        for where, doc in render(kdir):
            for v in VERSIONS:
                try:
                    kubernetes_validate.validate(doc, v, strict=True)
                except kubernetes_validate.ValidationError as e:
                    failures.append(f"{where} on Kubernetes {v}: {e.message} at {'.'.join(map(str, e.path))}")
                except kubernetes_validate.InvalidSchemaError as e:
                    failures.append(f"{where} on Kubernetes {v}: {e}")
            checked += 1
    crds = [d for d in yaml.safe_load_all((root / "crds.yaml").read_text()) if d]
    crd_failures, cases = check_cellwall_objects(root.parent, crds)
    for f in failures + crd_failures:
        print(f, file=sys.stderr)
    print(f"deploy/: {checked} objects from {len(kdirs)} kustomizations, Kubernetes {', '.join(VERSIONS)}: {len(failures)} errors")
    print(f"CRDs: {cases} Cellwall objects (examples and crd_cases.yaml) against {len(crds)} CRDs: {len(crd_failures)} errors")
    return 1 if failures or crd_failures else 0


def check_cellwall_objects(repo: Path, crds):
    """Examples must be accepted; each case as its `cellwall.io/test-expect` annotation says."""
    failures, n = [], 0
    docs = []
    for path in sorted((repo / "examples").rglob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text()), 1):
            if doc and str(doc.get("apiVersion", "")).startswith("cellwall.io/"):
                docs.append((f"{path.relative_to(repo)}#{i}", doc, "accepted"))
    cases = repo / "crates/kube/tests/crd_cases.yaml"
    for i, doc in enumerate(yaml.safe_load_all(cases.read_text()), 1):
        expect = doc["metadata"]["annotations"]["cellwall.io/test-expect"]
        docs.append((f"{cases.relative_to(repo)}#{i} ({doc['metadata']['name']})", doc, expect))
    for where, doc, expect in docs:
        errors = crdcheck.validate(crds, doc)
        if expect == "accepted" and errors:
            failures.append(f"{where}: refused by the CRD: {'; '.join(errors)}")
        elif expect == "refused" and not errors:
            failures.append(f"{where}: accepted by the CRD, but the loader refuses it")
        n += 1
    return failures, n


if __name__ == "__main__":
    sys.exit(main())
