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

import hashlib
import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from itertools import accumulate, compress, count
from operator import ne
from typing import Any, Callable, Sequence

import orjson

import yaml
from yaml.events import (
    DocumentEndEvent, DocumentStartEvent, MappingEndEvent, MappingStartEvent, ScalarEvent,
    SequenceEndEvent, SequenceStartEvent, StreamEndEvent, StreamStartEvent,
)

from .documents import (
    STR_TAG, ConfigError, Document, Environ, Interpolator, Path_, Problem, Reads, YamlLoader, construct_plain,
    Sources, is_finite, node_lines, parse_document, plain_tag, read_text, schema_check, schema_validator, validate,
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
    start: int = 0  # where it starts in the text with a "\n" put in front (as split_blocks reads it)
    _item_lines: list[int] | None = field(default=None, repr=False)
    _item_starts: list[int] | None = field(default=None, repr=False)

    def item_line(self, index: int) -> int:
        if self._item_lines is None:
            assert self.items is not None
            counts = (item.count("\n") for item in self.items[:-1])
            self._item_lines = list(accumulate(counts, initial=self.line + self.text.count("\n")))
        return self._item_lines[index]

    def item_starts(self) -> list[int]:
        """Where each item starts, and where the last one ends."""
        if self._item_starts is None:
            assert self.items is not None
            self._item_starts = list(accumulate(map(len, self.items), initial=self.start + len(self.text)))
        return self._item_starts

    def moved(self, chars: int, lines: int) -> Block:
        """The same block, further down the text (an edit above it)."""
        return Block(self.text, self.line + lines, self.key, self.items, self.start + chars)


@dataclass
class Parsed:
    """A piece's value, what its `${...}` read, and (once asked for) the line of each path inside it."""

    text: str
    value: Any
    reads: Reads
    _lines: dict[Path_, int] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.reads_files = any(kind == "file" for kind, _ in self.reads)  # read again on every load

    @cached_property
    def digest(self) -> bytes:
        return value_digest(self.value)

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


def resplit(blocks: list[Block], old: str, new: str, itemized: frozenset[str]) -> list[Block] | None:
    """The cut of `new`, from `blocks` (the cut of `old`) by cutting again only what the lines that differ touch:
    one block, or a few items of an array. Both texts with the "\n" in front that split_blocks puts there.
    None when the edit reaches over a block's edge: cut it all again."""
    if old == new:
        return blocks
    start, old_end, new_end = _changed_lines(old, new)
    window = new[start:new_end]
    if any(c in window for c in "\x85\u2028\u2029") or ("\t" in window and _TAB_INDENT.search(new, start - 1, new_end)):
        return None
    starts = [block.start for block in blocks]
    k = bisect_right(starts, start) - 1
    if k < 0:
        return None  # the lines in front of the first block
    opens = _BLOCK_START.search(new, start - 1, new_end)  # a line of the window that starts a block
    if start == starts[k] and old_end == start and opens is None and k > 0:
        k -= 1  # lines put in front of a block's first line: the end of the block before
    elif start == starts[k]:
        if old_end == start or opens is None or opens.end() != start or _BLOCK_START.search(new, start, new_end):
            return None  # a block put in front of this one, its first line edited into something else, or a block more
    elif opens is not None:
        return None
    block = blocks[k]
    end = starts[k + 1] if k + 1 < len(blocks) else len(old)
    if old_end > end:
        return None
    chars = new_end - old_end
    cut = _recut_items(block, new, start, old_end, chars) if block.items is not None else None
    if cut is None:
        cut = _block(new, block.start, end + chars, block.line, itemized)
    lines = window.count("\n") - old.count("\n", start, old_end)
    return blocks[:k] + [cut] + [later.moved(chars, lines) for later in blocks[k + 1:]]


def _recut_items(block: Block, new: str, start: int, old_end: int, chars: int) -> Block | None:
    """`block` with the items the edit touched cut again; None when the edit is not among its items alone."""
    assert block.items is not None
    starts = block.item_starts()
    if start < starts[0]:
        return None  # the header, or the lines between it and the first item
    i, j = bisect_right(starts, start) - 1, bisect_left(starts, old_end)  # items i..j-1 are replaced
    lo, hi = starts[i], starts[j] + chars
    middle: list[str] = []
    if lo < hi:
        first = block.items[0]
        dash = first[:len(first) - len(first.lstrip(" ")) + 1]
        if not new.startswith(dash, lo) or new[lo + len(dash):lo + len(dash) + 1] not in ("", " ", "\n"):
            return None  # what comes first is not an item of this array
        if _stray_line(len(dash) - 1).search(new, lo - 1, hi):
            return None
        parts = new[lo - 1:hi].split("\n" + dash)
        middle = [dash + part + "\n" for part in parts[1:-1]]
        middle.append(dash + parts[-1])
    items = block.items[:i] + middle + block.items[j:]
    return Block(block.text, block.line, block.key, items, block.start) if items else None


_CHUNK = 1 << 15


def _changed_lines(old: str, new: str) -> tuple[int, int, int]:
    """(start, old_end, new_end): the lines old[start:old_end] became new[start:new_end]; the rest is the same."""
    shorter = min(len(old), len(new))
    prefix = _common_prefix(old, new, shorter)
    suffix = _common_suffix(old, new, shorter - prefix)
    start = old.rfind("\n", 0, prefix) + 1
    old_end, new_end = len(old) - suffix, len(new) - suffix
    if old[old_end - 1] != "\n" or new[new_end - 1] != "\n":  # not both at a line's start: on to the next one
        newline = old.find("\n", old_end)
        step = (newline + 1 if newline >= 0 else len(old)) - old_end
        old_end, new_end = old_end + step, new_end + step
    return start, old_end, new_end


def _common_prefix(a: str, b: str, limit: int) -> int:
    """Length of the longest common prefix, at most `limit`: compared a chunk at a time, in C."""
    lo = 0
    while lo < limit:
        hi = min(lo + _CHUNK, limit)
        if a.startswith(b[lo:hi], lo):
            lo = hi
            continue
        while hi - lo > 1:  # a[lo:hi] differs somewhere
            mid = (lo + hi) // 2
            if a.startswith(b[lo:mid], lo):
                lo = mid
            else:
                hi = mid
        return lo
    return limit


def _common_suffix(a: str, b: str, limit: int) -> int:
    """Length of the longest common suffix, at most `limit`."""
    lo, la, lb = 0, len(a), len(b)
    while lo < limit:
        hi = min(lo + _CHUNK, limit)
        if a.endswith(b[lb - hi:lb - lo], 0, la - lo):
            lo = hi
            continue
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if a.endswith(b[lb - mid:lb - lo], 0, la - lo):
                lo = mid
            else:
                hi = mid
        return lo
    return limit


def unchanged_ends(old: Sequence[Any], new: Sequence[Any], differ: Callable[[Any, Any], bool] = ne) -> tuple[int, int]:
    """How many items at the start, and then at the end, `old` and `new` share (one pass in C each way)."""
    shorter = min(len(old), len(new))
    head = next(compress(count(), map(differ, old, new)), shorter)
    tail = next(compress(count(), map(differ, reversed(old), reversed(new))), shorter)
    return head, min(tail, shorter - head)


def value_digest(value: Any) -> bytes:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str)).digest()


