"""Handlers of ``fs/*``: the connection's filesystem backend, with ``--root`` checks.

Under ``--root`` on a kernel with ``openat2`` every path method goes to ``confined_fs.py``
(descriptors opened beneath the root, no check-then-use); otherwise the path is checked here
(``local_path``) and the backend uses it.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
from typing import TYPE_CHECKING, Any

from execsdk import errors
from execsdk._protocol.wire import b64decode_strict, b64encode, b64encode_bytes, path_to_uri
from execsdk.backends import FileMetadata, WalkEntry
from execsdk.server import confined_fs
from execsdk.server import params as P
from execsdk.server.confine import Confinement, real_path
from execsdk.server.handlers import RawResult, local_path, refuse_sandbox
from execsdk.server.params import Field, PathUri, Struct

if TYPE_CHECKING:
    from execsdk.server.connection import Connection


def _beneath(conn: Connection) -> Confinement | None:
    """The confinement when paths are resolved with openat2 (``confined_fs``), else None."""
    confine = conn.confine
    return confine if confine is not None and confine.beneath else None


def fs_read_file(conn: Connection, p: dict[str, Any]) -> object:
    refuse_sandbox(p)
    if (c := _beneath(conn)) is not None:
        return {"dataBase64": b64encode(confined_fs.read_file(conn.fs, c, p["path"]))}
    return {"dataBase64": b64encode(conn.fs.read_file(local_path(conn, p["path"])))}


def fs_write_file(conn: Connection, p: dict[str, Any]) -> object:
    refuse_sandbox(p)
    c = _beneath(conn)
    if c is None:
        path = local_path(conn, p["path"])
    try:
        data = b64decode_strict(p["dataBase64"])
    except ValueError as exc:
        if c is not None:
            # A refused path is answered before the base64 complaint, as local_path orders it.
            c.judge(c.locate(p["path"])[1], shown=p["path"].uri)
        raise errors.InvalidRequest(
            -32600, f"fs/writeFile requires valid base64 dataBase64: {exc}"
        ) from None
    if c is not None:
        confined_fs.write_file(conn.fs, c, p["path"], data)
    else:
        conn.fs.write_file(path, data)
    return {}


def fs_create_directory(conn: Connection, p: dict[str, Any]) -> object:
    refuse_sandbox(p)
    recursive = True if p["recursive"] is None else p["recursive"]
    if (c := _beneath(conn)) is not None:
        confined_fs.create_directory(c, p["path"], recursive=recursive)
        return {}
    conn.fs.create_directory(local_path(conn, p["path"]), recursive=recursive)
    return {}


def fs_get_metadata(conn: Connection, p: dict[str, Any]) -> object:
    refuse_sandbox(p)
    if (c := _beneath(conn)) is not None:
        meta = confined_fs.metadata(c, p["path"])[0]
    else:
        meta = conn.fs.get_metadata(local_path(conn, p["path"]))
    return _metadata_result(meta)


def _metadata_result(meta: FileMetadata) -> dict[str, object]:
    """``fs/getMetadata``'s answer (``fs/stat`` adds ``mode`` to it)."""
    return {
        "isDirectory": meta.is_directory,
        "isFile": meta.is_file,
        "isSymlink": meta.is_symlink,
        "size": meta.size,
        "createdAtMs": meta.created_at_ms,
        "modifiedAtMs": meta.modified_at_ms,
    }


# fs/setMode and fs/stat: our extension (PROTOCOL.md §7, capability ``execsdk/fileMode``). Their
# params are declared here rather than in specs.py, which holds codex's structs.
FS_SET_MODE = Struct("FsSetModeParams", [Field("path", P.URI), Field("mode", P.U64)])
FS_STAT = Struct("FsStatParams", [Field("path", P.URI)])


def fs_set_mode(conn: Connection, p: dict[str, Any]) -> object:
    mode = p["mode"]
    if mode > 0o7777:
        raise errors.InvalidParams(
            -32602, f"invalid mode {mode}: expected permission bits 0..=4095 (0o7777)"
        )
    # chmod follows a final link, so its target is what must lie inside the root.
    if (c := _beneath(conn)) is not None:
        confined_fs.set_mode(c, p["path"], mode)
        return {}
    conn.fs.set_mode(local_path(conn, p["path"]), mode)
    return {}


