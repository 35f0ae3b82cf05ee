"""The layout rules, checked statically: no service imports another (a module under services/<service>/
imports only its own package, shared/ and third-party code; what two services need lives in shared/); no
import cycle anywhere among the dreammask modules; services/ holds only the service packages and cli/, no
loose module beside them (see docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES_DIR = REPO / "services"
TOP_LEVEL = ("shared", "services", "trainer")  # the folders the dreammask namespace maps (setup.py)
# services/cli/ holds the tools around the services (the command, demo, harness, in-process runner): it may
# import every service; no service may import it.
TOOLS = "cli"
SERVICES = sorted(p.name for p in SERVICES_DIR.iterdir()
                  if p.is_dir() and (p / "__init__.py").exists() and p.name != TOOLS)
# The training service's code lives in trainer/service/; the API and the loop service (which submits a training
# per round) still reach the training record there (moving that record to shared/ is the trainer work's part,
# tracked separately).
ALLOWED_CROSS = {("api", "dreammask.trainer"), ("loop", "dreammask.trainer.service")}


def imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """Absolute names of everything a module imports, relative imports resolved against its package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
    return out


def violations(service: str) -> list[str]:
    root = SERVICES_DIR / service
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(SERVICES_DIR.parent).with_suffix("")
        package = ".".join(["dreammask", *rel.parts[:-1]])
        if path.name == "__init__.py":
            package = ".".join(["dreammask", *rel.parts[:-1]])
        for line, name in imported_modules(path, package):
            parts = name.split(".")
            if parts[0] != "dreammask":
                continue
            own = name == f"dreammask.services.{service}" or name.startswith(f"dreammask.services.{service}.")
            if own or name == "dreammask.shared" or name.startswith("dreammask.shared."):
                continue
            if any(s == service and (name == p or name.startswith(p + ".")) for s, p in ALLOWED_CROSS):
                continue
            bad.append(f"{path.relative_to(SERVICES_DIR.parent)}:{line} imports {name}")
    return bad


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_only_itself_and_shared(service):
    assert violations(service) == []


def test_the_rule_catches_a_cross_import(tmp_path, monkeypatch):
    fake = tmp_path / "services"
    (fake / "curation").mkdir(parents=True)
    (fake / "curation" / "__init__.py").write_text("")
    (fake / "curation" / "x.py").write_text("from ..association import vocabulary\nimport dreammask.shared.keys\n")
    monkeypatch.setattr(__import__(__name__), "SERVICES_DIR", fake)
    assert violations("curation") == ["services/curation/x.py:1 imports dreammask.services.association"]


def test_cli_and_demo_do_not_import_each_other():
    """The command runs the demo; the demo uses the shared client helpers, never the command: no circle."""
    def imports(a: str, b: str) -> bool:
        names = [n for _, n in imported_modules(SERVICES_DIR / TOOLS / f"{a}.py", f"dreammask.services.{TOOLS}")]
        return f"dreammask.services.{TOOLS}.{b}" in names

    assert imports("main", "demo") and imports("demo", "client") and imports("main", "client")
    assert not imports("demo", "main") and not imports("client", "main") and not imports("client", "demo")


# ---------------------------------------------------------------- cycles


def module_names(root: Path) -> dict[str, tuple[Path, str]]:
    """dreammask module name -> (file, the package its relative imports resolve against)."""
    out = {}
    for top in TOP_LEVEL:
        for path in sorted((root / top).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
                package = ".".join(["dreammask", *parts])
            else:
                package = ".".join(["dreammask", *parts[:-1]])
            out[".".join(["dreammask", *parts])] = (path, package)
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the dreammask modules it imports, at module level or inside functions alike (a deferred
    import closes a circle at run time too); imports under `if TYPE_CHECKING:` are left out. `from pkg
    import name` counts as importing `pkg.name` when that is a module, else `pkg`."""
    modules = module_names(root)
    graph: dict[str, set[str]] = {}
    for name, (path, package) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                for n in ast.walk(node)}
        targets = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets |= {f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    graph = import_graph(REPO)
    assert len(graph) > 100 and graph["dreammask.shared.runtime"] >= {"dreammask.shared.jobs"}
    assert cycles(graph) == []


def test_the_cycle_check_catches_a_deferred_import_circle(tmp_path):
    for top in TOP_LEVEL:
        (tmp_path / top).mkdir()
        (tmp_path / top / "__init__.py").write_text("")
    (tmp_path / "services" / "api").mkdir()
    (tmp_path / "services" / "api" / "__init__.py").write_text("")
    (tmp_path / "services" / "api" / "metrics.py").write_text(
        "def render():\n    from .routes import health\n")
    (tmp_path / "services" / "api" / "routes").mkdir()
    (tmp_path / "services" / "api" / "routes" / "__init__.py").write_text("")
    (tmp_path / "services" / "api" / "routes" / "health.py").write_text(
        "from ..metrics import render\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from dreammask.shared import x\n")
    (tmp_path / "shared" / "x.py").write_text("import dreammask.services.api.metrics\n")
    graph = import_graph(tmp_path)
    assert cycles(graph) == [["dreammask.services.api.metrics", "dreammask.services.api.routes.health"]]


# ---------------------------------------------------------------- layout


def test_services_holds_only_service_packages():
    """Directly under services/: the API, a package per service of the chain, the closed loop's service,
    cli/ (the tools), and no module of its own. (The training service lives in trainer/service/.)"""
    from dreammask.shared.chain import DEFAULT_CHAIN

    loose = [p.name for p in SERVICES_DIR.iterdir() if p.is_file() and p.suffix == ".py" and p.name != "__init__.py"]
    assert loose == [], f"move {loose} into a service's package or services/cli/"
    folders = sorted(p.name for p in SERVICES_DIR.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert all((SERVICES_DIR / f / "__init__.py").exists() for f in folders), folders
    assert set(folders) == {"api", "loop", *DEFAULT_CHAIN.services, TOOLS}
