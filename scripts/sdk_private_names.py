"""Count the private singer-sdk names the package touches (the SDK boundary's size).

Private names are the SDK's internals: any SDK release may rename or change them without
notice. The count covers, in `target_databox/` (the emulator excluded: it knows no SDK):

- single-underscore attribute and method names (read, written, overridden or called) that
  exist on a singer-sdk class the package imports, subclasses or reaches through one: as a
  class attribute anywhere in its MRO, or assigned as `self._name` in the SDK's source;
- private modules (`singer_sdk.helpers._batch`) and private names imported from the SDK.

Names are counted once however often they occur. The goal is <= 8, each one listed with
its reason in target_databox/sdk_boundary.py, which tests/test_sdk_boundary.py checks.

    python scripts/sdk_private_names.py            # the count, then one line per name
    python scripts/sdk_private_names.py --max 8    # exit 1 if the count is above 8
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import sys
from collections import defaultdict
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "target_databox"


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def package_files(package: Path) -> list[Path]:
    excluded = package / "emulator"
    return sorted(p for p in package.rglob("*.py") if excluded not in p.parents)


def sdk_imports(tree: ast.AST) -> tuple[list[object], list[str]]:
    """(SDK objects imported by name, private SDK module/name references)."""
    objects: list[object] = []
    private: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("singer_sdk"):
            module_name = node.module or ""
            for part in module_name.split("."):
                if is_private(part):
                    private.append(f"module {module_name}")
                    break
            module = importlib.import_module(module_name)
            for alias in node.names:
                if is_private(alias.name):
                    private.append(f"name {module_name}.{alias.name}")
                objects.append(getattr(module, alias.name, None))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("singer_sdk") and any(
                    is_private(p) for p in alias.name.split(".")
                ):
                    private.append(f"module {alias.name}")
    return objects, private


def sdk_classes(objects: list[object]) -> set[type]:
    """The SDK classes reachable from the imported objects: the classes themselves, their
    bases, and classes named by their public annotations/attributes (a Target's sinks and
    reader, a Sink's target)."""
    found: set[type] = set()
    todo = [o for o in objects if inspect.isclass(o)]
    modules = [o for o in objects if inspect.ismodule(o)]
    for module in modules:
        todo += [v for v in vars(module).values() if inspect.isclass(v)]
    while todo:
        cls = todo.pop()
        if cls in found or not cls.__module__.startswith("singer_sdk"):
            continue
        found.add(cls)
        todo += [c for c in cls.__mro__ if c.__module__.startswith("singer_sdk")]
        for name in ("default_sink_class", "message_reader_class"):
            value = getattr(cls, name, None)
            if inspect.isclass(value):
                todo.append(value)
    # A Target holds Sinks, a Sink its Target, a Target its reader and mapper.
    from singer_sdk import Sink, Target
    from singer_sdk.io_base import SingerReader
    from singer_sdk.mapper import PluginMapper

    if found & set(Target.__mro__) or found & set(Sink.__mro__):
        for extra in (Sink, Target, SingerReader, PluginMapper):
            found.update(c for c in extra.__mro__ if c.__module__.startswith("singer_sdk"))
    return found


@cache
def self_assigned(cls: type) -> frozenset[str]:
    """Names a class's own source assigns as `self._name`."""
    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError):
        return frozenset()
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
            and is_private(node.attr)
        ):
            names.add(node.attr)
    return frozenset(names)


def sdk_private_attributes(classes: set[type]) -> dict[str, list[str]]:
    """Private name → the SDK classes that define it (not merely inherit it)."""
    names: dict[str, list[str]] = defaultdict(list)
    for cls in sorted(classes, key=lambda c: (c.__module__, c.__qualname__)):
        owner = f"{cls.__module__}.{cls.__qualname__}"
        for name in sorted(set(vars(cls)) | self_assigned(cls)):
            if is_private(name) and not any(
                name in vars(base) or name in self_assigned(base)
                for base in cls.__mro__[1:]
                if base in classes
            ):
                names[name].append(owner)
    return names


def used_private_names(tree: ast.AST) -> set[str]:
    """Single-underscore attributes read/written and methods defined in classes."""
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            used.add(node.attr)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and is_private(
                    item.name
                ):
                    used.add(item.name)
                elif isinstance(item, (ast.Assign, ast.AnnAssign)):
                    targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                    used.update(
                        t.id for t in targets if isinstance(t, ast.Name) and is_private(t.id)
                    )
    return used


def touched(package: Path = PACKAGE) -> dict[str, list[str]]:
    """Each private SDK name → where the package touches it."""
    root = package.parent
    trees = {path: ast.parse(path.read_text(), str(path)) for path in package_files(package)}
    objects: list[object] = []
    result: dict[str, list[str]] = defaultdict(list)
    for path, tree in trees.items():
        found, private = sdk_imports(tree)
        objects += found
        for entry in private:
            result[entry].append(str(path.relative_to(root)))
    sdk_names = sdk_private_attributes(sdk_classes(objects))
    for path, tree in trees.items():
        for name in sorted(used_private_names(tree) & sdk_names.keys()):
            result[f"{name} (on {', '.join(sdk_names[name])})"].append(str(path.relative_to(root)))
    return {name: sorted(set(where)) for name, where in sorted(result.items())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=None, help="fail above this count")
    parser.add_argument("--package", type=Path, default=PACKAGE, help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = touched(args.package.resolve())
    print(len(names))
    for name, where in names.items():
        print(f"  {name}  ({', '.join(where)})")
    if args.max is not None and len(names) > args.max:
        print(f"{len(names)} private singer-sdk names, more than {args.max}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
