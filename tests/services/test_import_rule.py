"""No service imports another: a module under services/<service>/ imports only its own package, shared/
and third-party code. What two services need lives in shared/ (see docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICES_DIR = Path(__file__).resolve().parents[2] / "services"
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
