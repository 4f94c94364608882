"""Plugins: components from other packages, from research code, without touching fusionbench.

Three ways in, as with pytest/timm-style plugin systems:

1. **Entry points**, one group per kind (``fusionbench.encoders``, ``fusionbench.fusions``,
   ``fusionbench.decoders``, ``fusionbench.datasets``, ``fusionbench.metrics``). The entry point's
   name is the component name and its value the class (``pkg.module:Class``) or a module that
   registers itself. Names are listed from the package metadata without importing; a component
   is imported on first use.
2. A ``plugins:`` list in an experiment config: module names or paths to ``.py`` files
   (unpackaged research code), imported before the config is validated.
3. The ``FUSIONBENCH_PLUGINS`` environment variable: the same, separated by commas or ``:``.

A plugin that fails to import stops only the runs that use it, with the plugin's name, the entry
point and the original error; everything else warns once and goes on.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import importlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from fusionbench.errors import RegistryError

ENV_VAR = "FUSIONBENCH_PLUGINS"

# the origin label given to components registered while a plugin is being imported
_current_origin: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fusionbench_plugin_origin", default=None
)
_loaded_sources: dict[str, str] = {}  # plugin spec -> module name
_warned: set[str] = set()


class PluginImportError(RegistryError):
    """A plugin (entry point, config ``plugins:`` entry or env var entry) failed to import."""


def current_origin() -> str | None:
    return _current_origin.get()


@contextlib.contextmanager
def plugin_origin(label: str | None) -> Iterator[None]:
    """Components registered inside this block are labelled with the plugin they came from."""
    token = _current_origin.set(label)
    try:
        yield
    finally:
        _current_origin.reset(token)


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, stacklevel=3)


def _import_path(path: Path) -> str:
    """Import a ``.py`` file under a stable, unique module name."""
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    name = f"fusionbench_plugin_{path.stem}_{digest}"
    if name in sys.modules:
        return name
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return name


def load_plugin(spec: str, *, where: str, base_dir: Path | None = None) -> str:
    """Import one plugin given as a module name or a ``.py`` path; returns the module name.

    ``where`` says where the plugin was named (a config file, the env var) for error messages.
    """
    spec = str(spec).strip()
    if spec in _loaded_sources:
        return _loaded_sources[spec]
    is_path = spec.endswith(".py") or os.sep in spec
    try:
        if is_path:
            path = Path(spec).expanduser()
            if not path.is_absolute() and base_dir is not None and (base_dir / path).is_file():
                path = base_dir / path
            path = path.resolve()
            if not path.is_file():
                raise FileNotFoundError(f"no such file: {path}")
            with plugin_origin(f"plugin file {path}"):
                name = _import_path(path)
        else:
            with plugin_origin(f"plugin module {spec}"):
                importlib.import_module(spec)
            name = spec
    except Exception as err:
        raise PluginImportError(
            f"Plugin '{spec}' (named in {where}) failed to import: {type(err).__name__}: {str(err).rstrip('.')}. "
            f"Fix the plugin, or remove it from {where}."
        ) from err
    _loaded_sources[spec] = name
    return name


def load_plugins(specs, *, where: str, base_dir: Path | None = None) -> None:
    for spec in specs or []:
        load_plugin(spec, where=where, base_dir=base_dir)


def env_plugin_specs() -> list[str]:
    raw = os.environ.get(ENV_VAR, "")
    parts = [p.strip() for chunk in raw.split(",") for p in chunk.split(os.pathsep)]
    return [p for p in parts if p]


def load_env_plugins() -> None:
    """Import the plugins named in ``FUSIONBENCH_PLUGINS``; a broken one warns once."""
    for spec in env_plugin_specs():
        try:
            load_plugin(spec, where=f"the {ENV_VAR} environment variable")
        except PluginImportError as err:
            warn_once(f"env:{spec}", str(err))
