"""Bring your own model: any importable LightningModule and LightningDataModule as a workload.

``--workload mypkg.models:MyModule --datamodule mypkg.data:MyData --init-args '{"hidden": 128}'``
runs the user's own classes through the same tricks and measurements as the built-in workloads.
The parent checks the paths before any run (:func:`check_imported`, a UserError naming the path and
what was found); the child builds the classes from the RunSpec (:class:`harness.workload.ImportedWorkload`).
The classes are imported as they are, from the current directory or ``PYTHONPATH``; nothing in the
module is changed, so a trick that needs what the module lacks is skipped with that reason.

This module imports nothing from :mod:`harness.workload`: the adapter class lives there, next to the
registry that hands it out for a ``pkg.mod:Class`` name, and uses the helpers here, so the import
runs one way only (the registry once imported the adapter here, which imported the registry).
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from harness.errors import UserError

PATH_FORM = "module.path:ClassName"
FILE_SUFFIXES = (".json", ".yaml", ".yml")


def is_import_path(name: str) -> bool:
    """A workload name with ':' names a class to import, not a registered workload."""
    return ":" in name


def import_class(path: str, flag: str, base: type) -> type:
    """Import ``pkg.mod:Class`` and check it subclasses ``base``; a UserError naming ``path`` otherwise."""
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name or ":" in class_name:
        raise UserError(f"{flag} {path!r} is not of the form {PATH_FORM}")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # `python -m harness` run from the user's project
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise UserError(
            f"{flag} {path!r}: cannot import {module_name!r} ({type(error).__name__}: {error}); "
            "run from the folder that holds it or add that folder to PYTHONPATH"
        ) from None
    found = getattr(module, class_name, None)
    if found is None:
        classes = sorted(n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, base) and v is not base)
        raise UserError(
            f"{flag} {path!r}: module {module_name!r} has no {class_name!r}; "
            f"{base.__name__} classes there: {', '.join(classes) or '(none)'}"
        )
    if not (isinstance(found, type) and issubclass(found, base)):
        old = _old_namespace_base(found, base)
        if old:
            raise UserError(
                f"{flag} {path!r} subclasses {old} (the old package name), which is not lightning.pytorch.{base.__name__}: "
                f"the harness runs lightning.pytorch; in {module_name}, import it as `import lightning.pytorch as pl` "
                "(or `from lightning.pytorch import ...`) instead of `pytorch_lightning`"
            )
        what = f"class {found.__module__}.{found.__qualname__}" if isinstance(found, type) else f"a {type(found).__name__}"
        raise UserError(f"{flag} {path!r} is {what}, not a subclass of lightning.pytorch.{base.__name__}")
    return found


def _old_namespace_base(found: Any, base: type) -> str:
    """``pytorch_lightning.<Base>`` when ``found`` subclasses the old package's class of that name, else ''."""
    if not isinstance(found, type):
        return ""
    for klass in found.__mro__:
        if klass.__name__ == base.__name__ and klass.__module__.split(".")[0] == "pytorch_lightning":
            return f"pytorch_lightning.{base.__name__}"
    return ""


def check_imported(
    workload: str, datamodule: str, init_args: dict[str, Any] | None = None, datamodule_args: dict[str, Any] | None = None
) -> None:
    """The parent's check of an imported workload, before any run starts: the classes exist and take the arguments."""
    module_cls = import_class(workload, "--workload", pl.LightningModule)
    if not datamodule:
        raise UserError(
            f"--workload {workload!r} is an imported LightningModule and needs --datamodule {PATH_FORM} "
            "(a LightningDataModule that serves its batches)"
        )
    datamodule_cls = import_class(datamodule, "--datamodule", pl.LightningDataModule)
    check_arguments(module_cls, init_args or {}, "--init-args", workload)
    check_arguments(datamodule_cls, datamodule_args or {}, "--datamodule-args", datamodule)


def check_arguments(cls: type, args: dict[str, Any], flag: str, where: str) -> None:
    """Refuse keys the constructor cannot take (every run would fail with the same TypeError)."""
    try:
        parameters = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):  # a signature Python cannot read: the run will say
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = [name for name, p in parameters.items() if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        raise UserError(f"{flag}: {where} does not take {', '.join(map(repr, unknown))}; it takes: {', '.join(accepted) or 'no arguments'}")


def parse_args_option(text: str | None, flag: str) -> dict[str, Any]:
    """``--init-args``: JSON, or a .json/.yaml file (``@path`` or a path ending in .json/.yaml/.yml)."""
    if text is None or not text.strip():
        return {}
    text = text.strip()
    source = "value"
    if text.startswith("@") or text.lower().endswith(FILE_SUFFIXES):
        path = Path(text.removeprefix("@"))
        if not path.is_file():
            raise UserError(f"{flag} {text!r}: file {str(path)!r} does not exist")
        source, text = f"file {str(path)!r}", path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError as error:
                raise UserError(f"{flag}: {source} is not valid YAML: {' '.join(str(error).split())}") from None
            return _mapping(value, flag, source)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{flag}: {source} {text[:80]!r} is not valid JSON ({error}); e.g. '{{\"hidden\": 128}}' or @config.yaml") from None
    return _mapping(value, flag, source)


def _mapping(value: Any, flag: str, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise UserError(f"{flag}: {source} must hold a mapping of argument names to values, got a {type(value).__name__}")
    return value
