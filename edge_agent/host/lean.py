"""Keep modules that libraries import but the daemon never uses out of its memory.

Every module a months-long daemon imports stays resident. Three libraries
import more than they use here:

- paho imports dnspython (when installed, as aiortc brings it) for
  ``connect_srv()``, which the agent never calls;
- paho imports ``urllib.request`` (and with it ``http.client`` and ``email``)
  only to read proxy settings, which it does only when PySocks is installed;
- pydantic's plugin loader imports ``importlib.metadata`` (``email``,
  ``zipfile``, ``csv``) to scan installed packages for plugins, even when
  plugins are disabled.

Together about 6 MiB (bench/footprint.py). Nothing is patched: a module is
hidden only while one library is imported, by nothing (an optional import
fails, as when the package is absent) or by a stand-in that imports the real
module the first time it is used; every later importer gets the real module.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from collections.abc import Mapping
from typing import Any


def import_hiding(module: str, hidden: Mapping[str, types.ModuleType | None]) -> None:
    """Import ``module`` while ``hidden`` stand in for modules in ``sys.modules``.

    A ``None`` stand-in makes ``import name`` fail (for optional imports). The
    real modules are untouched and import normally afterwards.
    """
    if module in sys.modules:
        return
    placed = {name: mod for name, mod in hidden.items() if name not in sys.modules}
    sys.modules.update(placed)  # type: ignore[arg-type]
    try:
        importlib.import_module(module)
    finally:
        for name, mod in placed.items():
            if sys.modules.get(name) is mod:
                del sys.modules[name]


def on_demand(name: str, bind: tuple[str, ...] = ()) -> types.ModuleType:
    """A stand-in for module ``name`` that imports the real one when first used.

    Any attribute read imports the real module and answers from it; ``bind``
    names functions an importer takes with ``from name import f`` at import
    time, which become wrappers that import the real module when called. (The
    standard library's LazyLoader does not fit: on Python 3.11 the import
    system reads ``__spec__`` of a module found in ``sys.modules``, which loads it.)
    """
    stand_in = types.ModuleType(name)

    def real() -> types.ModuleType:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
        return importlib.import_module(name)

    def module_getattr(attr: str) -> Any:
        if attr.startswith("__"):
            # The import system probes ``__path__`` and the like: not a use.
            raise AttributeError(attr)
        return getattr(real(), attr)

    def wrapper(attr: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            return getattr(real(), attr)(*args, **kwargs)

        call.__name__ = attr
        return call

    stand_in.__getattr__ = module_getattr  # type: ignore[method-assign]
    for attr in bind:
        setattr(stand_in, attr, wrapper(attr))
    parent, _, child = name.rpartition(".")
    if parent and not hasattr(sys.modules.get(parent), child):
        # ``import a.b`` of a module found in sys.modules does not bind it on
        # ``a``; code that then reads ``a.b`` gets the stand-in until the real
        # module is imported and takes its place.
        setattr(importlib.import_module(parent), child, stand_in)
    return stand_in


def paho() -> None:
    """Import paho's client without dnspython and with ``urllib.request`` on demand."""
    hidden: dict[str, types.ModuleType | None] = {"dns.resolver": None}
    if "urllib.request" not in sys.modules and "paho.mqtt.client" not in sys.modules:
        hidden["urllib.request"] = on_demand("urllib.request")
    import_hiding("paho.mqtt.client", hidden)


def for_daemon() -> None:
    """Before the daemon imports anything else: no pydantic plugin scan, no metadata."""
    # The documented switch; an operator who wants a pydantic plugin can set it.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    if "importlib.metadata" not in sys.modules and "pydantic.plugin._loader" not in sys.modules:
        metadata = on_demand("importlib.metadata", bind=("entry_points",))
        import_hiding("pydantic.plugin._loader", {"importlib.metadata": metadata})
    paho()
