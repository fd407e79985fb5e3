#!/usr/bin/env python3
"""Fails if any crate of the workspace has a module cycle.

A module depends on another when its code names it (`crate::a::...`,
`super::b`, or an item the crate root re-exports from it: `crate::Thing`
where lib.rs says `pub use a::Thing`). Declaring a child (`mod b;`) is not a
dependency; using it is. Test modules (`mod tests`, `tests.rs`) are left
out: they may look at everything. The check is textual, which is enough for
this codebase's plain `use` style.

Usage: python3 scripts/module-cycles.py [CRATE_DIR ...]   (default: every crate)
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRATES = ["manifest", "mover", "pg", "helm", "snapshot", "cli"]


def modules(src: pathlib.Path):
    """Module path ('a::b') -> file, for every .rs file under src."""
    out = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] in ("lib", "main") and len(parts) == 1:
            parts = []
        elif parts[-1] == "mod":
            parts = parts[:-1]
        if parts and parts[-1] == "tests":
            continue
        out["::".join(parts)] = f
    return out


def strip_tests(text: str) -> str:
    """Drops `#[cfg(test)] mod tests { ... }` blocks and comments."""
    text = re.sub(r"//[^\n]*", "", text)
    m = re.search(r"#\[cfg\(test\)\]\s*mod \w+ \{", text)
    if m:
        text = text[: m.start()]
    return text


def reexports(root_text: str):
    """Item name -> module, from the root's `pub use m::{A, B}` lines."""
    out = {}
    for m in re.finditer(r"pub use (\w+)(?:::(\w+))?::\{?([^;]*?)\}?;", root_text):
        module = m.group(1) if not m.group(2) else f"{m.group(1)}::{m.group(2)}"
        for item in re.split(r"[,\s]+", m.group(3)):
            item = item.split(" as ")[-1].strip()
            if item:
                out[item] = module
    return out


def edges(mods):
    root = strip_tests(mods[""].read_text())
    items = reexports(root)
    graph = {m: set() for m in mods}
    for name, f in mods.items():
        text = strip_tests(f.read_text())
        here = name.split("::") if name else []
        targets = []
        for m in re.finditer(r"\bcrate::((?:\w+::)*\w+)", text):
            targets.append(m.group(1).split("::"))
        for m in re.finditer(r"\b((?:super::)+)((?:\w+::)*\w+)", text):
            ups = m.group(1).count("super::")
            targets.append(here[: len(here) - ups] + m.group(2).split("::"))
        # `use crate::{a, b::c}` groups
        for m in re.finditer(r"use crate::\{([^;]*)\};", text):
            for part in re.split(r"[,\s]+", m.group(1)):
                part = part.strip("{} ")
                if part:
                    targets.append(part.split("::"))
        for t in targets:
            dep = None
            for k in range(len(t), 0, -1):
                cand = "::".join(t[:k])
                if cand in mods:
                    dep = cand
                    break
            if dep is None and t and t[0] in items:
                dep = items[t[0]]
            if dep is None:
                dep = ""  # an item defined in the crate root itself
            if dep != name:
                graph[name].add(dep)
    return graph


def cycles(graph):
    found = []
    state = {}

    def visit(n, stack):
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if d not in graph:
                continue
            if state.get(d) == 1:
                found.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [])
    return found


def main():
    crates = sys.argv[1:] or CRATES
    bad = False
    for c in crates:
        src = ROOT / c / "src"
        mods = modules(src)
        if "" not in mods:
            continue
        for cyc in cycles(edges(mods)):
            bad = True
            shown = " -> ".join(m or "(crate root)" for m in cyc)
            print(f"{c}: module cycle: {shown}")
    if bad:
        sys.exit(1)
    print(f"no module cycles in {', '.join(crates)}")


if __name__ == "__main__":
    main()
