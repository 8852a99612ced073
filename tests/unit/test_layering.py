"""Imports run one way (STYLE.md §2): each module imports only the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "execsdk"

# Layer of each module (by dotted name under execsdk, prefix match on packages). A module may
# import execsdk modules of a strictly lower layer, or its own package's siblings.
LAYERS: dict[str, int] = {
    "errors": 0,
    "_deadline": 0,
    "_dispatch": 1,
    "environment": 1,
    "_outbuf": 2,
    "_protocol": 2,
    "_transport": 2,
    "_rpc": 3,
    "client": 4,
    "process": 4,
    "_fscore": 2,
    "_fsio": 3,
    "_fswalk": 3,
    "_transfer": 4,
    "fs": 5,
    "_base": 6,
    "_local_process": 2,
    "_local_fs": 2,
    "local": 7,
    "remote": 7,
    "_embedded": 8,
    "_api": 9,
    "fsspec": 10,
    "server": 8,
    "cli": 11,
}

# Never, whatever the layers say.
FORBIDDEN: dict[str, set[str]] = {
    "server": {
        "remote",
        "_rpc",
        "client",
        "_api",
        "_embedded",
        "fs",
        "_fscore",
        "_fsio",
        "_fswalk",
        "_transfer",
        "process",
        "_base",
    },
    "_embedded": {"server"},
    "local": {"_rpc", "_protocol", "client", "remote"},
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def _layer_key(name: str) -> str | None:
    head = name.split(".")[0]
    return head if head in LAYERS else None


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            if node.module == "execsdk":
                found.extend(f"execsdk.{alias.name}" for alias in node.names)
    return found


def test_imports_point_down_the_layers() -> None:
    problems: list[str] = []
    for path in sorted(PKG.rglob("*.py")):
        name = _module_name(path)
        if name in ("", "__main__"):
            continue  # the public namespace and the entry point may import anything
        key = _layer_key(name)
        assert key is not None, f"{name} has no layer in LAYERS; add it"
        for imported in _imports(path):
            # The client may borrow websockets' C masking, lazily, and nothing else of it.
            c_mask = name == "_transport.websocket" and imported == "websockets.speedups"
            if imported.split(".")[0] == "websockets" and key != "server" and not c_mask:
                problems.append(f"{name} imports websockets (only execsdk.server may)")
            if not imported.startswith("execsdk."):
                continue
            target = imported.removeprefix("execsdk.")
            tkey = _layer_key(target)
            if tkey is None or tkey == key:
                continue
            if tkey in FORBIDDEN.get(key, set()):
                problems.append(f"{name} imports {target} (forbidden for {key})")
            elif LAYERS[tkey] >= LAYERS[key]:
                problems.append(
                    f"{name} (layer {LAYERS[key]}) imports {target} (layer {LAYERS[tkey]})"
                )
    assert problems == []


def test_embedded_client_path_does_not_import_websockets() -> None:
    import subprocess
    import sys

    code = (
        "import sys, execsdk._api, execsdk.remote, execsdk._embedded;"
        "print('websockets' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
