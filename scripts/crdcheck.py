"""Validates objects against a CustomResourceDefinition as the API server does on create: the
structural schema (types, nullable, enums, ranges, lengths, patterns, formats, required fields,
unknown fields refused as strict field validation does, which is kubectl's default) and the
CEL rules (`x-kubernetes-validations`, evaluated with cel-python, plus the Kubernetes CEL
functions our rules use). Used by validate-deploy.py on Cellwall's examples and on
crates/kube/tests/crd_cases.yaml, whose expectations the loader is held to as well."""

import re
from datetime import datetime

import celpy

_ENV = celpy.Environment()
_PROGRAMS = {}


def _cel(rule, value):
    prog = _PROGRAMS.get(rule)
    if prog is None:
        prog = _PROGRAMS[rule] = _ENV.program(_ENV.compile(rule))
    out = prog.evaluate({"self": celpy.json_to_cel(value)})
    if isinstance(out, Exception):
        raise out
    return bool(out)


def _type_ok(t, v):
    return {
        "object": isinstance(v, dict),
        "array": isinstance(v, list),
        "string": isinstance(v, str),
        "boolean": isinstance(v, bool),
        "integer": isinstance(v, int) and not isinstance(v, bool),
        "number": isinstance(v, (int, float)) and not isinstance(v, bool),
    }[t]


def _date_time(s):
    try:
        datetime.fromisoformat(s)
        return "T" in s
    except ValueError:
        return False


def check(schema, v, at="", errors=None):
    """Every error of `v` against `schema`, each with its field path."""
    errors = [] if errors is None else errors
    err = lambda m: errors.append(f"{at or '.'}: {m}")
    if v is None:
        if not schema.get("nullable"):
            err("null is not allowed")
        return errors
    if schema.get("x-kubernetes-int-or-string"):
        if not (_type_ok("integer", v) or isinstance(v, str)):
            err("expected an integer or a string")
            return errors
    elif "type" in schema and not _type_ok(schema["type"], v):
        err(f"expected {schema['type']}, got {type(v).__name__}")
        return errors
    if "enum" in schema and v not in schema["enum"]:
        err(f"{v!r} is not one of {schema['enum']}")
    if isinstance(v, str):
        if len(v) > schema.get("maxLength", len(v)) or len(v) < schema.get("minLength", 0):
            err(f"length {len(v)} outside {schema.get('minLength', 0)}..{schema.get('maxLength')}")
        if "pattern" in schema and not re.search(schema["pattern"], v):
            err(f"{v!r} does not match {schema['pattern']}")
        if schema.get("format") == "date-time" and not _date_time(v):
            err(f"{v!r} is not an RFC 3339 date-time")
    if _type_ok("number", v):
        if v < schema.get("minimum", v) or v > schema.get("maximum", v):
            err(f"{v} outside {schema.get('minimum')}..{schema.get('maximum')}")
    if isinstance(v, list):
        if len(v) < schema.get("minItems", 0):
            err(f"{len(v)} items, at least {schema['minItems']} needed")
        for i, item in enumerate(v):
            check(schema.get("items", {}), item, f"{at}[{i}]", errors)
    if isinstance(v, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for k, item in v.items():
            if props is not None and k in props:
                check(props[k], item, f"{at}.{k}", errors)
            elif isinstance(extra, dict):
                check(extra, item, f"{at}.{k}", errors)
            elif props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                err(f"unknown field {k!r}")
        for r in schema.get("required", []):
            if r not in v:
                err(f"required field {r!r} is missing")
    if not errors:
        for rule in schema.get("x-kubernetes-validations", []):
            if not _cel(rule["rule"], v):
                err(rule.get("message", rule["rule"]))
    return errors


def crd_for(crds, doc):
    """The CRD that serves `doc`'s apiVersion and kind, and its version's schema."""
    group, _, version = doc.get("apiVersion", "").rpartition("/")
    for c in crds:
        s = c["spec"]
        if s["group"] == group and s["names"]["kind"] == doc.get("kind"):
            for ver in s["versions"]:
                if ver["name"] == version:
                    return c, ver["schema"]["openAPIV3Schema"]
    return None, None


def validate(crds, doc):
    """Errors the API server would give creating `doc` (metadata is the API server's own)."""
    crd, schema = crd_for(crds, doc)
    if crd is None:
        return [f"no CRD serves {doc.get('apiVersion')} {doc.get('kind')}"]
    body = {k: v for k, v in doc.items() if k != "metadata"}
    errors = check(schema, body)
    namespaced = crd["spec"]["scope"] == "Namespaced"
    if not namespaced and doc.get("metadata", {}).get("namespace"):
        errors.append(".metadata.namespace: the kind is cluster-scoped")
    return errors
