"""YAML read into plain JSON types only, with alias expansion bounded.

- YAML 1.1 timestamps are not resolved: ``name: 2024-01-01`` stays the string it was written as.
- Any other value that is not a string, number, boolean, null, list or mapping with string keys
  (``!!binary``, ``!!set``, an explicit ``!!timestamp``...) is a one-line ConfigError naming it.
- A document whose aliases expand to more than `MAX_NODES` nodes (an "alias bomb": a few lines
  that expand to billions of values) or refer to themselves is refused before it is built.
"""

from __future__ import annotations

from typing import Any, ClassVar

import yaml

from dmlkit.errors import ConfigError

MAX_NODES = 100_000
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _Loader(yaml.SafeLoader):
    """SafeLoader without implicit timestamps; `compose_document` checks the expanded size."""

    yaml_implicit_resolvers: ClassVar[dict[str, list]] = {
        first: [(tag, rx) for tag, rx in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        _expanded_size(node, {}, self.name)
        return node


def _expanded_size(node: yaml.Node, memo: dict[int, int | None], source: str) -> int:
    """Nodes of ``node`` with every alias expanded (memoized per node: linear in the file)."""
    key = id(node)
    if key in memo:
        if memo[key] is None:
            raise ConfigError(f"{source}: a YAML alias refers to itself")
        return memo[key]  # type: ignore[return-value]
    memo[key] = None
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(n, memo, source) for n in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo, source) + _expanded_size(v, memo, source)
                    for k, v in node.value)
    if size > MAX_NODES:
        raise ConfigError(f"{source}: the YAML expands to more than {MAX_NODES} values "
                          "(aliases repeated inside aliases); write the values out")
    memo[key] = size
    return size


def _check_plain(value: Any, where: str, source: str) -> None:
    """ConfigError unless ``value`` is made of plain JSON types (string keys)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{source}: key {k!r} under '{where or '<root>'}' is not a "
                                  "string; quote it")
            _check_plain(v, f"{where}.{k}" if where else k, source)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]", source)
    elif not (value is None or isinstance(value, str | int | float | bool)):
        raise ConfigError(f"{source}: '{where or '<root>'}' is a YAML {type(value).__name__} "
                          f"({value!r:.40}); a config holds strings, numbers, booleans, lists "
                          "and mappings only (quote it to make it a string)")


def load(text: str, source: str) -> Any:
    """The YAML ``text`` as plain JSON types (see the module doc); ``source`` names it in
    errors. Syntax errors are raised as ``yaml.YAMLError``."""
    loader = _Loader(text)
    loader.name = source
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    _check_plain(data, "", source)
    return data