def _block(text: str, start: int, end: int, line: int, itemized: frozenset[str]) -> Block:
    header = _ITEMS_HEADER.match(text, start, end)
    first = _FIRST_ITEM.match(text, header.end(), end) if header and header.group(1) in itemized else None
    if header is None or first is None:
        return Block(text[start:end], line, start=start)  # not an array cut into items (or `tokens:` with none: the schema will say)
    indent = len(first.group(1))
    newline = first.start(1) - 1  # the first item's line follows a newline, as the matches below start with one
    if _stray_line(indent).search(text, newline, end):
        raise _NeedsWholeFile
    # str.split rather than a regex: no object per item; every "\n" + indent + "-" starts an item (no stray line)
    dash = " " * indent + "-"
    parts = text[newline:end].split("\n" + dash)
    items = [dash + part + "\n" for part in parts[1:-1]]
    items.append(dash + parts[-1])
    return Block(text[start:first.start(1)], line, header.group(1), items, start)


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
                    value = self.interpolate.plain(event.value, value, path)
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
            if not is_finite(value):
                raise _NeedsWholeFile  # the whole file reports it, at its line
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

    def __init__(self, file: str, data: dict[str, Any], first_line: int, blocks: dict[str, tuple[Block, list[Parsed]]],
                 item_digests: dict[str, list[bytes]]):
        super().__init__(file, data)
        self.first_line = first_line
        self.blocks = blocks
        self.item_digests = item_digests  # each array's items' value_digest, in order

    @property  # type: ignore[override]
    def reads(self) -> Reads:
        """What every piece's `${...}` read; put together only when asked (load_config asks for files alone)."""
        if self._reads is None:
            self._reads = {}
            for _, pieces in self.blocks.values():
                for parsed in pieces:
                    if parsed.reads:
                        self._reads.update(parsed.reads)
        return self._reads

    @reads.setter
    def reads(self, value: Reads) -> None:
        self._reads = value or None

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


