"""Name-keyed registries of components (encoders, fusions, decoders, datasets, metrics).

Experiment YAML names components by key (``model.encoder.name: vit``), never by import path.
A registry maps that key to a class; each class declares its options as a dataclass in its
``Config`` attribute, so ``build`` validates a config node (unknown keys, wrong types, and the
values the dataclass declares allowed: ``Literal`` choices, ``Range`` bounds and its ``check``
hook, see ``fusionbench.checks``) with the full key path before anything is constructed.

Modelled on timm's registry (fail fast, wildcard listing) and LAVIS/MMF (duplicates are errors,
registration is typed). Built-in modules are imported lazily on first lookup, so nothing depends
on an import having happened elsewhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import importlib
import importlib.metadata
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fusionbench.checks import check_choices, check_config
from fusionbench.errors import ConfigError, RegistryError

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    """One registered component: the class, its config dataclass, a description and its origin."""

    name: str
    obj: type[T]
    config_cls: type | None
    description: str
    origin: str

    def default_config(self) -> DictConfig:
        """The component's full default config, including ``name``."""
        node = OmegaConf.structured(self.config_cls) if self.config_cls else OmegaConf.create({})
        out = OmegaConf.create({"name": self.name})
        return OmegaConf.merge(out, node)


def _origin_of(obj: Any) -> str:
    """Where a component comes from: ``built-in`` or the plugin, then its class and file."""
    from fusionbench.plugins import current_origin

    module = inspect.getmodule(obj)
    modname = module.__name__ if module else "?"
    try:
        path = inspect.getsourcefile(obj) or "?"
    except TypeError:
        path = "?"
    plugin = current_origin()
    if plugin is None and not modname.startswith("fusionbench."):
        plugin = f"plugin module {modname}"
    where = plugin or "built-in"
    return f"{where}: {modname}.{obj.__qualname__} ({path})"


def _first_doc_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


