#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a cycle.

Usage: scripts/check-module-cycles.py [--folders] SRC_DIR...

Each SRC_DIR is a library crate's `src/` (its `lib.rs` is the crate root).
A module is a file; an edge is a `crate::`, `super::` or `self::` path in
non-test code that names another module (or an item a module re-exports
with `pub use`). Paths between a module and its own ancestors or
descendants are containment, not imports, and are ignored; so is test code
(`#[cfg(test)]` modules and `tests.rs` files). With `--folders` the
top-level modules (`http`, `routing`, ...) are checked as well, each folder
taken as one node. Prints every cycle and exits 1 when there is one.
"""

import re
import sys
from pathlib import Path


def module_of(src: Path, file: Path) -> tuple:
    rel = file.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts in (["lib"],):
        return ()
    if parts[-1] == "mod":
        parts = parts[:-1]
    return tuple(parts)


def code_of(text: str) -> str:
    """The non-test code of a file, without comments and string contents."""
    out = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == "#[cfg(test)]" and i + 1 < len(lines) and re.match(r"\s*mod \w+", lines[i + 1]):
            # Skip the test module: to its closing brace, or the `mod x;` line.
            if lines[i + 1].rstrip().endswith(";"):
                i += 2
                continue
            depth = 0
            i += 1
            while i < len(lines):
                depth += lines[i].count("{") - lines[i].count("}")
                i += 1
                if depth <= 0:
                    break
            continue
        out.append(re.sub(r"//.*", "", line))
        i += 1
    code = "\n".join(out)
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', code)


def expand_groups(code: str) -> list:
    """Every path in the code, with `a::{b, c::d}` groups expanded."""
    paths = []

    def expand(prefix: str, body: str):
        depth, start = 0, 0
        items = []
        for j, ch in enumerate(body):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                items.append(body[start:j])
                start = j + 1
        items.append(body[start:])
        for item in items:
            item = item.strip()
            if not item:
                continue
            m = re.match(r"^([\w:]*?)::\{(.*)\}$", item, re.S)
            if m:
                expand(prefix + m.group(1) + "::", m.group(2))
            else:
                paths.append(prefix + item.split(" as ")[0].strip())

    for m in re.finditer(r"\b((?:crate|super|self)(?:::\w+)*)::\{", code):
        depth, j = 1, m.end()
        while j < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[j], 0)
            j += 1
        expand(m.group(1) + "::", code[m.end(): j - 1])
    paths += re.findall(r"\b(?:crate|super|self)(?:::\w+)+", code)
    return paths


def absolute(path: str, here: tuple, is_dir_module: bool) -> list:
    parts = path.split("::")
    base = list(here)
    # `super` in a file module `a/b.rs` is `a`; in `a/mod.rs` it is a's parent.
    if parts[0] == "crate":
        base, parts = [], parts[1:]
    else:
        while parts and parts[0] in ("super", "self"):
            if parts[0] == "super":
                base = base[:-1]
            parts = parts[1:]
    return base + [p for p in parts if p != "self"]


def check(srcs: list, folders: bool) -> int:
    cycles = 0
    for src in map(Path, srcs):
        files = [f for f in sorted(src.rglob("*.rs")) if f.name not in ("main.rs", "tests.rs")]
        modules = {module_of(src, f): f for f in files}
        reexports = {}
        for mod, f in modules.items():
            for m in re.finditer(r"pub use (\w+)::\{?([\w, ]+)\}?;", code_of(f.read_text())):
                for name in m.group(2).split(","):
                    reexports[mod + (name.strip(),)] = mod + (m.group(1),)

        def resolve(parts: list):
            for n in range(len(parts), -1, -1):
                key = tuple(parts[:n])
                if n < len(parts) and key + (parts[n],) in reexports:
                    return reexports[key + (parts[n],)]
                if key in modules:
                    return key
            return None

        edges = {m: set() for m in modules}
        for mod, f in modules.items():
            for path in expand_groups(code_of(f.read_text())):
                target = resolve(absolute(path, mod, f.name == "mod.rs"))
                if target is None or target[: len(mod)] == mod or mod[: len(target)] == target:
                    continue
                edges[mod].add(target)
        graphs = [("module", edges)]
        if folders:
            top = {}
            for a, bs in edges.items():
                for b in bs:
                    if a[:1] != b[:1] and a and b:
                        top.setdefault(a[:1], set()).add(b[:1])
            graphs.append(("folder", top))
        for kind, graph in graphs:
            for scc in strongly_connected(graph):
                if len(scc) > 1:
                    cycles += 1
                    names = sorted("::".join(m) or "crate" for m in scc)
                    print(f"{src}: {kind} cycle: {' <-> '.join(names)}")
                    for a in sorted(scc):
                        for b in sorted(graph.get(a, ())):
                            if b in scc:
                                print(f"    {'::'.join(a)} -> {'::'.join(b)}")
    if cycles == 0:
        print("no import cycles")
    return 1 if cycles else 0


def strongly_connected(graph: dict) -> list:
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = set()
            while True:
                w = stack.pop()
                on.discard(w)
                scc.add(w)
                if w == v:
                    break
            out.append(scc)

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    folders = "--folders" in args
    args = [a for a in args if a != "--folders"]
    sys.exit(check(args or ["host/src"], folders))
