"""YAML as the project reads its users' files (recipes, device profiles): PyYAML's safe
loader, refusing a key given twice in one mapping, which PyYAML would silently resolve to the
last value (a second ``threads:`` further down a profile won without a word), and reading
``3e-5`` as the number YAML 1.2 says it is (PyYAML's YAML 1.1 wants a dot: ``3.0e-5``, else a
string, which the strict recipe types refuse)."""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, ScalarNode


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<: *anchor' merges; keys written here may override its keys
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list):  # unhashable: PyYAML reports it itself
                continue
            if key in seen:
                raise ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}: give each key once",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# PyYAML's float pattern with YAML 1.2's exponent without a dot (1e-3) as a second branch.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """``yaml.safe_load(text)``, but a key repeated in one mapping raises ``yaml.YAMLError``
    (a ``ConstructorError`` whose ``problem_mark`` is the repeated key)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)
