"""``execsdk fs ...``: list, read, copy and remove files of the environment."""

from __future__ import annotations

import argparse
import json
import logging
import os
import posixpath
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from execsdk.backends import FileInfo
    from execsdk.fs.facade import Fs

from execsdk.cli.common import CliError, Parser, open_environment
from execsdk.cli.progress import human_size, progress_for

__all__ = ["add_parser"]

log = logging.getLogger("execsdk.cli")


def _kind(info: FileInfo) -> str:
    if info.is_dir:
        return "directory"
    if info.is_file:
        return "file"
    return "other"


def _when(info: FileInfo, attr: str) -> str | None:
    value = getattr(info, attr)
    return None if value is None else str(value.isoformat())


def _long_line(name: str, info: FileInfo | None) -> str:
    if info is None:
        return f"?  {'?':>12}  {'?':16}  {name}"
    kind = "l" if info.is_symlink else "d" if info.is_dir else "-" if info.is_file else "?"
    size = "-" if info.size is None else str(info.size)
    when = "-" if info.modified is None else info.modified.astimezone().strftime("%Y-%m-%d %H:%M")
    suffix = "/" if info.is_dir else ""
    return f"{kind}  {size:>12}  {when:16}  {name}{suffix}"


def _stat_entries(fs: Fs, base: str, names: list[str]) -> list[FileInfo | None]:
    """``stat`` of every name in ``base``, a few calls in flight (a vanished entry: None)."""
    import concurrent.futures

    def one(name: str) -> FileInfo | None:
        try:
            return fs.stat(posixpath.join(base, name))
        except OSError:
            return None

    with concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="execsdk-cli-ls") as pool:
        return list(pool.map(one, names))


def _cmd_fs_ls(args: argparse.Namespace) -> int:
    paths = args.paths or ["."]
    out = sys.stdout
    with open_environment(args) as env:
        fs = env.fs
        for i, path in enumerate(paths):
            info = fs.stat(path)
            if not info.is_dir:
                out.write((_long_line(path, info) if args.long else path) + "\n")
                continue
            if len(paths) > 1:
                out.write(("\n" if i else "") + f"{path}:\n")
            entries = list(fs.iterdir(path))
            names = [e.name for e in entries]
            if args.long:
                stats = _stat_entries(fs, fs.abspath(path), names)
                for name, st in zip(names, stats, strict=True):
                    out.write(_long_line(name, st) + "\n")
            else:
                for entry in entries:
                    out.write(entry.name + ("/" if entry.is_dir else "") + "\n")
        out.flush()
    return 0


