#!/usr/bin/env python3
"""Architecture checks on the Rust sources that a grep cannot do:

1. No import cycles between modules: within every crate, for every module, its child modules
   (siblings of each other) must form an acyclic graph of `crate::`/`super::`/`self::` uses
   (a use anywhere inside a child counts for that child). Cycles are printed with the lines
   that make them.
2. No hand-written source file over MAX_LINES lines (src, tests, benches), so no module mixes
   concerns by sheer size.

Exit status 1 when either is broken."""
import os
import re
import sys
from collections import defaultdict

MAX_LINES = 700
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CRATES = os.path.join(ROOT, "crates")

USE_RE = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
MOD_RE = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([A-Za-z_][A-Za-z0-9_]*)\s*;", re.M)


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def module_files(src):
    """Maps module path (tuple) -> file, following `mod x;` declarations from lib.rs/main.rs."""
    out = {}

    def visit(path, file):
        out[path] = file
        text = strip_comments(open(file, encoding="utf-8").read())
        base = os.path.dirname(file)
        stem = os.path.splitext(os.path.basename(file))[0]
        own_dir = base if stem in ("lib", "main", "mod") else os.path.join(base, stem)
        for m in MOD_RE.findall(text):
            for cand in (os.path.join(own_dir, m + ".rs"), os.path.join(own_dir, m, "mod.rs")):
                if os.path.exists(cand):
                    visit(path + (m,), cand)
                    break

    for root in ("lib.rs", "main.rs"):
        f = os.path.join(src, root)
        if os.path.exists(f):
            visit((), f)
    return out


def resolve(mods, here, kind, segs):
    """The module a `crate::`/`super::`/`self::` path names (its longest known prefix)."""
    if kind == "crate":
        base = ()
    elif kind == "self":
        base = here
    else:
        base = here[:-1]
    full = base + tuple(segs)
    while full and full not in mods:
        full = full[:-1]
    return full


def cycles_in(crate, mods):
    problems = []
    # edges[(parent)][a][b] = [evidence]
    edges = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for here, file in mods.items():
        lines = strip_comments(open(file, encoding="utf-8").read()).split("\n")
        for n, line in enumerate(lines, 1):
            for kind, rest in USE_RE.findall(line):
                segs = [s for s in rest.split("::") if s]
                target = resolve(mods, here, kind, segs)
                # The first module where the paths of `here` and `target` part ways.
                i = 0
                while i < len(here) and i < len(target) and here[i] == target[i]:
                    i += 1
                if i < len(here) and i < len(target):
                    parent = here[:i]
                    a, b = here[i], target[i]
                    edges[parent][a][b].append(f"{os.path.relpath(file, ROOT)}:{n}")
    for parent, g in edges.items():
        for cyc in find_cycles(g):
            where = "::".join(("crate",) + parent)
            chain = " -> ".join(cyc + [cyc[0]])
            ev = []
            for x, y in zip(cyc, cyc[1:] + cyc[:1]):
                ev.append(f"    {x} -> {y}: {g[x][y][0]}")
            problems.append(f"{crate}: module cycle under {where}: {chain}\n" + "\n".join(ev))
    return problems


def find_cycles(g):
    """One cycle per strongly connected component with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    nodes = set(g) | {b for a in g for b in g[a]}

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, {}):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(path_through(g, sorted(comp)))

    for v in sorted(nodes):
        if v not in index:
            strong(v)
    return out


def path_through(g, comp):
    """A simple cycle inside a strongly connected component, starting at its first node."""
    start, members = comp[0], set(comp)
    prev, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(g.get(v, {})):
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    return list(reversed(path))
                if w in members and w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp


def long_files():
    out = []
    for crate in sorted(os.listdir(CRATES)):
        for sub in ("src", "tests", "benches"):
            d = os.path.join(CRATES, crate, sub)
            for root, _, files in os.walk(d):
                for f in files:
                    if f.endswith(".rs"):
                        p = os.path.join(root, f)
                        n = sum(1 for _ in open(p, encoding="utf-8"))
                        if n > MAX_LINES:
                            out.append(f"{os.path.relpath(p, ROOT)}: {n} lines (at most {MAX_LINES})")
    return out


def main():
    problems = []
    count = 0
    for crate in sorted(os.listdir(CRATES)):
        src = os.path.join(CRATES, crate, "src")
        if not os.path.isdir(src):
            continue
        mods = module_files(src)
        count += len(mods)
        problems += cycles_in(crate, mods)
    problems += long_files()
    for p in problems:
        print("invariant broken: " + p, file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"modules: no import cycles among {count} modules; no source file over {MAX_LINES} lines")


if __name__ == "__main__":
    main()
