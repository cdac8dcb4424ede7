"""The shape of services/, read from the code itself (ast), never by importing it.

- Layers point one way: protos/gen <- common <- orchestrator, judge, accounting <- the tools
  (client, launcher, supervisor, suite_file, gateway, loadtest, cli). A service never imports another service, and
  nothing imports a layer above its own.
- The import graph of services/ has no cycle.
- A service's domain modules never load grpc, not even through a module they import: only its
  transport edges (__main__, server, servicer, transport, clients) do.
- No module imports services code inside a function (the old way of dodging a cycle), except
  the allowlisted lazy imports that keep httpx and LiteLLM out of a service's start-up.
- No module of the services (orchestrator, judge, accounting, common) reads the environment,
  except the settings modules: settings are read once and passed down. Setting a variable that
  a library reads (TIKTOKEN_CACHE_DIR, LITELLM_LOCAL_MODEL_COST_MAP) is not a read.
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"

COMMON = "services.common"
SERVICE_PACKAGES = ("services.orchestrator", "services.judge", "services.accounting")
TOOLS = (
    "services.client",
    "services.launcher",
    "services.supervisor",
    "services.suite_file",
    "services.gateway",
    "services.loadtest",
    "services.cli",
)
LAYER_NAMES = {0: "protos/gen", 1: "common", 2: "a service", 3: "a tool"}

# (importing module, imported module): imports inside a function that are not cycle dodges.
LAZY_IMPORTS = {
    # The providers import httpx (and LiteLLM on their first call): a service that serves only
    # the simulated models never loads either.
    ("services.common.llm.router", "services.common.llm.openai_compat"),
    ("services.common.llm.router", "services.common.llm.openai_httpx"),
    ("services.common.llm.router", "services.common.llm.anthropic_native"),
    ("services.common.llm.router", "services.common.llm.litellm_provider"),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(SERVICES.rglob("*.py"))}


@cache
def _tree(name: str) -> ast.Module:
    path = _modules()[name]
    return ast.parse(path.read_text(), filename=str(path))


def _is_package(name: str) -> bool:
    return _modules()[name].name == "__init__.py"


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute name `from <node.module> import ...` refers to, inside `module`."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if _is_package(module) else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _target(name: str) -> str | None:
    """The module of services/ that `name` is, or lies in (services.common.tokens.count -> services.common.tokens)."""
    while name:
        if name in _modules():
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> Iterator[tuple[str, ast.stmt, bool]]:
    """(imported module of services/, the import statement, whether it is inside a function)."""

    def visit(node: ast.AST, in_function: bool) -> Iterator[tuple[str, ast.stmt, bool]]:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    target = _target(alias.name)
                    if target:
                        yield target, child, inner
            elif isinstance(child, ast.ImportFrom):
                base = _absolute(module, child)
                for alias in child.names:
                    # `from services.common import tokens` imports the module services.common.tokens.
                    target = _target(f"{base}.{alias.name}") or _target(base)
                    if target:
                        yield target, child, inner
            else:
                yield from visit(child, inner)

    yield from visit(_tree(module), False)


@cache
def _graph() -> dict[str, set[str]]:
    return {module: {target for target, _, _ in _imports(module) if target != module} for module in _modules()}


def _layer(module: str) -> tuple[int, str]:
    """(rank, component): a module may import its own component, or any lower rank."""
    if module == COMMON or module.startswith(COMMON + "."):
        return 1, COMMON
    for package in SERVICE_PACKAGES:
        if module == package or module.startswith(package + "."):
            return 2, package
    for tool in TOOLS:
        if module == tool or module.startswith(tool + "."):
            return 3, "tools"  # the tools drive the suite and may use one another
    return 3, module  # services/__init__.py


def test_the_graph_is_read_from_the_code():
    graph = _graph()
    assert {"services.common.tokens", "services.orchestrator.server", "services.launcher"} <= set(graph)
    assert "services.common.server" in graph["services.orchestrator.server"]
    assert "services.gateway" in graph["services.launcher"]


def test_layers_point_one_way():
    wrong = []
    for module, targets in sorted(_graph().items()):
        rank, component = _layer(module)
        for target in sorted(targets):
            target_rank, target_component = _layer(target)
            if target_component == component:
                continue
            if target_rank >= rank:
                wrong.append(f"{module} ({LAYER_NAMES[rank]}) imports {target} ({LAYER_NAMES[target_rank]})")
    assert not wrong, "imports that do not point down:\n  " + "\n  ".join(wrong)


def test_common_and_the_services_import_no_tool_and_no_other_service():
    """The rule above, said for the services: none reaches another's internals or a tool."""
    for module, targets in _graph().items():
        rank, component = _layer(module)
        if rank > 2:
            continue
        for target in targets:
            target_rank, target_component = _layer(target)
            assert target_component == component or target_rank < rank, f"{module} imports {target}"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph (its modules, the first repeated at the end), or None."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        return list(error.args[1])
    return None


def test_the_import_graph_has_no_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) is not None  # the finder finds one
    assert _cycle(_graph()) is None, f"an import cycle: {' -> '.join(_cycle(_graph()) or [])}"


# The transport edges of a service: the only modules of a service that may load grpc.
TRANSPORT_EDGES = ("__main__", "server", "servicer", "transport", "clients")


