#!/usr/bin/env python3
"""Reports dependency cycles between the modules (source files) of crates.

A module depends on another when it names it: `crate::a::...`, `super::...`,
a `use crate::{Name}` of an item the crate root re-exports from module `a`,
or `self::child`. Cycles make a crate one tangle instead of layers, so CI
refuses them. Usage: module-cycles.py CRATE_DIR... (exit 1 on a cycle).
"""
import os
import re
import sys


def modules(src):
    """Maps module path ('' for the root, 'a', 'a::b') to its file."""
    mods = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), src)[:-3]
            parts = rel.split(os.sep)
            if parts[-1] in ("lib", "main", "mod"):
                parts = parts[:-1]
            if parts and parts[0] == "bin":
                continue
            if rel == "main" and os.path.exists(os.path.join(src, "lib.rs")):
                continue  # the binary of a crate that also has a library
            mods["::".join(parts)] = os.path.join(dirpath, f)
    return mods


def strip(text):
    text = re.sub(r"//[^\n]*", "", text)  # comments and doc comments
    text = re.sub(r'"(\\.|[^"\\])*"', '""', text)
    # inline test modules are not part of the layering
    m = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
    if m:
        text = text[: m.start()]
    return text


def reexports(root_text):
    """Names the crate root re-exports: name -> module path."""
    out = {}
    for m in re.finditer(r"pub\s+use\s+(?:self::|crate::)?([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)::(\{[^}]*\}|\w+)\s*;", root_text, re.S):
        path, names = m.group(1), m.group(2)
        for n in re.findall(r"\b([A-Za-z_]\w*)\b(?:\s+as\s+(\w+))?", names.strip("{}")):
            out[n[1] or n[0]] = path
    return out


def resolve(path, mods):
    """The longest module prefix of a `::` path."""
    parts = path.split("::")
    for k in range(len(parts), 0, -1):
        cand = "::".join(parts[:k])
        if cand in mods:
            return cand
    return None


def graph(crate):
    src = os.path.join(crate, "src")
    mods = modules(src)
    if "" not in mods:
        return {}
    root = strip(open(mods[""]).read())
    names = reexports(root)
    edges = {m: set() for m in mods if m}
    for m, f in mods.items():
        if not m:
            continue
        text = strip(open(f).read())
        parent = m.rsplit("::", 1)[0] if "::" in m else ""
        deps = set()
        for p in re.findall(r"\bcrate::((?:\w+::)*\w+)", text):
            r = resolve(p, mods)
            if r:
                deps.add(r)
            else:
                first = p.split("::")[0]
                if first in names:
                    deps.add(names[first])
        for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
            for n in re.findall(r"\b(\w+)\b", group):
                if n in names:
                    deps.add(names[n])
                elif n in mods:
                    deps.add(n)
        for p in re.findall(r"\bsuper::((?:\w+::)*\w+)", text):
            r = resolve((parent + "::" + p) if parent else p, mods)
            deps.add(r if r else parent)
        for p in re.findall(r"\bself::(\w+)", text):
            child = m + "::" + p
            if child in mods:
                deps.add(child)
        # a parent declaring `mod child;` and using it
        for p in re.findall(r"\b(\w+)::", text):
            child = (m + "::" + p)
            if child in mods:
                deps.add(child)
        deps.discard(m)
        deps.discard("")
        edges[m] = {d for d in deps if d in edges}
    return edges


def cycles(edges):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
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
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main():
    bad = 0
    for crate in sys.argv[1:]:
        edges = graph(crate)
        for comp in cycles(edges):
            bad += 1
            inner = {m: sorted(d for d in edges[m] if d in comp) for m in comp}
            print(f"{crate}: modules depend on each other in a cycle:")
            for m in comp:
                print(f"    {m} -> {', '.join(inner[m])}")
        if "-v" in os.environ.get("MODULE_CYCLES", ""):
            for m in sorted(edges):
                print(f"  {crate}: {m} -> {', '.join(sorted(edges[m]))}")
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
