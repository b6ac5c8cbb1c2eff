"""YAML from users, read within limits: no python objects, no alias bombs, no loops.

:func:`compose` parses one document with PyYAML's ``SafeLoader`` composer (it never
constructs python objects) into a node tree in which every alias is an
:class:`AliasNode` pointing at its anchor's node, and refuses nesting deeper than
:data:`MAX_DEPTH` with a :class:`yaml.MarkedYAMLError` at the line it reached.

:class:`PlainBuilder` turns that tree into plain, unshared data (dicts, lists,
str, int, float, bool, None, dates) and reports through ``report(line, loc, message)``,
carrying on so that every problem in the document is found in one pass:

- the values built through aliases (merge keys included) are counted; past
  :data:`MAX_ALIAS_VALUES` in one document the outermost alias being expanded
  becomes ``None`` and one problem, and no further alias is expanded;
- an alias inside the block its anchor names (a loop) is a problem;
- expansion nested deeper than :data:`MAX_DEPTH` is a problem;
- a tag other than the standard ones (:data:`STANDARD_TAGS`) is a problem, and so
  is a value its tag cannot read (``!!int many``, a date that does not exist);
- a key that is not a scalar is a problem; a repeated key is one too when
  ``duplicate_keys="error"`` (otherwise the last one wins, as PyYAML does).

``<<`` merge keys follow YAML's merge rules: keys written in the mapping win, and
of several merged mappings the earlier wins. Nothing here raises for bad input
except :func:`compose`, whose errors are ordinary ``yaml.YAMLError``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Literal

import yaml
from yaml.composer import ComposerError

Loc = tuple[str | int, ...]
Report = Callable[[int, Loc, str], None]

MAX_ALIAS_VALUES = 100_000
MAX_DEPTH = 100

_YAML = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(
    f"{_YAML}{name}" for name in ("str", "int", "float", "bool", "null", "timestamp")
)
_MERGE = f"{_YAML}merge"
_VALUE = f"{_YAML}value"  # a plain '=' resolves to it; SafeLoader has no constructor for it
_MAP, _SEQ = f"{_YAML}map", f"{_YAML}seq"
STANDARD_TAGS = _SCALAR_TAGS | {_MERGE, _VALUE, _MAP, _SEQ}
_READS = "text, numbers, true/false, null, dates, lists and mappings"


class AliasNode(yaml.Node):
    """Where a document writes ``*name``; ``value`` is the anchored node."""

    id = "alias"
    value: yaml.Node


class _Loader(yaml.SafeLoader):
    """SafeLoader's composer, keeping aliases visible and nesting bounded."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # check_event leaves the next event in current_event (peek_event is untyped).
        if self.check_event(yaml.AliasEvent):
            mark = self.current_event.start_mark
            target = super().compose_node(parent, index)
            return AliasNode(target.tag if target else "", target, mark, mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH and self.check_event(yaml.NodeEvent):
                mark = self.current_event.start_mark
                raise ComposerError(
                    None, None, f"lists and mappings nest more than {MAX_DEPTH} levels", mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def compose(text: str) -> yaml.Node | None:
    """The document's node tree (``None`` when empty); raises ``yaml.YAMLError``."""
    loader = _Loader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


class _Abort(Exception):
    """An alias's expansion went past a limit; unwinds to the outermost alias."""

    def __init__(self, message: str, exhausted: bool) -> None:
        super().__init__(message)
        self.message = message
        self.exhausted = exhausted


class PlainBuilder:
    """Node tree → plain data within the limits above; subclasses hook keys and text."""

    def __init__(self, report: Report, duplicate_keys: Literal["error", "last"] = "error") -> None:
        self.report = report
        self.duplicate_keys = duplicate_keys
        self.refused = False  # a problem of the YAML itself was reported
        self._refusals = 0
        self._constructor = yaml.SafeLoader("")
        self._path: set[int] = set()  # collection nodes being built, to catch loops
        self._aliases = 0  # aliases being expanded around the current node
        self._alias_values = 0
        self._exhausted = False

    # -- hooks ---------------------------------------------------------------

    def record(self, loc: Loc, line: int) -> None:
        """Called with the 1-based line of every key and list item."""

    def make_key(self, raw: Hashable) -> Hashable:
        return raw

    def text(self, value: str, loc: Loc, line: int) -> str:
        return value

    # -- building --------------------------------------------------------------

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        if len(loc) > MAX_DEPTH:
            # Only aliases can get here: compose() bounds the written nesting.
            raise _Abort(
                f"aliases here nest more than {MAX_DEPTH} levels: YAML anchors are for "
                "small shared blocks; write the data out, or alias a shallower block",
                exhausted=False,
            )
        if isinstance(node, AliasNode):
            return self._through(node, loc, self.build)
        if self._aliases:
            self._alias_values += 1
            if self._alias_values > MAX_ALIAS_VALUES:
                raise _Abort(
                    f"aliases here expand past {MAX_ALIAS_VALUES:,} values: YAML anchors "
                    "are for small shared blocks; write the data out, or anchor a smaller block",
                    exhausted=True,
                )
        if isinstance(node, yaml.ScalarNode):
            value = self._construct(node, loc)
            if isinstance(value, str):
                return self.text(value, loc, node.start_mark.line + 1)
            return value
        expected = _MAP if isinstance(node, yaml.MappingNode) else _SEQ
        if node.tag != expected:
            return self._refuse(node, loc, _tag_message(node.tag))
        self._path.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, loc)
            return self._sequence(node.value, loc)
        finally:
            self._path.discard(id(node))

    def _through(self, alias: AliasNode, loc: Loc, then: Callable[[yaml.Node, Loc], Any]) -> Any:
        """``then(anchored node)``, counting what it builds against the alias budget."""
        if id(alias.value) in self._path:
            return self._refuse(
                alias,
                loc,
                "this alias is inside the block it names, a loop; "
                "anchor a block outside it, or write the value out",
            )
        if self._exhausted:
            return None
        self._aliases += 1
        try:
            return then(alias.value, loc)
        except _Abort as abort:
            if self._aliases > 1:
                raise
            self._exhausted = abort.exhausted
            return self._refuse(alias, loc, abort.message)
        finally:
            self._aliases -= 1

    def _construct(self, node: yaml.ScalarNode, loc: Loc) -> Any:
        if node.tag == _VALUE:
            return str(node.value)
        if node.tag not in _SCALAR_TAGS:
            return self._refuse(node, loc, _tag_message(node.tag))
        construct = self._constructor.yaml_constructors[node.tag]
        try:
            return construct(self._constructor, node)
        except (yaml.YAMLError, ValueError, KeyError, AttributeError, TypeError, OverflowError):
            if node.tag == f"{_YAML}timestamp" and node.style is None:
                message = f"{node.value!r} is not a valid date; quote it to keep it as text"
            else:
                message = (
                    f"{node.value!r} cannot be read as {_short(node.tag)}; "
                    "fix the value or remove the tag"
                )
            return self._refuse(node, loc, message)

    def _sequence(self, nodes: list[yaml.Node], loc: Loc) -> list[Any]:
        items = []
        for index, item in enumerate(nodes):
            child = (*loc, index)
            self.record(child, item.start_mark.line + 1)
            items.append(self.build(item, child))
        return items

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[Any, Any]:
        # Merged keys first, so the lines of keys written here are the ones recorded.
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if _target(key_node).tag == _MERGE:
                out.update(self._merge(value_node, loc))
        written: set[Hashable] = set()
        for key_node, value_node in node.value:
            if _target(key_node).tag == _MERGE:
                continue
            key = self._key(key_node, loc)
            if key is _NO_KEY:
                continue
            child = (*loc, key if isinstance(key, str | int) else str(key))
            line = key_node.start_mark.line + 1
            if key in written and self.duplicate_keys == "error":
                self.report(line, child, f"key '{key}' appears twice in this mapping; keep one")
                continue
            written.add(key)
            self.record(child, line)
            out[key] = self.build(value_node, child)
        return out

    def _merge(self, node: yaml.Node, loc: Loc) -> dict[Any, Any]:
        """``<<: *a`` or ``<<: [*a, *b]``: the merged keys, the earlier mapping winning."""
        if isinstance(node, AliasNode) and isinstance(node.value, yaml.SequenceNode):
            merged = self._through(node, loc, self._merge)
            return merged if isinstance(merged, dict) else {}
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if not all(isinstance(_target(source), yaml.MappingNode) for source in sources):
            self._refuse(
                node,
                loc,
                "'<<:' merges a mapping or a list of mappings; "
                "write '<<: *name' where &name marks a mapping",
            )
            return {}
        merged = {}
        for source in reversed(sources):
            built = self.build(source, loc)
            if isinstance(built, dict):
                merged.update(built)
        return merged

    def _key(self, node: yaml.Node, loc: Loc) -> Hashable:
        target = _target(node)
        if not isinstance(target, yaml.ScalarNode):
            self.report(node.start_mark.line + 1, loc, "keys must be plain strings")
            return _NO_KEY
        refusals = self._refusals
        raw = self._construct(target, loc)
        return _NO_KEY if self._refusals > refusals else self.make_key(raw)

    def _refuse(self, node: yaml.Node, loc: Loc, message: str) -> None:
        self.refused = True
        self._refusals += 1
        self.report(node.start_mark.line + 1, loc, message)


_NO_KEY = object()


def _target(node: yaml.Node) -> yaml.Node:
    return node.value if isinstance(node, AliasNode) else node


def _short(tag: str) -> str:
    return "!!" + tag.removeprefix(_YAML) if tag.startswith(_YAML) else tag


def _tag_message(tag: str) -> str:
    return (
        f"tag '{_short(tag)}' is not allowed: runbell reads plain YAML ({_READS}); remove the tag"
    )
