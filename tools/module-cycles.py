#!/usr/bin/env python3
"""Lists the import circles between the top-level modules of each Rust crate in the tree.

A module `a` depends on `b` when any file of `a` names `crate::b` in code (a `use` line or a
path; comments and doc links do not count).
Circles are the strongly connected components with more than one module. Exits 1 when there are
any, so `make lint` keeps them gone. Reads text only: no build needed.
"""
import pathlib
import re
import sys

PATH = re.compile(r"\bcrate::(?:\{([^}]*)\}|([a-z_][a-z0-9_]*))")


def top_module(src: pathlib.Path, file: pathlib.Path) -> str | None:
    rel = file.relative_to(src)
    if rel.parts[0] in ("lib.rs", "main.rs") or rel.parts[0] == "bin":
        return None  # the crate root wires modules together; it is not one of them
    return rel.parts[0].removesuffix(".rs")


def graph(src: pathlib.Path) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for file in sorted(src.rglob("*.rs")):
        module = top_module(src, file)
        if module is None:
            continue
        targets = edges.setdefault(module, set())
        # Doc comments link to other modules without depending on them.
        text = "\n".join(
            line for line in file.read_text().splitlines() if not line.lstrip().startswith("//")
        )
        for group, single in PATH.findall(text):
            names = [single] if single else [n.strip().split("::")[0] for n in group.split(",")]
            for name in names:
                name = name.strip()
                if name and name not in ("self", module):
                    targets.add(name)
    return {m: {t for t in ts if t in edges} for m, ts in edges.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, keeping those of two or more modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    total = 0
    for manifest in sorted(root.glob("*/Cargo.toml")):
        src = manifest.parent / "src"
        if not src.is_dir():
            continue
        for component in circles(graph(src)):
            total += 1
            print(f"{manifest.parent.name}: {' <-> '.join(component)}")
    print(f"{total} import circle(s) between top-level modules")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
