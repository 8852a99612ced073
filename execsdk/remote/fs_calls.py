"""The filesystem backend over ``fs/*`` calls."""

from __future__ import annotations

from typing import Literal

from execsdk._deadline import UNSET, Timeoutish
from execsdk.backends import (
    DirEntry,
    FileMetadata,
    WalkEntry,
    WalkResult,
)
from execsdk.client import Client, Generation
from execsdk.remote.failures import map_fs_errors

__all__ = ["RemoteFsBackend"]

EXCLUSIVE_CREATE = "execsdk/exclusiveCreate"
"""Capability of ``fs/open`` mode ``createNew`` (PROTOCOL.md §7; our server only)."""


class RemoteFsBackend:
    """FsBackend over ``fs/*``. Thread-safety: every method from any thread."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @property
    def features(self) -> frozenset[str]:
        if self._client.generation is Generation.G2:
            return frozenset({"canonicalize", "walk", "blocks"})
        return frozenset()

    @property
    def supports_create_new(self) -> bool:
        """True when the server announces ``execsdk/exclusiveCreate`` (``fs/open`` mode
        ``createNew``: the file is created only where nothing is, atomically)."""
        return EXCLUSIVE_CREATE in self._client.server_info.capabilities

    @property
    def supports_modes(self) -> bool:
        """True when the server announces ``execsdk/fileMode`` (``fs/setMode``, ``fs/stat``)."""
        return self._client.supports("fs/setMode")

    def set_mode(self, path: str, mode: int, *, timeout: Timeoutish = UNSET) -> None:
        """``fs/setMode``: the permission bits of ``path`` (a link's target)."""
        with map_fs_errors("fs/setMode", path):
            self._client.fs_set_mode(path=path, mode=mode, timeout=timeout)

    def get_metadata_and_mode(
        self, path: str, *, timeout: Timeoutish = UNSET
    ) -> tuple[FileMetadata, int]:
        """``fs/stat``: what ``fs/getMetadata`` answers plus the permission bits."""
        with map_fs_errors("fs/stat", path):
            m = self._client.fs_stat(path=path, timeout=timeout)
        meta = FileMetadata(
            is_directory=m.is_directory,
            is_file=m.is_file,
            is_symlink=m.is_symlink,
            size=m.size,
            created_at_ms=m.created_at_ms,
            modified_at_ms=m.modified_at_ms,
        )
        return meta, m.mode

    def read_file(self, path: str, *, timeout: Timeoutish = UNSET) -> bytes:
        with map_fs_errors("fs/readFile", path):
            return self._client.fs_read_file(path=path, timeout=timeout).data_base64

    def write_file(self, path: str, data: bytes, *, timeout: Timeoutish = UNSET) -> None:
        with map_fs_errors("fs/writeFile", path):
            self._client.fs_write_file(path=path, data_base64=data, timeout=timeout)

    def create_directory(
        self, path: str, *, recursive: bool = True, timeout: Timeoutish = UNSET
    ) -> None:
        with map_fs_errors("fs/createDirectory", path):
            self._client.fs_create_directory(path=path, recursive=recursive, timeout=timeout)

    def get_metadata(self, path: str, *, timeout: Timeoutish = UNSET) -> FileMetadata:
        with map_fs_errors("fs/getMetadata", path):
            m = self._client.fs_get_metadata(path=path, timeout=timeout)
        return FileMetadata(
            is_directory=m.is_directory,
            is_file=m.is_file,
            is_symlink=m.is_symlink,
            size=m.size,
            created_at_ms=m.created_at_ms,
            modified_at_ms=m.modified_at_ms,
        )

    def read_directory(self, path: str, *, timeout: Timeoutish = UNSET) -> list[DirEntry]:
        with map_fs_errors("fs/readDirectory", path):
            res = self._client.fs_read_directory(path=path, timeout=timeout)
        return [DirEntry(e.file_name, e.is_file, e.is_directory, None) for e in res.entries]

    def remove(
        self,
        path: str,
        *,
        recursive: bool = True,
        force: bool = True,
        timeout: Timeoutish = UNSET,
    ) -> None:
        with map_fs_errors("fs/remove", path):
            self._client.fs_remove(path=path, recursive=recursive, force=force, timeout=timeout)

    def copy(
        self, source: str, destination: str, *, recursive: bool, timeout: Timeoutish = UNSET
    ) -> None:
        with map_fs_errors("fs/copy", source):
            self._client.fs_copy(
                source_path=source,
                destination_path=destination,
                recursive=recursive,
                timeout=timeout,
            )

    def canonicalize(self, path: str, *, timeout: Timeoutish = UNSET) -> str:
        with map_fs_errors("fs/canonicalize", path):
            return str(self._client.fs_canonicalize(path=path, timeout=timeout).path)

    def walk(
        self,
        path: str,
        *,
        max_depth: int,
        max_directories: int,
        max_entries: int,
        follow_directory_symlinks: bool = False,
        timeout: Timeoutish = UNSET,
    ) -> WalkResult:
        with map_fs_errors("fs/walk", path):
            res = self._client.fs_walk(
                path=path,
                max_depth=max_depth,
                max_directories=max_directories,
                max_entries=max_entries,
                follow_directory_symlinks=follow_directory_symlinks,
                timeout=timeout,
            )
        return WalkResult(
            entries=tuple(WalkEntry(str(e.path), e.kind) for e in res.entries),
            errors=tuple(f"{e.path}: {e.message}" for e in res.errors),
            truncated=res.truncated,
        )

    def open(
        self,
        handle_id: str,
        path: str,
        *,
        mode: Literal["read", "replace", "createNew"] = "read",
        timeout: Timeoutish = UNSET,
    ) -> None:
        # "createNew" only where supports_create_new: codex refuses the mode.
        with map_fs_errors("fs/open", path):
            self._client.fs_open(handle_id=handle_id, path=path, mode=mode, timeout=timeout)

    def read_block(
        self, handle_id: str, offset: int, length: int, *, timeout: Timeoutish = UNSET
    ) -> tuple[bytes, bool]:
        with map_fs_errors("fs/readBlock", None):
            res = self._client.fs_read_block(
                handle_id=handle_id, offset=offset, len=length, timeout=timeout
            )
        return res.chunk, res.eof

    def write_block(
        self, handle_id: str, offset: int, data: bytes, *, timeout: Timeoutish = UNSET
    ) -> None:
        with map_fs_errors("fs/writeBlock", None):
            self._client.fs_write_block(
                handle_id=handle_id, offset=offset, chunk=data, timeout=timeout
            )

    def close_handle(self, handle_id: str, *, timeout: Timeoutish = UNSET) -> None:
        with map_fs_errors("fs/close", None):
            self._client.fs_close(handle_id=handle_id, timeout=timeout)
