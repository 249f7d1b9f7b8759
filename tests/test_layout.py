"""The package's floor plan: parts a reader can name, imports that point one way.

Read from the source (nothing is imported): every ``import`` and ``from ... import`` of
a package module counts, at module level, inside a function or under ``TYPE_CHECKING``
alike, since each one ties the two modules together.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "prefect_pollers"

PARTS = [
    "__init__.py",
    "batch",
    "cli",
    "client.py",
    "durable",
    "engine",
    "events",
    "ledger",
    "limits",
    "ops",
    "providers",
    "py.typed",
    "tasks",
    "testing",
    "webhooks",
]
"""The top level, one entry a part (docs/development.md, "Layout")."""

FLOORS = [
    ["engine"],
    ["limits"],
    ["providers"],
    ["client"],
    ["ledger", "events"],
    ["webhooks", "ops"],
    ["tasks"],
    ["batch"],
    ["durable"],
    ["testing"],
    ["cli"],
    ["__init__"],
]
"""The parts from the bottom up: a part imports only parts on floors below its own."""

UPWARD = {("prefect_pollers.providers.base", "prefect_pollers.client")}
"""The one import up a floor: a block's ``get_client`` (Prefect's ``CredentialsBlock``
interface) builds the client, which reads blocks through ``providers.protocol`` and so
never imports a block module back."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                wanted = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                wanted = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for each in wanted:
                target = resolve(each) if each.startswith("prefect_pollers") else None
                if target and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_the_top_level_is_the_parts_and_nothing_else() -> None:
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__")
    assert entries == sorted(PARTS)
    assert len(entries) <= 15


def test_no_module_imports_itself_back() -> None:
    assert cycles(import_graph()) == []


def test_parts_import_only_the_floors_below_them() -> None:
    floor = {part: level for level, parts in enumerate(FLOORS) for part in parts}
    upward = []
    for module, targets in import_graph().items():
        for target in targets:
            here, there = part_of(module), part_of(target)
            if here != there and floor[there] >= floor[here] and (module, target) not in UPWARD:
                upward.append(f"{module} -> {target}")
    assert sorted(upward) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
