"""YAML as this program reads its files (config.yaml and the web config): strictly.

PyYAML's safe loader keeps the last of a key written twice and reads YAML 1.1's octal and
base-60 integers; either can silently change what a file means (a second `1001:` dropped the
first one's floor, a second empty `basic_auth_users` turned auth off). Both are errors here,
and every way the parser can fail is one error type with the line and the problem, never a
value from the file.
"""

from __future__ import annotations

import re
from collections.abc import Hashable

import yaml

# YAML 1.1 reads 01001 as octal (513) and 1:30 as base 60 (90): an account id or an amount
# written so would silently mean another account or another amount, so neither is accepted.
_SURPRISING_INTEGER = re.compile(r"[-+]?(0[0-7_]+|[0-9][0-9_]*(:[0-5]?[0-9])+)")
# Fewer than 4300 decimal digits (log10(2) < 0.302): what str() and int() of a decimal accept.
_MAX_INT_BITS = 14_000
# And 1:30.5 as 90.5: a float in base 60.
_SURPRISING_FLOAT = re.compile(r"[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*")


class UnreadableYaml(ValueError):
    """Text that is not YAML this program reads: where and why, without quoting a value."""


def _refused(problem: str, node: yaml.Node) -> yaml.constructor.ConstructorError:
    """What the loader raises for a node it will not read: load_yaml reports the problem and its line."""
    return yaml.constructor.ConstructorError(None, None, problem, node.start_mark)


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load, but a key written twice in one mapping, or a number in octal or
    base-60 notation, is an error."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        # Each mapping is checked once, as written: an alias merged at many places is not walked
        # again (nested merges of aliases would take exponential time), and a mapping that
        # PyYAML has since flattened (its merged keys beside its own) is not checked again.
        self._checked: set[yaml.MappingNode] = set()

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        self._check_unique_keys(node)
        return super().construct_mapping(node, deep)

    def _check_unique_keys(self, node: yaml.MappingNode) -> None:
        if node in self._checked:
            return
        self._checked.add(node)
        seen: set[object] = set()
        merges = 0
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # keys a merge (<<) brings may be overridden
                merges += 1
                if merges > 1:
                    raise _refused("<< is written twice in one mapping: merge a list ([*a, *b])", key_node)
                # A mapping written in the merge itself is never constructed on its own: checked here.
                merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for mapping in merged:
                    if isinstance(mapping, yaml.MappingNode):
                        self._check_unique_keys(mapping)
                continue
            key = self.construct_object(key_node)
            if not isinstance(key, Hashable):
                continue  # a list or a mapping as a key: PyYAML refuses it, with its line
            if key in seen:
                raise _refused(f"{shown_key(key)} is written twice in one mapping", key_node)
            seen.add(key)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = self.construct_scalar(node)
        if isinstance(text, str) and _SURPRISING_INTEGER.fullmatch(text):
            raise _refused(
                f"{text} is {super().construct_yaml_int(node)} in YAML 1.1 (octal or base 60): "
                "write the number in decimal without a leading zero, or quote it",
                node,
            )
        value = super().construct_yaml_int(node)
        # int() limits the digits of a decimal number only: 0x and 0b numbers of any length are
        # read, and then str() of one (every error message, Decimal(str(...))) raises ValueError.
        if value.bit_length() > _MAX_INT_BITS:
            raise _refused("a number of more than 4300 digits: quote it", node)
        return value

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        text = self.construct_scalar(node)
        if isinstance(text, str) and _SURPRISING_FLOAT.fullmatch(text):
            raise _refused(
                f"{text} is {super().construct_yaml_float(node):g} in YAML 1.1 (base 60): "
                "write the number in decimal, or quote it",
                node,
            )
        return super().construct_yaml_float(node)


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _StrictLoader.construct_yaml_float)


def load_yaml(text: str) -> object:
    """The document in `text` (plain data: no Python objects), or UnreadableYaml."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        if "'\\t'" in problem:
            problem += " (YAML indents with spaces, not tabs)"
        raise UnreadableYaml(f"not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise UnreadableYaml("not valid YAML: nested too deeply") from None
    except ValueError:  # never its message: it may quote a value
        raise UnreadableYaml(
            "not valid YAML: a scalar cannot be read as a value "
            "(a number of more than 4300 digits, a date that does not exist): quote it"
        ) from None


def shown(value: object) -> str:
    """A value read from a file, for an error message: a string or a number as written, cut
    to 40 characters; anything else by its type only (the repr of a list built from aliases
    can run to 10^9 items, and `in` a dict raises for a list)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return "a number of more than 77 digits"
    if isinstance(value, (str, int, float)) or value is None:
        text = repr(value[:41] if isinstance(value, str) else value)
        return text if len(text) <= 40 else text[:37] + "..."
    return f"a {type(value).__name__}"


def shown_key(key: object) -> str:
    """A key read from a file, in the key path of an error message: as written when a string
    of up to 40 characters, else shown() (a key may be 100 kB, or a number of 4000 digits)."""
    return key if isinstance(key, str) and len(key) <= 40 and key.isprintable() else shown(key)