def fs_stat(conn: Connection, p: dict[str, Any]) -> object:
    if (c := _beneath(conn)) is not None:
        meta, mode = confined_fs.metadata(c, p["path"])
    else:
        meta, mode = conn.fs.get_metadata_and_mode(local_path(conn, p["path"]))
    result = _metadata_result(meta)
    result["mode"] = mode
    return result


def fs_read_directory(conn: Connection, p: dict[str, Any]) -> object:
    refuse_sandbox(p)
    if (c := _beneath(conn)) is not None:
        entries = confined_fs.read_directory(c, p["path"])
        return {
            "entries": [
                {"fileName": e.name, "isDirectory": e.is_dir, "isFile": e.is_file} for e in entries
            ]
        }
    path = local_path(conn, p["path"])
    entries = conn.fs.read_directory(path)
    confine = conn.confine
    if confine is not None:
        # A link that leads out of the root is left out, as codex leaves out dangling links:
        # through this server it leads nowhere (and its target's type is not ours to tell).
        entries = [
            e for e in entries if not e.is_symlink or confine.inside(posixpath.join(path, e.name))
        ]
    return {
        "entries": [
            {"fileName": e.name, "isDirectory": e.is_dir, "isFile": e.is_file} for e in entries
        ]
    }


def fs_remove(conn: Connection, p: dict[str, Any]) -> object:
    refuse_sandbox(p)
    recursive = True if p["recursive"] is None else p["recursive"]
    force = True if p["force"] is None else p["force"]
    if (c := _beneath(conn)) is not None:
        confined_fs.remove(c, p["path"], recursive=recursive, force=force)
        return {}
    if conn.confine is not None:
        # The root itself is never removed, however the path names it.
        path = conn.confine.check_removable(p["path"])
    else:
        path = local_path(conn, p["path"], follow_last=False)
    conn.fs.remove(path, recursive=recursive, force=force)
    return {}


def fs_copy(conn: Connection, p: dict[str, Any]) -> object:
    refuse_sandbox(p)
    if (c := _beneath(conn)) is not None:
        confined_fs.copy(c, p["sourcePath"], p["destinationPath"], recursive=p["recursive"])
        return {}
    # The source is read without following a final link (links are copied as links).
    source = local_path(conn, p["sourcePath"], follow_last=False)
    destination = local_path(conn, p["destinationPath"])
    if conn.confine is not None and p["recursive"]:
        _check_copy_targets(conn.confine, source, destination)
    conn.fs.copy(source, destination, recursive=p["recursive"])
    return {}


def fs_canonicalize(conn: Connection, p: dict[str, Any]) -> object:
    refuse_sandbox(p)
    if (c := _beneath(conn)) is not None:
        return {"path": path_to_uri(confined_fs.canonicalize(c, p["path"]))}
    return {"path": path_to_uri(conn.fs.canonicalize(local_path(conn, p["path"])))}


def fs_walk(conn: Connection, p: dict[str, Any]) -> object:
    refuse_sandbox(p)
    options = p["options"]
    if (c := _beneath(conn)) is not None:
        result = confined_fs.walk(
            c,
            p["path"],
            max_depth=options["maxDepth"],
            max_directories=options["maxDirectories"],
            max_entries=options["maxEntries"],
            follow_directory_symlinks=options["followDirectorySymlinks"],
        )
        return {
            "entries": [{"path": path_to_uri(e.path), "kind": e.kind} for e in result.entries],
            "errors": list(result.errors),
            "truncated": result.truncated,
        }
    result = conn.fs.walk(
        local_path(conn, p["path"]),
        max_depth=options["maxDepth"],
        max_directories=options["maxDirectories"],
        max_entries=options["maxEntries"],
        follow_directory_symlinks=options["followDirectorySymlinks"],
    )
    entries = result.entries
    if conn.confine is not None and options["followDirectorySymlinks"]:
        # Only a followed directory link can lead a walk out of the root.
        entries = tuple(_entries_inside(conn.confine, entries))
    return {
        "entries": [{"path": path_to_uri(e.path), "kind": e.kind} for e in entries],
        "errors": list(result.errors),
        "truncated": result.truncated,
    }


