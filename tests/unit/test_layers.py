"""The house rules of the layout, read from the code's own imports.

`shared/` is in layers, each importing only the ones below it: contracts (settings, queues, schemas,
tables) < infra (connections, Celery app, keys) < pipeline (summaries, rescoring, erasure, cache
versions) < analytics (the statistics, fitted models, profiles). Nothing in `shared/` imports a
service, and a service never imports another service: what two of them use lives in `shared/`.
`services/cli` is the operator's entry point and the one exception: it dispatches to each part's
own command, imported lazily inside the subcommand that needs it.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["shared.contracts", "shared.infra", "shared.pipeline", "shared.analytics"]
ENTRY_POINTS = {"services.cli"}


def _part(module: str) -> str | None:
    for layer in LAYERS:
        if module == layer or module.startswith(layer + "."):
            return layer
    if module.startswith("services."):
        return ".".join(module.split(".")[:2])
    if module == "scripts" or module.startswith("scripts."):
        return "scripts"
    return None


def _imports(path: Path, package: list[str]) -> list[tuple[int, str]]:
    """Every module `path` imports, by its absolute name (`package`: the one `path` is in)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            # A relative import (level 1 = this package) names a module as surely as an absolute one.
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            if not module:
                continue
            found.append((node.lineno, module))
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def broken_rules(root: Path) -> list[str]:
    broken = []
    for path in sorted([*root.glob("shared/**/*.py"), *root.glob("services/**/*.py")]):
        parts = list(path.relative_to(root).with_suffix("").parts)
        me = _part(".".join(parts))
        if me is None or me in ENTRY_POINTS:
            continue
        for line, module in _imports(path, parts[:-1]):
            other = _part(module)
            if other is None or other == me:
                continue
            where = f"{path.relative_to(root)}:{line} imports {module}"
            if me in LAYERS and other in LAYERS and LAYERS.index(other) > LAYERS.index(me):
                broken.append(f"{where} (a layer above {me})")
            elif me in LAYERS and other not in LAYERS:
                broken.append(f"{where} (shared/ never imports a service or scripts/)")
            elif me.startswith("services.") and other not in LAYERS:
                broken.append(f"{where} (a service imports only its own modules and shared/)")
    return broken


def test_no_import_runs_back_up_a_layer_or_across_services():
    assert broken_rules(ROOT) == []


@pytest.mark.parametrize(("path", "source", "rule"), [
    ("shared/contracts/x.py", "from shared.infra.db import session_scope\n", "a layer above"),
    ("shared/infra/x.py", "from shared.pipeline import rescore\n", "a layer above"),
    ("shared/pipeline/x.py", "import shared.analytics.profiles\n", "a layer above"),
    ("shared/analytics/x.py", "from services.api import app\n", "never imports a service"),
    ("services/worker/x.py", "from services.api.access import decide\n", "its own modules"),
    # Relative imports name the same modules: `..pipeline` from shared/infra/x.py is shared.pipeline.
    ("shared/infra/x.py", "from ..pipeline import rescore\n", "a layer above"),
    ("shared/contracts/x.py", "from ..infra.db import session_scope\n", "a layer above"),
    ("services/worker/x.py", "from ..api import access\n", "its own modules"),
])
def test_the_check_sees_each_kind_of_broken_rule(tmp_path, path, source, rule):
    target = tmp_path / path
    target.parent.mkdir(parents=True)
    target.write_text(source)
    assert [line for line in broken_rules(tmp_path) if rule in line]
