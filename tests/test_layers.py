"""The layering rule, checked: the pure cores import no I/O library and no configuration.

Each module is imported alone in a fresh interpreter, so that what other tests imported
cannot hide a forbidden import.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import gateway
import gateway.policy

FORBIDDEN = (
    "asyncio",
    "aiosmtpd",
    "gateway.relay.client",
    "redis",
    "sqlite3",
    "dns",
    "gateway.config",
    "gateway.store",
    "gateway.runtime",
)
POLICY = Path(gateway.policy.__file__).parent
CORE = Path(gateway.policy.__file__).parents[1] / "smtp" / "core"
PURE = [
    "gateway.policy",
    *sorted(f"gateway.policy.{info.name}" for info in pkgutil.iter_modules([str(POLICY)])),
    "gateway.smtp.session",
    *sorted(f"gateway.smtp.core.{info.name}" for info in pkgutil.iter_modules([str(CORE)])),
    "gateway.smtp.steps",
    "gateway.smtp.masquerade",
    "gateway.relay.reply",
    "gateway.relay.content",
    "gateway.relay.received",
]

_PROBE = """
import sys, importlib
importlib.import_module(sys.argv[1])
print(" ".join(m for m in sys.argv[2:] if m in sys.modules))
"""


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_io_and_no_config(module: str) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, module, *FORBIDDEN],
        capture_output=True,
        text=True,
        check=False,
    )
    # A module that does not exist (yet) or fails to import says so, not just "exit 1".
    failure = (probe.stderr.strip().splitlines() or ["no output"])[-1]
    assert probe.returncode == 0, f"cannot import {module}: {failure}"
    found = probe.stdout.split()
    assert found == [], f"{module} imports {', '.join(found)}"


def _module_imports() -> dict[str, set[str]]:
    """Each gateway module's gateway imports at module level, type-checking ones included
    (a circle there is a circle in the design); imports inside functions are left out."""
    root = Path(gateway.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in _top_level(ast.parse(path.read_text()).body):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            found.update(t for t in targets if t in modules and t != name)
        graph[name] = found
    return graph


def _top_level(body: list[ast.stmt]):
    for node in body:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            yield from node.body
        else:
            yield node


@pytest.mark.unit
def test_no_module_imports_another_in_a_circle() -> None:
    graph = _module_imports()
    assert "gateway.smtp.server" in graph and graph["gateway.runtime"]  # the walk saw them
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == [], "\n".join(cycles)


def test_make_unit_refuses_a_test_that_opens_a_network_socket(tmp_path: Path) -> None:
    """tests/nosocket.py, the guard `make unit` runs under: a network socket or a process
    fails the test that opens it, a Unix socket pair (asyncio's) does not."""
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "import socket, subprocess\n"
        "def test_pair():\n    a, b = socket.socketpair()\n    a.close(); b.close()\n"
        "def test_net():\n    socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
        "def test_process():\n    subprocess.run(['true'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.nosocket", "-q", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(probe)],
        capture_output=True, text=True, timeout=60, cwd=Path(gateway.__file__).parents[1],
    )  # fmt: skip
    assert "2 failed, 1 passed" in result.stdout, result.stdout
    assert result.stdout.count("NotPure") >= 2
