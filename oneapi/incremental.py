"""config.yaml read piece by piece, so that a reload after a small edit parses only what changed.

The text is cut at its top-level keys, and the arrays the schema validates item by item (`channels:`,
`tokens:`) are cut at their items. Each piece is parsed, interpolated and validated on its own and kept by
its text; the next reload reuses every piece whose text is the same and whose `${...}` still read the same.
Line numbers are worked out only when a problem or a warning needs one.

Whenever the text does not cut cleanly (anchors and aliases, tags, merge keys, tabs, a flow collection or
a quoted string across the cut, a piece that does not parse alone or parses into something else than its
place holds) the whole file is read by documents.parse_document, exactly as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate
from typing import Any, cast

import yaml
from yaml.events import (
    DocumentEndEvent, DocumentStartEvent, MappingEndEvent, MappingStartEvent, ScalarEvent,
    SequenceEndEvent, SequenceStartEvent, StreamEndEvent, StreamStartEvent,
)

from .documents import (
    STR_TAG, ConfigError, Document, Environ, Interpolator, Path_, Problem, Reads, YamlLoader, construct_plain,
    Sources, node_lines, parse_document, plain_tag, read_text, schema_check, schema_validator, validate,
)

# libyaml's bare event parser when present: half the cost of a whole loader per piece
_EventParser: Any = getattr(yaml.cyaml, "CParser", None) if yaml.__with_libyaml__ else None
_EventParser = _EventParser or YamlLoader
_SIMPLE_TAGS = frozenset({STR_TAG, "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null"})

# plain scalars already resolved (keys, and values like `100` or `openai` recur on every item); immutable values
_PLAIN: dict[str, Any] = {}

# Patterns start at a line's "\n" rather than at `^`: re then skips to newlines instead of trying every position.
_BLOCK_START = re.compile(r"\n(?=[^\s#-])")  # a top-level key: column 0, not a comment, not an indentless item
_PREFIX = re.compile(r"(?:[ ]*(?:#[^\n]*)?\n|---[ ]*(?:#[^\n]*)?\n)*")  # blank lines, comments, one `---`
_ITEMS_HEADER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*):[ ]*(?:#[^\n]*)?\n")  # `tokens:` alone on its line
_FIRST_ITEM = re.compile(r"(?:[ ]*(?:#[^\n]*)?\n)*( *)-(?=[ \n]|\Z)")
_TAB_INDENT = re.compile(r"\n *\t")
_ITEM_ON_FIRST_LINE = re.compile(r" *- +[^ #\n]")  # `- name: x`: the item starts on the dash's line


class _NeedsWholeFile(Exception):
    """This text does not cut cleanly into pieces: parse it whole."""


@dataclass
class Block:
    """One top-level key: its text parsed whole, or a header (`tokens:`) and the text of each array item."""

    text: str  # the whole block, or its header when it is cut into items
    line: int  # 1-based
    key: str | None = None  # the array's key, when cut into items
    items: list[str] | None = None
    _item_lines: list[int] | None = field(default=None, repr=False)

    def item_line(self, index: int) -> int:
        if self._item_lines is None:
            assert self.items is not None
            counts = (item.count("\n") for item in self.items[:-1])
            self._item_lines = list(accumulate(counts, initial=self.line + self.text.count("\n")))
        return self._item_lines[index]


@dataclass
class Parsed:
    """A piece's value, what its `${...}` read, and (once asked for) the line of each path inside it."""

    text: str
    value: Any
    reads: Reads
    _lines: dict[Path_, int] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.reads_files = any(kind == "file" for kind, _ in self.reads)  # read again on every load

    def line(self, path: Path_) -> int:
        """Line of the deepest known node on `path`, counted from the piece's first line (0)."""
        if self._lines is None:
            if path == (0,) and _ITEM_ON_FIRST_LINE.match(self.text):
                return 0  # an item's own line, the one asked for most (ChannelConfig.line): no need to parse
            loader = YamlLoader(self.text)
            try:
                self._lines = node_lines(loader.get_single_node(), loader)
            finally:
                loader.dispose()
        while path not in self._lines and path:
            path = path[:-1]
        return self._lines.get(path, 1) - 1


def split_blocks(text: str, itemized: frozenset[str]) -> list[Block] | None:
    """The text cut into top-level blocks, `itemized` arrays cut into items; None when it does not cut cleanly."""
    text = "\n" + text  # so that the first line starts after a newline too; positions below are one off
    if any(c in text for c in "\x85\u2028\u2029") or ("\t" in text and _TAB_INDENT.search(text)):
        return None  # line breaks libyaml counts and we would not; tabs, which YAML forbids in indentation
    starts = [m.end() for m in _BLOCK_START.finditer(text)]
    if not starts or _PREFIX.fullmatch(text, 1, starts[0]) is None:
        return None
    blocks = []
    line = text.count("\n", 0, starts[0])  # 1-based, for the "\n" put in front
    for start, end in zip(starts, starts[1:] + [len(text)]):
        blocks.append(_block(text, start, end, line, itemized))
        line += text.count("\n", start, end)
    return blocks


