"""This machine: processes started here, the disk of this Python process, ``LocalEnvironment``.

Modules: ``localenv`` (:class:`LocalEnvironment` and :func:`local`), ``processes`` (the local
process backend), ``disk`` (the local filesystem backend). Our server serves these backends.

The package name carries an underscore because ``execsdk.local`` is the public function: a
package of that name, once imported, would take its place as an attribute of ``execsdk``.
"""

from __future__ import annotations

__all__: list[str] = []
