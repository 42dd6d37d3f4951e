#!/usr/bin/env python3
"""Fails when the modules of a crate depend on each other in a cycle.

A module's dependencies are the top-level modules it names through `crate::` (in `use`
lines and in paths); a module's submodules count as the module. Test code
(`#[cfg(test)] mod tests`, to the end of the file) is left out: tests may reach anywhere.
Usage: module_cycles.py [CRATE_SRC_DIR ...]  (default: every crate of the workspace)
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT = ["cloudrun-test/src", "cloudrun-test-cli/src", "cloudrun-test-emulator/src",
           "cloudrun-test-macros/src"]
CRATE_PATH = re.compile(r"\bcrate::(?:\{([^}]*)\}|([a-z_][a-z0-9_]*))")


def top_module(src, path):
    rel = path.relative_to(src).with_suffix("")
    first = rel.parts[0]
    return None if first in ("lib", "main") else first


def code_without_tests(text):
    cut = re.search(r"#\[cfg\(test\)\]\s*mod\s+tests\b", text)
    text = text[: cut.start()] if cut else text
    text = re.sub(r"//[^\n]*", "", text)  # comments and doc comments name modules freely
    return text


def graph(src):
    edges = {}
    for path in sorted(src.rglob("*.rs")):
        module = top_module(src, path)
        if module is None:
            continue
        deps = edges.setdefault(module, set())
        for group, single in CRATE_PATH.findall(code_without_tests(path.read_text())):
            names = [single] if single else [
                part.strip().split("::")[0].split(" ")[0] for part in group.split(",")]
            for name in names:
                if name and name not in ("self", module):
                    deps.add(name)
    return edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for dep in sorted(edges.get(node, ())):
            if dep not in edges:
                continue
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def main():
    dirs = sys.argv[1:] or DEFAULT
    failed = False
    for name in dirs:
        src = (ROOT / name).resolve()
        edges = graph(src)
        found = cycles(edges)
        if not found:
            print(f"{name}: {len(edges)} modules, no cycle")
        for component in found:
            failed = True
            links = [f"{a} -> {b}" for a in component for b in sorted(edges[a]) if b in component]
            print(f"{name}: cycle between {', '.join(component)}: {'; '.join(links)}")
    if failed:
        print("fix: move what both modules need into a third module they both use,"
              " or invert the dependency")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