def _block(text: str, start: int, end: int, line: int, itemized: frozenset[str]) -> Block:
    header = _ITEMS_HEADER.match(text, start, end)
    first = _FIRST_ITEM.match(text, header.end(), end) if header and header.group(1) in itemized else None
    if header is None or first is None:
        return Block(text[start:end], line)  # not an array cut into items (or `tokens:` with none: the schema will say)
    indent = len(first.group(1))
    newline = first.start(1) - 1  # the first item's line follows a newline, as the matches below start with one
    if _stray_line(indent).search(text, newline, end):
        raise _NeedsWholeFile
    # str.split rather than a regex: no object per item; every "\n" + indent + "-" starts an item (no stray line)
    dash = " " * indent + "-"
    parts = text[newline:end].split("\n" + dash)
    items = [dash + part + "\n" for part in parts[1:-1]]
    items.append(dash + parts[-1])
    return Block(text[start:first.start(1)], line, header.group(1), items)


@lru_cache(maxsize=None)
def _stray_line(indent: int) -> re.Pattern[str]:
    """A line inside the array that is neither an item's start, nor inside an item, nor blank or a comment."""
    less = rf" {{0,{indent - 1}}}[^ \n#]|" if indent else ""
    return re.compile(rf"\n(?:{less} {{{indent}}}(?!-(?:[ \n]|\Z))[^ \n#])")


class _EventBuilder:
    """Plain data from libyaml's events, for the YAML a config piece uses; anything else needs the whole file."""

    def __init__(self, text: str, interpolate: Interpolator):
        self.next = _EventParser(text).get_event
        self.interpolate = interpolate

    def document(self, path: Path_, one_item: bool) -> Any:
        try:
            if type(self.next()) is not StreamStartEvent:
                raise _NeedsWholeFile
            start = self.next()
            if type(start) is not DocumentStartEvent or start.explicit or start.version or start.tags:
                raise _NeedsWholeFile
            if one_item:
                if type(self.next()) is not SequenceStartEvent:
                    raise _NeedsWholeFile
                value = self.node(self.next(), path)
                if type(self.next()) is not SequenceEndEvent:
                    raise _NeedsWholeFile  # more than one item: the cut was wrong
            else:
                value = self.node(self.next(), path)
                if not isinstance(value, dict) or len(value) != 1:
                    raise _NeedsWholeFile
            if type(self.next()) is not DocumentEndEvent or type(self.next()) is not StreamEndEvent:
                raise _NeedsWholeFile
            return value
        except yaml.YAMLError:
            raise _NeedsWholeFile from None

    def node(self, event: Any, path: Path_) -> Any:
        kind = type(event)
        if kind is ScalarEvent:
            value = self._scalar(self._untagged(event))
            if isinstance(value, str) and "$" in value:
                value = self.interpolate(value, path)
                if not event.style:
                    value = self.interpolate.plain(event.value, value)
            return value
        if kind is MappingStartEvent:
            self._untagged(event)
            out: dict[str, Any] = {}
            while type(event := self.next()) is not MappingEndEvent:
                if type(event) is not ScalarEvent:
                    raise _NeedsWholeFile
                key = self._scalar(self._untagged(event))
                if key is None or not isinstance(key, (str, int, float, bool)):
                    raise _NeedsWholeFile
                key = key if isinstance(key, str) else str(key)
                if key in out:
                    raise _NeedsWholeFile  # the whole file reports it, at its line
                out[key] = self.node(self.next(), path + (key,))
            return out
        if kind is SequenceStartEvent:
            self._untagged(event)
            items: list[Any] = []
            while type(event := self.next()) is not SequenceEndEvent:
                items.append(self.node(event, path + (len(items),)))
            return items
        raise _NeedsWholeFile  # an alias

    @staticmethod
    def _scalar(event: ScalarEvent) -> Any:
        if event.style:  # quoted, or a block scalar: a string as written
            return event.value
        raw = event.value
        value = _PLAIN.get(raw, _PLAIN)
        if value is _PLAIN:
            tag = plain_tag(raw)
            if tag not in _SIMPLE_TAGS:
                raise _NeedsWholeFile  # `<<` (merge keys) and `=`
            value = construct_plain(tag, raw)
            if len(_PLAIN) >= 4096:
                _PLAIN.clear()
            _PLAIN[raw] = value
        return value

    @staticmethod
    def _untagged(event: Any) -> Any:
        if event.anchor is not None or event.tag is not None:
            raise _NeedsWholeFile
        return event


class PieceDocument(Document):
    """A document put together from pieces: lines are looked up in the piece that holds the path."""

    def __init__(self, file: str, data: dict[str, Any], first_line: int, blocks: dict[str, tuple[Block, list[Parsed]]]):
        super().__init__(file, data)
        self.first_line = first_line
        self.blocks = blocks

    def line(self, path: Any) -> int:
        path = tuple(path)
        found = self.blocks.get(path[0]) if path else None
        if found is None:
            return self.first_line
        block, parsed = found
        if block.items is None:
            return block.line + parsed[0].line(path)
        index = path[1] if len(path) > 1 else None
        if not isinstance(index, int) or not 0 <= index < len(block.items):
            return block.line
        return block.item_line(index) + parsed[index].line((0,) + path[2:])


