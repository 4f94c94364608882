"""``fusionbench new-plugin NAME``: scaffold an installable plugin package.

The package has a pyproject with the entry point, one component of the chosen kind with its
contract filled in (a working, documented starting point), and a test that builds the component
through fusionbench's registry and checks the contract.
"""

from __future__ import annotations

import keyword
import re
from importlib import resources
from pathlib import Path

from fusionbench.errors import ConfigError
from fusionbench.io import atomic_write_text

KINDS = {
    # kind: (entry-point group, component class name, default component name)
    "encoder": ("fusionbench.encoders", "TinyConvEncoder", "tiny_conv"),
    "fusion": ("fusionbench.fusions", "GatedSumFusion", "gated_sum"),
    "decoder": ("fusionbench.decoders", "GRUDecoder", "gru"),
    "dataset": ("fusionbench.datasets", "ColourSwatches", "swatches"),
    "metric": ("fusionbench.metrics", "LengthRatio", "length_ratio"),
}


def new_plugin(
    name: str, kind: str = "fusion", directory: str | Path = ".", component: str | None = None
) -> Path:
    """Write the package ``<directory>/<name>/``; returns its path."""
    if kind not in KINDS:
        raise ConfigError(f"--kind must be one of {', '.join(KINDS)}, got '{kind}'.")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name):
        raise ConfigError(
            f"Plugin name '{name}' must start with a letter and use letters, digits, '-' or '_'."
        )
    package = name.replace("-", "_").lower()
    if keyword.iskeyword(package):
        raise ConfigError(
            f"Plugin name '{name}' gives the Python package '{package}', a keyword; choose another name."
        )
    group, cls, default_component = KINDS[kind]
    component = component or default_component
    if not re.fullmatch(r"[a-z][a-z0-9_]*", component):
        raise ConfigError(f"Component name '{component}' must be lower-case letters, digits and '_'.")
    root = Path(directory) / name
    if root.exists():
        raise ConfigError(f"'{root}' already exists; choose another name or remove it.")
    subs = {
        "{{name}}": name,
        "{{package}}": package,
        "{{group}}": group,
        "{{cls}}": cls,
        "{{component}}": component,
        "{{kind}}": kind,
    }

    def render(template: str) -> str:
        text = (
            resources.files("fusionbench.scaffold")
            .joinpath("templates", template)
            .read_text(encoding="utf-8")
        )
        for key, value in subs.items():
            text = text.replace(key, value)
        return text

    atomic_write_text(root / "pyproject.toml", render("pyproject.toml.tmpl"))
    atomic_write_text(root / "README.md", render("README.md.tmpl"))
    atomic_write_text(root / package / "__init__.py", f'"""fusionbench plugin {name}."""\n')
    atomic_write_text(root / package / f"{kind}.py", render(f"{kind}.py.tmpl"))
    atomic_write_text(root / "tests" / f"test_{kind}.py", render(f"test_{kind}.py.tmpl"))
    return root
