"""Imports run one way (docs/architecture.md): each module imports only the layers below it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "execsdk"

# Layer of each top-level module or sub-package of execsdk (docs/architecture.md draws them).
# A module may import execsdk modules of a strictly lower layer, or its own package's siblings.
LAYERS: dict[str, int] = {
    "errors": 0,
    "_deadline": 0,
    "_version": 0,
    "_threads": 0,
    "_wsframes": 0,
    "_callbacks": 1,
    "backends": 1,
    "_protocol": 2,
    "_transport": 2,
    "_outbuffer": 2,
    "_rpc": 3,
    "client": 4,
    "process": 4,
    "fs": 5,
    "environment": 6,
    "_local": 7,
    "remote": 7,
    "server": 8,
    "fsspec": 9,
    "cli": 10,
}

# Never, whatever the layers say.
FORBIDDEN: dict[str, set[str]] = {
    # The server serves the local backends; it is not a client of anything.
    "server": {"remote", "_rpc", "client", "fs", "process", "environment", "_transport"},
    # Local machinery knows nothing of the wire.
    "_local": {"_rpc", "_protocol", "_transport", "client", "remote"},
    # The facades speak to backends only.
    "process": {"_protocol", "_rpc", "_transport", "client"},
    "fs": {"_protocol", "_rpc", "_transport", "client"},
}

# Modules that must not import a given module even inside their own package.
FORBIDDEN_MODULES: dict[str, set[str]] = {
    # The embedded server is a child process: the client side never imports the server.
    "remote.embedded": {"server"},
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def _layer_key(name: str) -> str | None:
    head = name.split(".")[0]
    return head if head in LAYERS else None


def _is_module(dotted: str) -> bool:
    """True when ``execsdk.<dotted>`` is a module or package of ours (not a public name)."""
    base = PKG.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "execsdk":  # from execsdk import errors: the module execsdk.errors
                found.extend((f"execsdk.{alias.name}", node.lineno) for alias in node.names)
            else:
                found.append((node.module, node.lineno))
    return found


def _modules() -> list[tuple[str, Path]]:
    return [(_module_name(p), p) for p in sorted(PKG.rglob("*.py"))]


def test_every_module_has_a_layer() -> None:
    missing = [
        name for name, _ in _modules() if name not in ("", "__main__") and not _layer_key(name)
    ]
    assert missing == [], "add these to LAYERS (and to docs/architecture.md)"


def test_imports_point_down_the_layers() -> None:
    problems: list[str] = []
    for name, path in _modules():
        if name in ("", "__main__"):
            continue  # the public namespace and the entry point may import anything
        key = _layer_key(name)
        assert key is not None
        for imported, line in _imports(path):
            where = f"{name}:{line}"
            # The client may borrow websockets' C masking, lazily, and nothing else of it.
            c_mask = name == "_transport.websocket" and imported == "websockets.speedups"
            if imported.split(".")[0] == "websockets" and key != "server" and not c_mask:
                problems.append(f"{where} imports websockets (only execsdk.server may)")
            if imported == "execsdk":
                problems.append(f"{where}: `import execsdk` inside the package (import the module)")
                continue
            if not imported.startswith("execsdk."):
                continue
            target = imported.removeprefix("execsdk.")
            if not _is_module(target):
                problems.append(
                    f"{where} imports the public name execsdk.{target}; import it from its module"
                )
                continue
            for banned in FORBIDDEN_MODULES.get(name, set()):
                if target == banned or target.startswith(banned + "."):
                    problems.append(f"{where} imports {target} (forbidden for {name})")
            tkey = _layer_key(target)
            if tkey is None or tkey == key:
                continue
            if tkey in FORBIDDEN.get(key, set()):
                problems.append(f"{where} imports {target} (forbidden for {key})")
            elif LAYERS[tkey] >= LAYERS[key]:
                problems.append(
                    f"{where} (layer {LAYERS[key]}) imports {target} (layer {LAYERS[tkey]})"
                )
    assert problems == []


def test_no_two_modules_share_a_name() -> None:
    seen: dict[str, list[str]] = {}
    for name, path in _modules():
        if path.name == "__init__.py":
            continue
        seen.setdefault(path.stem, []).append(name)
    assert {stem: names for stem, names in seen.items() if len(names) > 1} == {}


def test_embedded_client_path_does_not_import_websockets() -> None:
    code = (
        "import sys, execsdk, execsdk.remote.connector, execsdk.remote.embedded;"
        "print('websockets' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_importing_the_machinery_keeps_the_public_functions() -> None:
    # A sub-package named like a public function would replace it once imported.
    code = (
        "import execsdk._local.processes, execsdk.remote.connector, execsdk;"
        "print(callable(execsdk.local), callable(execsdk.connect))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True True"