class PieceCache:
    """The pieces of one file, parsed and validated, by their text: what the next reload can reuse."""

    def __init__(self) -> None:
        self._parsed: dict[str | None, dict[str, Parsed]] = {}  # by array (None: whole blocks), then by text
        # what the last load did, for tests and benchmarks: read the file whole, or parse this many pieces
        self.last_was_whole = False
        self.last_parsed = 0
        self._environ: dict[str, str] | None = None  # every kept piece's reads hold in this environment

    def load(self, file: str, schema_name: str, environ: Environ | None = None) -> tuple[Document, list[Problem]]:
        """Parse and interpolate `file` (raising ConfigError on YAML or `${...}` problems) and return it with its
        schema problems, sorted by line."""
        text = read_text(file)
        self.last_parsed = 0
        try:
            return self._load_pieces(file, text, schema_name, Sources(environ, checked_against=self._environ))
        except _NeedsWholeFile:
            self.last_was_whole = True
            doc = parse_document(file, text, environ)
            if doc.data is None:
                doc.data = {}
            return doc, validate(doc, schema_name)

    def _load_pieces(self, file: str, text: str, schema_name: str, sources: Sources) -> tuple[Document, list[Problem]]:
        blocks = split_blocks(text, _itemized(schema_name))
        if blocks is None:
            raise _NeedsWholeFile
        kept: dict[str | None, dict[str, Parsed]] = {}  # what the next load may reuse
        fresh: list[tuple[str, int, Parsed]] = []  # items parsed now, to validate
        problems: list[tuple[Path_, str]] = []
        data: dict[str, Any] = {}
        where: dict[str, tuple[Block, list[Parsed]]] = {}
        for block in blocks:
            key = block.key
            known, keep = self._parsed.get(key, {}), kept.setdefault(key, {})
            if key is None:
                parsed = known.get(block.text)
                if parsed is None or not sources.hold(parsed.reads):
                    parsed = self._parse(block.text, False, (), sources, keep, problems)
                else:
                    keep[block.text] = parsed
                (key, value), = parsed.value.items()
                entry = (block, [parsed])
            else:
                assert block.items is not None
                # what a reload spends its time on, so in comprehensions: one pass finds the items to parse
                cached: list[Parsed | None] = [known.get(item) for item in block.items]
                stale = [i for i, p in enumerate(cached) if p is None or p.reads and (p.reads_files or sources.environ_changed)
                         and not sources.hold(p.reads)]
                keep.update(zip(block.items, cached))  # type: ignore[arg-type]  # the stale ones go again below
                for i in stale:
                    keep.pop(block.items[i], None)
                    cached[i] = self._parse(block.items[i], True, (key, i), sources, keep, problems)
                entries = cast("list[Parsed]", cached)  # none is None any more
                fresh.extend((key, i, entries[i]) for i in stale)
                value = [p.value for p in entries]
                entry = (block, entries)
            if key in where:
                raise _NeedsWholeFile  # a duplicate key: the whole file reports it
            where[key] = entry
            data[key] = value

        doc = PieceDocument(file, data, blocks[0].line, where)
        for pieces in kept.values():
            for parsed in pieces.values():
                if parsed.reads:
                    doc.reads.update(parsed.reads)
        doc.referenced_files = {name for kind, name in doc.reads if kind == "file"}
        if problems:
            raise ConfigError([doc.problem(path, message) for path, message in problems])

        found = schema_check(schema_name).problems(doc, {k: [] if where[k][0].key else v for k, v in data.items()})
        for key, i, parsed in fresh:
            item_problems = schema_check(schema_name, key).problems(doc, parsed.value, (key, i))
            if item_problems:
                found.extend(item_problems)
                kept[key].pop(parsed.text, None)  # only items known to be valid are kept
        found.sort(key=lambda p: p.line)
        self._parsed, self._environ = kept, sources.environ
        self.last_was_whole = False
        return doc, found

    def _parse(self, text: str, one_item: bool, path: Path_, sources: Sources, keep: dict[str, Parsed],
               problems: list[tuple[Path_, str]]) -> Parsed:
        self.last_parsed += 1
        interpolate = Interpolator(sources)
        parsed = Parsed(text, _EventBuilder(text, interpolate).document(path, one_item), interpolate.reads)
        if interpolate.problems:
            problems.extend(interpolate.problems)  # not kept: parsed again next time, to report them again
        else:
            keep[text] = parsed
        return parsed


@lru_cache(maxsize=None)
def _itemized(schema_name: str) -> frozenset[str]:
    """Top-level arrays whose validity is that of each item on its own: those can be cut into items."""
    properties = schema_validator(schema_name).schema.get("properties", {})
    return frozenset(key for key, prop in properties.items()
                     if prop.get("type") == "array" and "items" in prop and set(prop) <= {"type", "items", "description", "title"})