class Registry(Generic[T]):
    """A registry of one kind of component.

    Args:
        kind: singular name used in messages, e.g. ``"encoder"``.
        config_key: where the component's config lives in an experiment, e.g. ``"model.encoder"``.
        base: when given, registered classes must subclass it.
        builtins: modules imported on first lookup; they register the built-in components.
        entry_point_group: the package-metadata group plugins use, e.g. ``fusionbench.encoders``.
    """

    def __init__(
        self,
        kind: str,
        config_key: str,
        base: type | None = None,
        builtins: Iterable[str] = (),
        entry_point_group: str | None = None,
    ) -> None:
        self.kind = kind
        self.config_key = config_key
        self.base = base
        self._builtins = list(builtins)
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Entry[T]] = {}
        self._pending: dict[str, importlib.metadata.EntryPoint] = {}  # plugin names not imported yet
        self._failed: dict[str, str] = {}  # plugin name -> import error
        self._loaded = False

    # -- registration -------------------------------------------------------------------------
    def register(
        self, name: str, *, description: str | None = None, override: bool = False
    ) -> Callable[[type[T]], type[T]]:
        """Class decorator: ``@ENCODERS.register("cnn")``.

        Registering a name twice is an error naming both origins, unless ``override=True``.
        """

        def deco(obj: type[T]) -> type[T]:
            self._ensure_loaded()  # built-ins first, so a plugin cannot silently shadow one
            if self.base is not None and not (inspect.isclass(obj) and issubclass(obj, self.base)):
                raise RegistryError(
                    f"Cannot register {obj!r} as {self.kind} '{name}': it must subclass "
                    f"{self.base.__module__}.{self.base.__qualname__}."
                )
            origin = _origin_of(obj)
            if name in self._entries and not override:
                prev = self._entries[name]
                if prev.origin.split(": ", 1)[-1] != origin.split(": ", 1)[-1]:
                    raise RegistryError(
                        f"{self.kind} '{name}' is registered twice: by {prev.origin} and by {origin}. "
                        f"Rename one of them, or pass override=True to replace the first on purpose."
                    )
            config_cls = getattr(obj, "Config", None)
            if config_cls is not None and not dataclasses.is_dataclass(config_cls):
                raise RegistryError(f"{origin}: its Config attribute must be a dataclass.")
            self._entries[name] = Entry(
                name=name,
                obj=obj,
                config_cls=config_cls,
                description=description or _first_doc_line(obj),
                origin=origin,
            )
            return obj

        return deco

    # -- lookup -------------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        from fusionbench.plugins import plugin_origin

        with plugin_origin(None):  # built-ins are built-in even when a plugin triggers their import
            for mod in self._builtins:
                importlib.import_module(mod)
        if self.entry_point_group:
            for ep in importlib.metadata.entry_points(group=self.entry_point_group):
                if ep.name not in self._entries:
                    self._pending.setdefault(ep.name, ep)
        from fusionbench.plugins import load_env_plugins

        load_env_plugins()

    def _load_entry_point(self, name: str) -> None:
        """Import a plugin component named by an entry point (first use)."""
        from fusionbench.plugins import PluginImportError, plugin_origin

        ep = self._pending.pop(name)
        dist = getattr(ep, "dist", None)
        package = f"{dist.name} {dist.version}" if dist is not None else "unknown package"
        label = f"plugin {package} (entry point {ep.group}: {ep.name} = {ep.value})"
        try:
            with plugin_origin(label):
                obj = ep.load()
                if inspect.isclass(obj) and name not in self._entries:
                    self.register(name)(obj)
        except RegistryError:
            raise
        except Exception as err:
            self._failed[name] = f"{type(err).__name__}: {err}"
            raise PluginImportError(
                f"{self.kind} '{name}' comes from {label}, which failed to import: "
                f"{type(err).__name__}: {err}. Fix or reinstall that package, or choose another {self.kind}."
            ) from err
        if name not in self._entries:
            raise PluginImportError(
                f"{label} was imported but registered no {self.kind} named '{name}'. Point the entry point at "
                f"the component class, or register it with @{self.kind.upper()}S.register('{name}')."
            )

    def load_all(self) -> dict[str, str]:
        """Import every pending plugin component (for listing); returns ``{name: error}`` of failures."""
        from fusionbench.plugins import PluginImportError, warn_once

        self._ensure_loaded()
        for name in list(self._pending):
            try:
                self._load_entry_point(name)
            except PluginImportError as err:
                warn_once(f"{self.kind}:{name}", str(err))
        return dict(self._failed)

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names (plugins included, imported or not) matching a wildcard, sorted."""
        self._ensure_loaded()
        every = set(self._entries) | set(self._pending) | set(self._failed)
        return sorted(n for n in every if fnmatch.fnmatch(n, pattern))

    def entries(self, pattern: str = "*") -> list[Entry[T]]:
        """Imported entries matching ``pattern`` (call ``load_all`` first to include plugins)."""
        return [self._entries[n] for n in self.names(pattern) if n in self._entries]

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries or name in self._pending

    def get(self, name: str) -> Entry[T]:
        """The entry for ``name``; an unknown name fails with the valid names and a did-you-mean."""
        self._ensure_loaded()
        if name in self._pending:
            self._load_entry_point(name)
        if name in self._failed and name not in self._entries:
            from fusionbench.plugins import PluginImportError

            raise PluginImportError(
                f"{self.kind} '{name}' is a plugin that failed to import: {self._failed[name]}"
            )
        if name not in self._entries:
            valid = self.names()
            close = difflib.get_close_matches(str(name), valid, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise RegistryError(
                f"Unknown {self.kind} '{name}' (at {self.config_key}.name).{hint} "
                f"Valid {self.kind} names: {', '.join(valid) or '(none)'}. "
                f"Run `fusionbench list {self.kind}s` to see them with descriptions."
            )
        return self._entries[name]

    # -- configs ------------------------------------------------------------------------------
    def resolve_config(self, node: Any, key: str | None = None, **context: Any) -> DictConfig:
        """Validate a component node against its config dataclass and fill in defaults.

        Unknown keys, wrong types and values the dataclass does not allow fail with the full key
        path (e.g. ``model.encoder.depth``); ``context`` (``d_model``) goes to its ``check`` hook.
        """
        key = key or self.config_key
        if node is None:
            raise ConfigError(f"{key} is missing: give at least `{key}.name`.")
        if isinstance(node, str):
            node = {"name": node}
        if not isinstance(node, (dict, DictConfig)):
            raise ConfigError(f"{key} must be a mapping with a `name` key, got {node!r}.")
        node = OmegaConf.create(node) if isinstance(node, dict) else node
        name = node.get("name")
        if name is None:
            raise ConfigError(f"{key}.name is missing. Valid {self.kind} names: {', '.join(self.names())}.")
        entry = self.get(str(name))
        options = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k != "name"}
        defaults = entry.default_config()
        for k in options:
            if k not in defaults:
                valid = [x for x in defaults if x != "name"]
                close = difflib.get_close_matches(k, valid, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise ConfigError(
                    f"Unknown key {key}.{k} for {self.kind} '{name}'.{hint} "
                    f"Valid keys: {', '.join(valid) or '(none)'}."
                )
        if entry.config_cls is not None:
            check_choices(entry.config_cls, options, key)
        try:
            merged = OmegaConf.merge(defaults, options)
        except OmegaConfBaseException as err:
            bad = getattr(err, "full_key", "") or ""
            raise ConfigError(
                f"Invalid value for {key}.{bad} ({self.kind} '{name}'): {getattr(err, 'msg', err)}"
            ) from None
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise ConfigError(
                f"{self.kind} '{name}' needs a value for {', '.join(f'{key}.{k}' for k in missing)}."
            )
        if entry.config_cls is not None:
            check_config(self._instance(entry, merged), key, **context)
        return merged

    @staticmethod
    def _instance(entry: Entry[T], cfg: DictConfig) -> Any:
        options = OmegaConf.to_container(cfg, resolve=True)
        options.pop("name", None)
        return entry.config_cls(**options)

    def config_object(self, node: Any, key: str | None = None) -> tuple[Entry[T], Any]:
        """The entry and an instance of its config dataclass built from a validated node."""
        cfg = self.resolve_config(node, key)
        entry = self.get(cfg.name)
        return entry, (self._instance(entry, cfg) if entry.config_cls else None)

    def build(self, node: Any, key: str | None = None, **kwargs: Any) -> T:
        """Construct the component named by ``node.name`` with its validated config."""
        entry, config = self.config_object(node, key)
        return entry.obj(config, **kwargs) if entry.config_cls else entry.obj(**kwargs)
