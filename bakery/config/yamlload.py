"""Safe YAML loading for workshop files: plain data only, with the line of every key and value.

A workshop file needs no anchors, aliases, merge keys, complex keys or deep nesting; all of them
are refused while the document is composed, before any object is built, so an alias bomb
("billion laughs") or 10,000 nested brackets fail at once with the line that holds them.
"""

from __future__ import annotations

from typing import Any

import yaml

from bakery.config.source import Loc, Source
from bakery.errors import ConfigError

# Deeper than any workshop file needs (the deepest key is about 5 levels down).
MAX_DEPTH = 32
# Far more than a workshop needs; a cap keeps a huge generated file from eating memory.
MAX_NODES = 100_000
MAX_BYTES = 4 * 1024 * 1024


def _refused(problem: str, mark: Any) -> yaml.MarkedYAMLError:
    """PyYAML's own error for a construct the loader refuses, with the mark of where it is."""
    return yaml.MarkedYAMLError(problem=problem, problem_mark=mark)


class _Loader(yaml.SafeLoader):
    """A safe loader that refuses anchors, aliases, merge keys, complex and duplicate keys."""

    _depth = 0
    _nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            raise _refused(
                f"alias *{event.anchor} refused: a workshop file needs no anchors or aliases "
                "(write the value out)",
                event.start_mark,
            )
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise _refused(
                f"anchor &{anchor} refused: a workshop file needs no anchors or aliases "
                "(write the value out)",
                event.start_mark,
            )
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _refused(f"more than {MAX_NODES:,} values: not a workshop file", event.start_mark)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _refused(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        # A date YAML recognises but Python cannot hold (February 30, an offset of +24:00, a
        # year past 9999) is the file's error, with its line, not a crash.
        try:
            return super().construct_yaml_timestamp(node)
        except (ValueError, OverflowError):
            problem = (
                f"{node.value!r} is not a real date and time; write one such as "
                "2026-12-01T18:00:00+01:00 (an offset between -23:59 and +23:59)"
            )
            raise _refused(problem, node.start_mark) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _refused(
                    "merge key '<<' refused: a workshop file needs no merge keys (write the "
                    "keys out)",
                    key_node.start_mark,
                )
            if not isinstance(key_node, yaml.ScalarNode):
                raise _refused(
                    "a key must be a plain name, not a list or mapping ('? [a, b]')",
                    key_node.start_mark,
                )
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                raise _refused(
                    f"YAML reads the key {key_node.value} as {type(key).__name__} "
                    f"{key!r}, not a name; quote it: '{key_node.value}'",
                    key_node.start_mark,
                )
            if key in seen:
                raise _refused(
                    f"duplicate key {key!r} (first on line {seen[key]})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=True)


def _index(root: yaml.Node, source: Source) -> None:
    # Iterative (the depth is capped, but a long flat list must not recurse either).
    stack: list[tuple[yaml.Node, Loc]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        source.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            source.written[path] = node.value
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                source.lines[(*path, k.value)] = k.start_mark.line + 1
                stack.append((v, (*path, k.value)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((v, (*path, i)) for i, v in enumerate(node.value))


def load_yaml(text: str, where: str) -> Source:
    """Parse ``text`` (from ``where``, used in messages) as plain YAML data.

    Raises:
        ConfigError: ``where:line: invalid YAML: ...`` for a syntax error or refused construct.
    """
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{where}: {len(text):,} characters is too large for a workshop file")
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        at = text[: exc.position].count("\n") + 1
        raise ConfigError(
            f"{where}:{at}: invalid YAML: character {exc.character!r} is not allowed"
        ) from None
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}{line}: invalid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{where}: invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    source = Source(data)
    if node is not None:
        _index(node, source)
    return source


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)