@dataclass
class _Array:
    """An array's items as a load left them, by position: the next load keeps every item at either end that it
    still has, and looks up the rest by text."""

    texts: list[str]
    parsed: list[Parsed]
    values: list[Any]
    digests: list[bytes]
    environ: dict[str, str]  # what every item's `${VAR}` reads were checked against
    readers: list[int]  # the items that read a `${file:...}`: checked on every load
    invalid: list[int]  # the items that did not validate: parsed and checked again on every load


def _moved(positions: list[int], head: int, tail_from: int, shift: int) -> list[int]:
    """Positions kept at either end of an array whose middle changed: the tail moves by `shift`."""
    return [p for p in positions if p < head] + [p + shift for p in positions if p >= tail_from]


class PieceCache:
    """The pieces of one file, parsed and validated, by their text: what the next reload can reuse."""

    def __init__(self) -> None:
        self._blocks: dict[str, Parsed] = {}  # the blocks that are not cut into items, by text
        self._environ: dict[str, str] | None = None  # what their reads hold in
        self._arrays: dict[str, _Array] = {}
        self._cut: tuple[str, list[Block]] | None = None  # the last text cut, with "\n" in front, and its blocks
        # what the last load did, for tests and benchmarks: read the file whole, or parse this many pieces
        self.last_was_whole = False
        self.last_parsed = 0

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

    def _split(self, text: str, itemized: frozenset[str]) -> list[Block] | None:
        """The blocks of `text`: from the last text's blocks when the edit stays inside one of them."""
        if self._cut is not None:
            old, old_blocks = self._cut
            new = "\n" + text
            blocks = resplit(old_blocks, old, new, itemized)
            if blocks is not None:
                self._cut = (new, blocks)
                return blocks
        blocks = split_blocks(text, itemized)
        self._cut = ("\n" + text, blocks) if blocks else None
        return blocks

    def _load_pieces(self, file: str, text: str, schema_name: str, sources: Sources) -> tuple[Document, list[Problem]]:
        try:
            blocks = self._split(text, _itemized(schema_name))
        except _NeedsWholeFile:
            self._cut = None
            raise
        if blocks is None:
            raise _NeedsWholeFile
        kept: dict[str, Parsed] = {}  # the whole blocks the next load may reuse
        arrays: dict[str, tuple[_Array, list[int]]] = {}  # each array as this load read it, and the items parsed now
        problems: list[tuple[Path_, str]] = []
        data: dict[str, Any] = {}
        where: dict[str, tuple[Block, list[Parsed]]] = {}
        for block in blocks:
            key = block.key
            if key is None:
                parsed = self._blocks.get(block.text)
                if parsed is None or not sources.hold(parsed.reads):
                    parsed = self._parse(block.text, False, (), sources, problems)
                kept[block.text] = parsed
                (key, value), = parsed.value.items()
                entry = (block, [parsed])
            else:
                assert block.items is not None
                array, fresh = self._array(key, block.items, sources, problems)
                arrays[key] = (array, fresh)
                value = array.values
                entry = (block, array.parsed)
            if key in where:
                raise _NeedsWholeFile  # a duplicate key: the whole file reports it
            where[key] = entry
            data[key] = value

        doc = PieceDocument(file, data, blocks[0].line, where, {key: array.digests for key, (array, _) in arrays.items()})
        doc.referenced_files = {name for parsed in kept.values() for kind, name in parsed.reads if kind == "file"}
        for array, _ in arrays.values():
            doc.referenced_files.update(name for i in array.readers for kind, name in array.parsed[i].reads if kind == "file")
        if problems:
            raise ConfigError([doc.problem(path, message) for path, message in problems])

        found = schema_check(schema_name).problems(doc, {k: [] if where[k][0].key else v for k, v in data.items()})
        for key, (array, fresh) in arrays.items():
            check = schema_check(schema_name, key)
            for i in fresh:
                item_problems = check.problems(doc, array.values[i], (key, i))
                if item_problems:
                    found.extend(item_problems)
                    array.invalid.append(i)  # only items known to be valid are kept
            self._arrays[key] = array
        for key in self._arrays.keys() - arrays.keys():
            del self._arrays[key]
        found.sort(key=lambda p: p.line)
        self._blocks, self._environ = kept, sources.environ
        self.last_was_whole = False
        return doc, found

    def _array(self, key: str, texts: list[str], sources: Sources, problems: list[tuple[Path_, str]]) -> tuple[_Array, list[int]]:
        """The items of array `key`: those at either end that the last load had too are kept as they are (what a
        reload spends its time on, so in slices and C loops); the middle is looked up by text, or parsed."""
        last = self._arrays.get(key)
        if last is None:
            last = _Array([], [], [], [], sources.environ, [], [])
        head, tail = unchanged_ends(last.texts, texts)
        old_middle, new_middle = slice(head, len(last.texts) - tail), slice(head, len(texts) - tail)
        shift = len(texts) - len(last.texts)
        parsed: list[Parsed | None] = last.parsed[:head] + [None] * (len(texts) - head - tail) + last.parsed[old_middle.stop:]
        redo = list(range(new_middle.start, new_middle.stop))
        if redo and old_middle.start < old_middle.stop:  # moved items, say: found by text
            invalid = set(last.invalid)
            known = {text: last.parsed[i] for i, text in enumerate(last.texts[old_middle], head) if i not in invalid}
            for i in redo:
                parsed[i] = known.get(texts[i])
        redo.extend(_moved(last.invalid, head, old_middle.stop, shift))
        readers = _moved(last.readers, head, old_middle.stop, shift)
        environ_changed = sources.environ != last.environ
        if environ_changed:
            readers = [i for i, p in enumerate(parsed) if p is not None and p.reads]
        redo.extend(i for i in readers if not sources.hold(parsed[i].reads))  # type: ignore[union-attr]
        fresh = []  # to validate: parsed now, or kept although it did not validate last time
        for i in sorted(set(redo)):
            p = parsed[i]
            if p is None or p.reads and not sources.hold(p.reads):
                parsed[i] = self._parse(texts[i], True, (key, i), sources, problems)
                fresh.append(i)
            elif not new_middle.start <= i < new_middle.stop:
                fresh.append(i)
        if fresh or shift or head + tail != len(texts):
            entries: list[Parsed] = parsed  # type: ignore[assignment]  # none is None any more
            values = last.values[:head] + [p.value for p in entries[new_middle]] + last.values[old_middle.stop:]
            digests = last.digests[:head] + [p.digest for p in entries[new_middle]] + last.digests[old_middle.stop:]
            for i in fresh:
                values[i], digests[i] = entries[i].value, entries[i].digest
        else:
            entries, values, digests = last.parsed, last.values, last.digests
        readers = sorted({i for i in readers if entries[i].reads_files} | {i for i in fresh if entries[i].reads_files}
                         | {i for i in range(new_middle.start, new_middle.stop) if entries[i].reads_files})
        return _Array(texts, entries, values, digests, sources.environ, readers, []), fresh

    def _parse(self, text: str, one_item: bool, path: Path_, sources: Sources, problems: list[tuple[Path_, str]]) -> Parsed:
        self.last_parsed += 1
        interpolate = Interpolator(sources)
        parsed = Parsed(text, _EventBuilder(text, interpolate).document(path, one_item), interpolate.reads)
        problems.extend(interpolate.problems)
        return parsed


@lru_cache(maxsize=None)
def _itemized(schema_name: str) -> frozenset[str]:
    """Top-level arrays whose validity is that of each item on its own: those can be cut into items."""
    properties = schema_validator(schema_name).schema.get("properties", {})
    return frozenset(key for key, prop in properties.items()
                     if prop.get("type") == "array" and "items" in prop and set(prop) <= {"type", "items", "description", "title"})