def _loads_grpc(module: str) -> bool:
    """Whether the module itself imports grpc (or a grpc_* package, or generated *_pb2_grpc stubs)."""
    for node in ast.walk(_tree(module)):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or "", *(f"{node.module}.{alias.name}" for alias in node.names)]
        for name in names:
            top = name.split(".")[0]
            if top == "grpc" or top.startswith("grpc_") or name.endswith("_pb2_grpc"):
                return True
    return False


def _domain_modules() -> list[str]:
    return [
        module
        for module in _modules()
        if module.startswith(SERVICE_PACKAGES)
        and module.rpartition(".")[2] not in TRANSPORT_EDGES
        and module not in SERVICE_PACKAGES
    ]


def test_domain_modules_never_load_grpc_not_even_through_another_module():
    graph = _graph()
    assert _loads_grpc("services.orchestrator.clients")  # the check sees a transport edge
    assert "services.orchestrator.turns" in _domain_modules()
    wrong = []
    for module in _domain_modules():
        seen, stack = {module}, [module]
        while stack:
            current = stack.pop()
            if _loads_grpc(current):
                wrong.append(f"{module} loads grpc through {current}")
                break
            for target in graph[current] - seen:
                seen.add(target)
                stack.append(target)
    assert not wrong, "domain modules that load grpc:\n  " + "\n  ".join(sorted(wrong))


def test_no_import_of_services_code_inside_a_function():
    inside = sorted(
        f"{module}:{node.lineno} imports {target}"
        for module in _modules()
        for target, node, in_function in _imports(module)
        if in_function and (module, target) not in LAZY_IMPORTS
    )
    assert not inside, "imports inside functions (move them to the top):\n  " + "\n  ".join(inside)
    used = {(module, target) for module in _modules() for target, _, inner in _imports(module) if inner}
    assert used >= LAZY_IMPORTS, f"allowlisted lazy imports that no longer exist: {LAZY_IMPORTS - used}"


# --- the environment ---------------------------------------------------------------------------


def environment_reads(source: str) -> list[int]:
    """Lines of `source` that read the process environment: any use of os.environ (or
    os.environb) other than assigning one of its items, os.getenv, and names imported from os
    that do the same. `os.environ["X"] = value` sets a variable for a library: not a read."""
    tree = ast.parse(source)
    os_names = {"os"}
    reader_names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            os_names |= {alias.asname or alias.name for alias in node.names if alias.name == "os"}
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and not node.level:
            reader_names |= {
                alias.asname or alias.name
                for alias in node.names
                if alias.name in ("environ", "environb", "getenv", "getenvb")
            }
    writes = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, (ast.Store, ast.Del))
    }
    lines = []
    for node in ast.walk(tree):
        is_os_attribute = (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in os_names
            and node.attr in ("environ", "environb", "getenv", "getenvb")
        )
        is_reader_name = isinstance(node, ast.Name) and node.id in reader_names
        if (is_os_attribute or is_reader_name) and id(node) not in writes:
            lines.append(node.lineno)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os" and reader_names:
            lines.append(node.lineno)
    return sorted(set(lines))


@pytest.mark.parametrize(
    "source,reads",
    [
        ("import os\nx = os.environ.get('A')", True),
        ("import os\nx = os.environ['A']", True),
        ("import os\nx = os.getenv('A')", True),
        ("import os as system\nx = system.environ", True),
        ("from os import environ\nx = environ.get('A')", True),
        ("from os import getenv as g\nx = g('A')", True),
        ("import os\nfor k in os.environ:\n    pass", True),
        ("import os\nos.environ.setdefault('A', '1')", True),
        ("import os\nos.environ['TIKTOKEN_CACHE_DIR'] = '/x'", False),
        ("import os\npath = os.path.join('a', 'b')", False),
        ("env = {'A': '1'}\nx = env.get('A')", False),
    ],
)
def test_the_environment_check_tells_reads_from_writes(source, reads):
    assert bool(environment_reads(source)) is reads


def _service_modules() -> list[str]:
    packages = (COMMON, *SERVICE_PACKAGES)
    return [m for m in _modules() if any(m == p or m.startswith(p + ".") for p in packages)]


def test_only_the_settings_modules_read_the_environment():
    modules = _service_modules()
    assert "services.common.channels" in modules and "services.orchestrator.clients" in modules
    readers = sorted(
        f"{module}:{line}"
        for module in modules
        if module.rpartition(".")[2] != "settings"
        for line in environment_reads(_modules()[module].read_text())
    )
    assert not readers, "modules that read the environment (take it from the settings instead):\n  " + "\n  ".join(
        readers
    )
    settings_modules = [m for m in modules if m.rpartition(".")[2] == "settings"]
    assert any(environment_reads(_modules()[m].read_text()) for m in settings_modules)  # the check sees reads


# --- limits that two services share --------------------------------------------------------------


def test_the_shared_ordering_limit_is_the_judges_count_of_orderings():
    from services.common.limits import distinct_orderings
    from services.judge.aggregate import candidate_orderings

    for debaters in range(30):
        assert distinct_orderings(debaters) == (len(candidate_orderings(debaters)) if debaters >= 2 else 1)
