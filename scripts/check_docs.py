#!/usr/bin/env python3
"""Every repository path the documentation names must exist: README.md, ARCHITECTURE.md and
docs/*.md mention files as `crates/...`, `bpf/...`, `scripts/...`, `docs/...`, `examples/...`
(in backticks or links); a renamed or deleted file leaves a stale pointer that this check
reports with its line. Paths with wildcards or placeholders (`*`, `NAME`, `...`) are skipped."""
import glob
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DOCS = ["README.md", "ARCHITECTURE.md"] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
PATH = re.compile(r"(?<![\w/.-])((?:crates|bpf|scripts|docs|examples|deploy)/[A-Za-z0-9_./-]*[A-Za-z0-9_/])")


def main():
    bad = []
    for doc in DOCS:
        path = doc if os.path.isabs(doc) else os.path.join(ROOT, doc)
        if not os.path.exists(path):
            continue
        for n, line in enumerate(open(path, encoding="utf-8"), 1):
            for p in PATH.findall(line):
                if any(x in p for x in ("*", "...", "NAME", "LAB", "{")):
                    continue
                p = p.rstrip("/.")
                if not os.path.exists(os.path.join(ROOT, p)):
                    bad.append(f"{os.path.relpath(path, ROOT)}:{n}: {p} does not exist")
    for b in bad:
        print("invariant broken: " + b, file=sys.stderr)
    if bad:
        sys.exit(1)
    print(f"docs: every repository path named in {len(DOCS)} documents exists")


if __name__ == "__main__":
    main()