def _entries_inside(confine: Confinement, entries: tuple[WalkEntry, ...]) -> list[WalkEntry]:
    """The walk entries whose real location is inside the root (one lstat per entry)."""
    real_dirs: dict[str, str | None] = {}

    def real_dir(directory: str) -> str | None:
        if directory not in real_dirs:
            try:
                real = real_path(directory)
            except OSError:
                real = None
            real_dirs[directory] = real if real is not None and confine.contains(real) else None
        return real_dirs[directory]

    kept = []
    for entry in entries:
        if real_dir(posixpath.dirname(entry.path)) is None:
            continue
        # A directory entry may be a followed link; its children are judged through it.
        if entry.kind == "directory" and real_dir(entry.path) is None:
            continue
        kept.append(entry)
    return kept


def _check_copy_targets(confine: Confinement, source: str, destination: str) -> None:
    """Refuse a directory copy that would write through a link out of the root.

    The copy merges into an existing destination tree, following links it meets there, so
    every destination path the copy will write must resolve inside the root.
    """
    try:
        if not stat.S_ISDIR(os.lstat(source).st_mode):
            return
    except OSError:
        return  # the backend reports the missing source
    for directory, dirnames, filenames in os.walk(source):
        rel = posixpath.relpath(directory, source)
        target_dir = destination if rel == "." else posixpath.join(destination, rel)
        for name in (*dirnames, *filenames):
            target = posixpath.join(target_dir, name)
            if os.path.lexists(target):
                confine.check(target)


def fs_open(conn: Connection, p: dict[str, Any]) -> object:
    refuse_sandbox(p)
    if (c := _beneath(conn)) is not None:
        confined_fs.open_handle(conn.fs, c, p["handleId"], p["path"], p["mode"])
        return {"handleId": p["handleId"]}
    path = local_path(conn, p["path"])
    if p["mode"] == "createNew":
        _open_new(conn, p["handleId"], path)
    else:
        conn.fs.open(p["handleId"], path, mode=p["mode"])
    return {"handleId": p["handleId"]}


def _open_new(conn: Connection, handle_id: str, path: str) -> None:
    """``fs/open`` mode ``createNew`` (PROTOCOL.md §7, ``execsdk/exclusiveCreate``): create the
    file only where nothing is (O_EXCL: atomic against every other writer, and never through a
    final link), then open it as ``replace`` does. Anything there -> "File exists (os error 17)".
    """
    if "\x00" in path:
        raise errors.InvalidParams(-32602, "path contains a NUL byte", method="fs/open")
    # ".." resolved textually, as the backend resolves it (§6 item 42): the file created here
    # is the one the backend opens next.
    norm = posixpath.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    os.close(os.open(norm, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
    try:
        conn.fs.open(handle_id, norm, mode="replace")
    except BaseException:
        # Refused (handle id, handle limit): the file this request created goes again.
        with contextlib.suppress(OSError):
            os.unlink(norm)
        raise


def fs_read_block(conn: Connection, p: dict[str, Any]) -> object:
    data, eof = conn.fs.read_block(p["handleId"], p["offset"], p["len"])
    # {"chunk": ..., "eof": ...} as bytes: base64 is plain ASCII, nothing to escape.
    tail = b'","eof":true}' if eof else b'","eof":false}'
    return RawResult((b'{"chunk":"', b64encode_bytes(data), tail))


def fs_write_block(conn: Connection, p: dict[str, Any]) -> object:
    conn.fs.write_block(p["handleId"], p["offset"], p["chunk"])
    return {}


def fs_close(conn: Connection, p: dict[str, Any]) -> object:
    conn.fs.close_handle(p["handleId"])
    return {}


def fs_watch_missing(conn: Connection, p: dict[str, Any]) -> object:
    missing = [uri.path for uri in p["missing"]]
    present_uri: PathUri | None = p["present"]
    present: str | bool | None = None
    if present_uri is not None:
        present = present_uri.path if present_uri.path is not None else False
    confine = conn.confine
    if confine is not None:
        # Paths outside the root are left out of the watch (they never "appear"); a watched
        # `present` path outside the root cannot be watched at all.
        missing = [m for m in missing if m is not None and confine.inside(m)]
        if isinstance(present, str) and not confine.inside(present):
            present = False
    return {"watching": conn.watcher.watch(p["watchId"], missing, present)}