def _cmd_fs_cat(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    with open_environment(args) as env:
        for path in args.paths:
            with env.fs.open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    out.write(chunk)
                    out.flush()
    return 0


def _remote_target(fs: Fs, local: str, remote: str) -> str:
    """Where ``put`` puts ``local``: inside ``remote`` when it is a directory (as ``cp``)."""
    name = os.path.basename(os.path.normpath(local))
    if remote.endswith("/") or fs.is_dir(remote):
        return posixpath.join(fs.abspath(remote), name) if name not in ("", ".", "..") else remote
    return remote


def _local_target(fs: Fs, remote: str, local: str) -> str:
    """Where ``get`` puts ``remote``: inside ``local`` when it is a directory (as ``cp``)."""
    name = posixpath.basename(fs.abspath(remote))
    if name and (local.endswith(os.sep) or os.path.isdir(local)):
        return os.path.join(local, name)
    return local


def _transfer(args: argparse.Namespace, label: str, move: Callable[..., None]) -> None:
    bar = progress_for(args, label)
    started = time.monotonic()
    moved = [0]

    def progress(done: int, total: int) -> None:
        moved[0] = total
        if bar is not None:
            bar(done, total)

    try:
        move(progress=progress)
    finally:
        if bar is not None:
            bar.close()
    log.info("%s: %d bytes in %.2fs", label, moved[0], time.monotonic() - started)


def _cmd_fs_put(args: argparse.Namespace) -> int:
    if not os.path.exists(args.local):
        raise CliError(f"cannot read {args.local!r}: no such local file or directory")
    with open_environment(args) as env:
        fs = env.fs
        target = _remote_target(fs, args.local, args.remote)
        label = f"put {os.path.basename(os.path.normpath(args.local)) or args.local}"
        _transfer(args, label, lambda progress: fs.upload(args.local, target, progress=progress))
    return 0


def _cmd_fs_get(args: argparse.Namespace) -> int:
    with open_environment(args) as env:
        fs = env.fs
        target = _local_target(fs, args.remote, args.local)
        label = f"get {posixpath.basename(fs.abspath(args.remote)) or args.remote}"
        _transfer(args, label, lambda progress: fs.download(args.remote, target, progress=progress))
    return 0


def _cmd_fs_rm(args: argparse.Namespace) -> int:
    with open_environment(args) as env:
        fs = env.fs
        for path in args.paths:
            try:
                fs.remove(path, missing_ok=args.force)
            except IsADirectoryError:
                if not args.recursive:
                    raise CliError(f"cannot remove {path!r}: is a directory (use -r)") from None
                fs.rmtree(path, missing_ok=args.force)
    return 0


def _cmd_fs_mkdir(args: argparse.Namespace) -> int:
    with open_environment(args) as env:
        for path in args.paths:
            env.fs.mkdir(path, parents=args.parents, exist_ok=args.parents)
    return 0


def _cmd_fs_stat(args: argparse.Namespace) -> int:
    with open_environment(args) as env:
        fs = env.fs
        results = []
        for path in args.paths:
            info = fs.stat(path)
            results.append(
                {
                    "path": fs.abspath(path),
                    "type": _kind(info),
                    "is_symlink": info.is_symlink,
                    "size": info.size,
                    "modified": _when(info, "modified"),
                    "created": _when(info, "created"),
                }
            )
    if args.json:
        payload: object = results[0] if len(results) == 1 else results
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return 0
    for i, item in enumerate(results):
        if i:
            sys.stdout.write("\n")
        kind = str(item["type"]) + (" (through a symbolic link)" if item["is_symlink"] else "")
        size = item["size"]
        rows = [
            ("path", str(item["path"])),
            ("type", kind),
            ("size", "unknown" if size is None else f"{size} ({human_size(int(str(size)))})"),
            ("modified", str(item["modified"] or "unknown")),
            ("created", str(item["created"] or "unknown")),
        ]
        sys.stdout.write("".join(f"{key + ':':10}{value}\n" for key, value in rows))
    return 0


def add_parser(sub: Any, common: Parser) -> None:
    """Register ``fs`` and its subcommands."""
    fs = sub.add_parser(
        "fs",
        help="list, read, copy and remove files of the environment",
        description="Files of the environment. Relative remote paths resolve against the "
        "environment's working directory (see `execsdk info`).",
        parents=[common],
        allow_abbrev=False,
    )
    fs_sub = fs.add_subparsers(dest="fs_command", metavar="FS_COMMAND", parser_class=Parser)
    fs_sub.required = True

    def leaf(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = fs_sub.add_parser(
            name,
            help=help_text,
            description=description,
            parents=[common],
            allow_abbrev=False,
        )
        return parser

    ls = leaf("ls", "list a directory", "List directories (or show files), sorted by name.")
    ls.add_argument("-l", dest="long", action="store_true", help="type, size and modified time")
    ls.add_argument("paths", nargs="*", metavar="PATH", help="default: the working directory")
    ls.set_defaults(func=_cmd_fs_ls)

    cat = leaf("cat", "print files", "Stream files to stdout, byte for byte.")
    cat.add_argument("paths", nargs="+", metavar="PATH")
    cat.set_defaults(func=_cmd_fs_cat)

    put = leaf(
        "put",
        "upload a file or a tree",
        "Copy a local file or directory tree to the environment. Onto an existing remote "
        "directory the source goes inside it (as cp -r); files are replaced.",
    )
    put.add_argument("local", metavar="LOCAL")
    put.add_argument("remote", metavar="REMOTE")
    put.set_defaults(func=_cmd_fs_put)

    get = leaf(
        "get",
        "download a file or a tree",
        "Copy a remote file or directory tree here. Onto an existing local directory the "
        "source goes inside it (as cp -r); files are replaced.",
    )
    get.add_argument("remote", metavar="REMOTE")
    get.add_argument("local", metavar="LOCAL")
    get.set_defaults(func=_cmd_fs_get)

    rm = leaf("rm", "remove files", "Remove files and links; with -r directories too.")
    rm.add_argument("-r", "--recursive", action="store_true", help="remove directory trees")
    rm.add_argument("-f", "--force", action="store_true", help="a missing path is not an error")
    rm.add_argument("paths", nargs="+", metavar="PATH")
    rm.set_defaults(func=_cmd_fs_rm)

    mkdir = leaf("mkdir", "create directories", "Create directories.")
    mkdir.add_argument(
        "-p", "--parents", action="store_true", help="create parents; an existing one is fine"
    )
    mkdir.add_argument("paths", nargs="+", metavar="PATH")
    mkdir.set_defaults(func=_cmd_fs_mkdir)

    stat = leaf("stat", "show file metadata", "Type, size and times of paths.")
    stat.add_argument("--json", action="store_true", help="machine-readable output")
    stat.add_argument("paths", nargs="+", metavar="PATH")
    stat.set_defaults(func=_cmd_fs_stat)
