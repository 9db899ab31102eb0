"""Reading config.yaml piece by piece gives what reading it whole gives: data, lines, problems, version."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import PROVIDERS_DIR
from oneapi import incremental
from oneapi.config import ConfigCache, load_config
from oneapi.documents import ConfigError, parse_document, read_text, schema_check, schema_validator, validate
from oneapi.incremental import PieceCache
from oneapi.snapshot import build_snapshot

SCHEMA = "config.schema.json"

CONFIG = f"""\
# the gateway's config
listen: 127.0.0.1:${{PORT:-4000}}
providers_dir: {PROVIDERS_DIR}
groups:
  default: {{ratio: 1.0}}
  vip: {{ratio: 2}}
channels:
  - name: a
    provider: openai
    keys: ["${{UPSTREAM_KEY:-sk-up}}"]
    models: [gpt-4o-mini, gpt-4o]
  # a comment between items
  - name: b
    provider: openai
    base_url: http://127.0.0.1:1
    keys:
      - sk-b
    models:
      - gpt-4o-mini
    groups: [vip]

  -
    name: c
    provider: deepseek
    keys: [sk-c]
    models: [deepseek-chat]
    options:
      note: |
        a block scalar
        over two lines
tokens:
- name: t1
  key: ${{TOKEN_1:-sk-client-1}}
  expires: 2099-01-01T00:00:00Z
- name: t2
  key_sha256: {hashlib.sha256(b"sk-client-2").hexdigest()}
  subnets: [10.0.0.0/8]
  rpm: 10
- {{name: t3, key: sk-client-3, models: [gpt-4o]}}
"""


def whole(path: Path, environ: dict[str, str]) -> tuple[Any, list[str]]:
    """What reading the file whole (the path every file took before pieces) gives."""
    doc = parse_document(str(path), read_text(str(path)), environ)
    return doc, [str(p) for p in validate(doc, SCHEMA)]


def assert_same_as_whole(cache: PieceCache, path: Path, environ: dict[str, str], *, cut: bool = True) -> None:
    doc, problems = cache.load(str(path), SCHEMA, environ)
    assert cache.last_was_whole is not cut
    expected, expected_problems = whole(path, environ)
    assert doc.data == expected.data
    assert [str(p) for p in problems] == expected_problems
    assert doc.referenced_files == expected.referenced_files
    for where in expected.lines:
        assert doc.line(where) == expected.line(where), where
        assert doc.line(where + ("no-such-key", 7)) == expected.line(where + ("no-such-key", 7)), where


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    return path


def test_pieces_give_the_same_data_lines_and_files_as_the_whole_file(path: Path) -> None:
    assert_same_as_whole(PieceCache(), path, {"UPSTREAM_KEY": "sk-env"})


@pytest.mark.parametrize(
    ("old", "new", "parsed"),
    [
        ("    models: [gpt-4o-mini, gpt-4o]\n", "    models: [gpt-4o]\n", 1),  # change a channel
        ("  # a comment between items\n", "  - {name: z, provider: openai, keys: [k], models: [m]}\n", 2),  # add one (and a's comment went)
        ("  - name: a\n    provider: openai\n    keys: [\"${UPSTREAM_KEY:-sk-up}\"]\n    models: [gpt-4o-mini, gpt-4o]\n", "", 0),  # remove
        ("  rpm: 10\n", "  rpm: 11\n", 1),  # change a token
        ("- {name: t3", "- name: t0\n  key: sk-client-0\n- {name: t3", 1),  # add a token
        ("- name: t1\n  key: ${TOKEN_1:-sk-client-1}\n  expires: 2099-01-01T00:00:00Z\n", "", 0),  # remove a token
        ("  vip: {ratio: 2}\n", "  vip: {ratio: 3}\n", 1),  # a block that is not cut
    ],
)
def test_an_edit_parses_only_what_changed(path: Path, old: str, new: str, parsed: int) -> None:
    cache = PieceCache()
    cache.load(str(path), SCHEMA, {})
    assert CONFIG.count(old) == 1
    path.write_text(CONFIG.replace(old, new))

    assert_same_as_whole(cache, path, {})
    assert cache.last_parsed == parsed


def test_an_environment_variable_that_changed_is_read_again(path: Path) -> None:
    cache = ConfigCache()
    first, _ = load_config(path, {"TOKEN_1": "sk-one"}, cache)
    second, _ = load_config(path, {"TOKEN_1": "sk-rotated"}, cache)
    assert second.tokens[0].key_sha256 == hashlib.sha256(b"sk-rotated").hexdigest() != first.tokens[0].key_sha256
    assert cache.pieces.last_parsed == 1
    assert second.tokens[1] is first.tokens[1]  # built once, kept while its item is unchanged


def test_a_secret_file_that_changed_is_never_served_stale(path: Path, tmp_path: Path) -> None:
    secret = tmp_path / "admin"
    secret.write_text("first\n")
    path.write_text(CONFIG + f"admin_key: ${{file:{secret}}}\n")
    cache = ConfigCache()
    assert load_config(path, {}, cache)[0].admin_key == "first"
    secret.write_text("second\n")
    config, doc = load_config(path, {}, cache)
    assert config.admin_key == "second" and str(secret) in config.referenced_files

    secret.unlink()
    with pytest.raises(ConfigError) as caught:
        load_config(path, {}, cache)
    assert [str(p) for p in caught.value.problems] == [f"{path}:{CONFIG.count(chr(10)) + 1}: cannot read ${{file:{secret}}}: No such file or directory"]


@pytest.mark.parametrize(
    "text",
    [
        "base: &base {provider: openai, keys: [k], models: [m]}\nchannels:\n  - <<: *base\n    name: a\n",  # anchors, merge keys
        "tokens:\n  - <<: {name: a}\n    key: k\n",  # a merge key with no alias
        "channels:\n  - &c {name: a, provider: openai}\n  - *c\n",  # an alias across items
        "channels: [\n  {name: a, provider: openai}\n]\n",  # flow style over several lines
        "channels:\n\t- name: a\n",  # a tab
        "%YAML 1.1\n---\nlisten: 0.0.0.0:1\n",  # a directive
        "listen: 0.0.0.0:1\n---\nlisten: 0.0.0.0:2\n",  # two documents
        "listen: !!str 0.0.0.0:1\n",  # a tag
        "tokens:\n  - name: a\n    key: \"one\n  two\"\n",  # a quoted string across the cut
        "tokens:\n  - name: a\n key: k\n",  # an item line less indented than its dash
        "listen: 0.0.0.0:1\nlisten: 0.0.0.0:2\n",  # a duplicate top-level key
        "tokens:\n  - name: a\n    name: b\n",  # a duplicate key inside an item
        "- a\n- b\n",  # not a mapping at all
        "channels:\n  - name: a\n    provider: [unclosed\n",  # invalid YAML
    ],
)
def test_text_that_does_not_cut_cleanly_is_read_whole(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    cache = PieceCache()
    try:
        whole(path, {})
    except ConfigError as exc:
        with pytest.raises(ConfigError) as caught:
            cache.load(str(path), SCHEMA, {})
        assert [str(p) for p in caught.value.problems] == [str(p) for p in exc.problems]
    else:
        assert_same_as_whole(cache, path, {}, cut=False)


@pytest.mark.parametrize(
    "text",
    [
        "---\n# leading comments\n\nlisten: 0.0.0.0:1\n",
        "tokens:\n  # before the first item\n  - name: a\n    key: k\n\n# between\n  - name: b\n    key: j\nlisten: 0.0.0.0:1\n",
        "tokens: []\nchannels:\n",
        "tokens:\n- name: a\n  key: k\n- name: b\n  key: |\n    multi\n    line\n",
        "tokens:\n  - \"name\": a\n    'key': k\n",
        "channels:\n  - name: a\n    provider: openai\n    enabled: yes\n    priority: 0x10\n    weight: 1_000\n    timeout: .5\n    options: {1: one, true: yes}\n",
    ],
)
def test_yaml_that_cuts_cleanly_reads_the_same(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    cache = PieceCache()
    assert_same_as_whole(cache, path, {})
    assert_same_as_whole(cache, path, {})  # and again from the cache
    assert cache.last_parsed == 0


BROKEN = [
    ("    models: [gpt-4o-mini, gpt-4o]\n", "    modles: [gpt-4o-mini, gpt-4o]\n    priority: high\n"),
    ("  rpm: 10\n", "  rpm: 0\n  key: both\n"),
    ("- {name: t3, key: sk-client-3, models: [gpt-4o]}\n", "- {name: t3, key: sk-client-3, models: [gpt-4o, gpt-4o]}\n- name: t1\n  key: sk-client-1\n"),
    ("  expires: 2099-01-01T00:00:00Z\n", "  expires: 2099-13-01T00:00:00Z\n"),
    ("  key: ${TOKEN_1:-sk-client-1}\n", "  key: ${TOKEN_1}\n"),
    ("    groups: [vip]\n", "    groups: [gold]\n"),
    ("  rpm: 10\n", "  rpm: 10\n  group: gold\n"),
    ("  subnets: [10.0.0.0/8]\n", "  subnets: [10.0.0.0/88]\n"),
    ("listen: 127.0.0.1:${PORT:-4000}\n", "listen: 127.0.0.1:${PORT:-4000}\nlistn: 1\n"),
    ("    provider: deepseek\n", "    provider: nosuchvendor\n"),
    ("    keys: [sk-c]\n", "    keys: [sk-c]\n   bad: indent\n"),
]


@pytest.mark.parametrize(("old", "new"), BROKEN)
def test_problems_are_reported_as_reading_the_whole_file_reports_them(path: Path, monkeypatch: pytest.MonkeyPatch, old: str, new: str) -> None:
    good = build_snapshot(path, {})  # the pieces that did not change will come from its cache
    assert CONFIG.count(old) == 1
    path.write_text(CONFIG.replace(old, new))
    with pytest.raises(ConfigError) as cut:
        build_snapshot(path, {}, good)

    monkeypatch.setattr(incremental, "split_blocks", lambda text, itemized: None)  # every file read whole, as before
    with pytest.raises(ConfigError) as read_whole:
        build_snapshot(path, {})
    assert [str(p) for p in cut.value.problems] == [str(p) for p in read_whole.value.problems]

    path.write_text(CONFIG)  # fixed: served from the cache again
    build_snapshot(path, {}, good)
    assert good.cache.config.pieces.last_parsed <= 2


def test_warnings_version_and_objects_match_a_whole_read(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path.write_text(CONFIG.replace("key: ${TOKEN_1:-sk-client-1}", "key: ${UNSET:-}"))
    first = build_snapshot(path, {})
    again = build_snapshot(path, {}, first)
    monkeypatch.setattr(incremental, "split_blocks", lambda text, itemized: None)
    read_whole = build_snapshot(path, {})

    assert first.version == again.version == read_whole.version
    assert [str(w) for w in again.warnings] == [str(w) for w in read_whole.warnings] and again.warnings
    assert again.config.channels == read_whole.config.channels and again.config.tokens == read_whole.config.tokens
    assert [c.line for c in again.config.channels] == [c.line for c in read_whole.config.channels] == [8, 13, 23]
    assert again.channels["a"] is first.channels["a"]  # unchanged channels keep their objects (and key rotation)


def test_a_changed_channel_is_rebuilt_and_the_others_kept(path: Path) -> None:
    first = build_snapshot(path, {})
    path.write_text(CONFIG.replace("  - name: a\n", "  - name: inserted\n    provider: openai\n    keys: [k]\n    models: [m]\n  - name: a\n"))
    second = build_snapshot(path, {}, first)
    assert second.channels["b"] is not first.channels["b"] and second.channels["b"].config.line == first.channels["b"].config.line + 4
    path.write_text(CONFIG.replace("rpm: 10", "rpm: 12"))
    third = build_snapshot(path, {}, second)
    assert third.channels["b"].config.line == first.channels["b"].config.line
    fourth = build_snapshot(path, {}, third)
    assert all(fourth.channels[name] is third.channels[name] for name in "abc")
    assert fourth.providers is third.providers


def test_a_provider_file_is_compiled_again_only_when_its_text_changes(tmp_path: Path) -> None:
    providers = tmp_path / "providers.d"
    providers.mkdir()
    (providers / "openai.yaml").write_text((PROVIDERS_DIR / "openai.yaml").read_text())
    path = tmp_path / "config.yaml"
    path.write_text("providers_dir: providers.d\nchannels:\n  - {name: a, provider: openai, keys: [k], models: [m]}\n")
    first = build_snapshot(path, {})
    again = build_snapshot(path, {}, first)
    assert again.providers["openai"] is first.providers["openai"]
    (providers / "openai.yaml").write_text((PROVIDERS_DIR / "openai.yaml").read_text().replace("api_prefix: /v1", "api_prefix: /v2"))
    changed = build_snapshot(path, {}, again)
    assert changed.providers["openai"].api_prefix == "/v2" and changed.version != first.version


# --- the compiled validator never accepts what jsonschema rejects --------------------------------------

_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(-2, 2, allow_nan=False), st.sampled_from(
    ["", "a", "ok-name", "bad name", "2099-01-01T00:00:00Z", "2099-13-01T00:00:00Z", "http://x", "daily", "x" * 64,
     "a" * 64 + "\n", "0" * 64]), st.lists(st.sampled_from(["m", "m", "", "n"]), max_size=3))
_token_keys = ["name", "key", "key_sha256", "group", "models", "budget", "budget_period", "expires", "subnets", "rpm", "tpm",
               "enabled", "nmae"]
_channel_keys = ["name", "provider", "base_url", "keys", "models", "model_map", "groups", "priority", "weight", "timeout",
                 "headers", "options", "enabled", "max_concurrency", "modles"]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["tokens", "channels"]), st.data())
def test_compiled_validator_is_never_more_lenient_than_jsonschema(array: str, data: st.DataObject) -> None:
    keys = _token_keys if array == "tokens" else _channel_keys
    item = data.draw(st.dictionaries(st.sampled_from(keys), _values, max_size=6))
    check = schema_check(SCHEMA, array)
    assert check.accepts is not None
    try:
        check.accepts(item)
    except Exception:
        return
    errors = [e.message for e in schema_validator(SCHEMA).evolve(schema=check.explainer.schema).iter_errors(item)]
    assert errors == [], (item, errors)


def test_both_schemas_compile_and_agree_on_every_shipped_file() -> None:
    for name in ("config.schema.json", "provider.schema.json"):
        assert schema_check(name).accepts is not None
    for file in sorted(PROVIDERS_DIR.glob("*.yaml")):
        data = yaml.safe_load(file.read_text())
        schema_check("provider.schema.json").accepts(data)


# --- the numbers: a one-token edit of a 10,000-token config ----------------------------------

def test_one_token_edit_of_a_10000_token_config_reloads_in_well_under_a_second(tmp_path: Path) -> None:
    config = {"providers_dir": str(PROVIDERS_DIR),
              "channels": [{"name": f"c{i}", "provider": "openai", "base_url": "http://127.0.0.1:1", "keys": [f"sk-{i}"],
                            "models": [f"m{i % 50}", "gpt-4o-mini"]} for i in range(1000)],
              "tokens": [{"name": f"t{i}", "key_sha256": hashlib.sha256(str(i).encode()).hexdigest(), "rpm": 100} for i in range(10000)]}
    path = tmp_path / "config.yaml"
    text = yaml.safe_dump(config)
    path.write_text(text)
    first = build_snapshot(path, {})
    path.write_text(text.replace("name: t5000\n  rpm: 100", "name: t5000\n  rpm: 7"))

    started = time.perf_counter()
    second = build_snapshot(path, {}, first)
    elapsed = time.perf_counter() - started

    pieces = second.cache.config.pieces
    assert pieces.last_parsed == 1 and not pieces.last_was_whole
    assert second.version != first.version and len(second.tokens) == 10000
    assert elapsed < 1.0, f"{elapsed:.3f} s"


# --- generated files: pieces agree with the whole-file reader on data, problems, lines, or the error ------

# "{i}" is the indentation of a continuation line: deeper than the key the value belongs to
_USUAL = ["a", "openai", "'quoted: #x'", '"dq \\" x"', "${TOKEN_1:-sk-d}", "100", "0x10", "yes", "1.5", "[m, n]", "[x,\n{i}y]",
          "|\n{i}block\n{i}text", "2099-01-01T00:00:00Z", "a # comment", "'two\n{i}lines'", ""]
_ODD = ["${UNSET}", "~", "&anc v", "*anc", "!!str 5", "<<", "{ratio: 2}", "'unclosed"]
_SCALARS = _USUAL * 6 + _ODD  # mostly what configs hold, sometimes what sends a file to the whole-file reader
_FIELDS = ["name", "key", "provider", "models", "rpm", "group", "expires", "keys", "weight", "nmae"]


@st.composite
def _item(draw: st.DrawFn, indent: int) -> str:
    pad = " " * indent
    fields = draw(st.lists(st.tuples(st.sampled_from(_FIELDS), st.sampled_from(_SCALARS)), min_size=1, max_size=4,
                           unique_by=lambda field: field[0] if draw(st.integers(0, 9)) else None))
    style = draw(st.sampled_from(["same-line", "next-line", "flow"]))
    if style == "flow":
        flat = [(k, v) for k, v in fields if not any(c in v for c in "\n#|{[")]
        return f"{pad}- {{{', '.join(f'{k}: {v}' for k, v in flat)}}}\n"
    inner = pad + "  "
    lines = [f"{k}: {v}".replace("{i}", inner + "  ") for k, v in fields]
    head = f"{pad}- {lines[0]}\n" if style == "same-line" else f"{pad}-\n{inner}{lines[0]}\n"
    rest = "".join(f"{inner}{line}\n" for line in lines[1:])
    extra = draw(st.sampled_from(["", "\n", f"{inner}# note\n", "# col 0\n", f"{pad}  \n"]))
    return head + rest + extra


@st.composite
def _config_text(draw: st.DrawFn) -> str:
    blocks = []
    keys = draw(st.lists(st.sampled_from(["listen", "tokens", "channels", "groups", "extra"]), min_size=1, max_size=4, unique=True))
    for key in keys + draw(st.sampled_from([[]] * 9 + [["tokens"]])):  # now and then a key twice
        if key in ("tokens", "channels"):
            indent = draw(st.sampled_from([0, 2, 4]))
            items = draw(st.lists(_item(indent), max_size=4))
            blocks.append(f"{key}:{draw(st.sampled_from(['', '  # c']))}\n" + "".join(items))
        else:
            blocks.append(f"{key}: {draw(st.sampled_from(_SCALARS))}\n".replace("{i}", "  "))
    prefix = draw(st.sampled_from(["", "# top\n", "---\n", "\n\n"]))
    return prefix + "".join(blocks) + draw(st.sampled_from(["", "\n", "# end\n"] * 5 + ["\t\n"]))


def _outcome(load: Any) -> Any:
    try:
        doc, problems = load()
    except ConfigError as exc:
        return ("refused", [str(p) for p in exc.problems])
    except Exception as exc:  # the whole-file reader's own exceptions (a constructor error, say) must come out the same
        return ("raised", type(exc).__name__)
    lines = {where: doc.line(where) for where in getattr(doc, "lines", {})}
    return ("loaded", doc.data, [str(p) for p in problems], doc.referenced_files, lines)


@settings(max_examples=300, deadline=None)
@given(_config_text(), _config_text())
def test_generated_files_read_the_same_as_whole_and_after_an_edit(tmp_path_factory: pytest.TempPathFactory, first: str, second: str) -> None:
    path = tmp_path_factory.mktemp("gen") / "config.yaml"
    cache = PieceCache()
    environ = {"TOKEN_1": "sk-one"}
    for text in (first, second, first):  # the second and third loads start from the previous one's cache
        path.write_text(text)
        expected = _outcome(lambda: (lambda d: (d, validate(d, SCHEMA)))(parse_document(str(path), text, environ)))
        got = _outcome(lambda: cache.load(str(path), SCHEMA, environ))
        if expected[0] == "loaded" and got[0] == "loaded":
            whole_doc = parse_document(str(path), text, environ)
            piece_doc, _ = cache.load(str(path), SCHEMA, environ)
            got = got[:4] + ({where: piece_doc.line(where) for where in whole_doc.lines},)
        if expected[0] == "loaded" and expected[1] is None:
            continue  # an empty file: load_config reads it as {}
        assert got == expected, text


# --- a reload that reuses the last build serves exactly what a cold build of the same files serves ------------

def served(snapshot: Any) -> Any:
    """Everything a request or an operator can see of a snapshot, in plain data."""
    routes = snapshot.routes
    tiers = {route: [(t.priority, [c.name for c in t.channels], t.cumulative) for t in found]
             for route, found in routes._tiers.items()}
    return {
        "config": snapshot.config,  # ChannelConfig compares without its line: the lines are next
        "lines": [c.line for c in snapshot.config.channels],
        "warnings": [str(w) for w in snapshot.warnings],
        "version": snapshot.version,
        "tokens": dict(snapshot.tokens._by_digest),
        "channels": {name: (c.config, c.provider, c.endpoint, [k.headers for k in c.keys]) for name, c in snapshot.channels.items()},
        "models": {g: {m: c.name for m, c in models.items()} for g, models in routes.models_by_group.items()},
        "tiers": tiers,
    }


def _model(tokens: int = 24, channels: int = 8) -> dict[str, Any]:
    return {
        "groups": {"default": {"ratio": 1.0}, "vip": {"ratio": 2}},
        "pricing": {"models": {"m0": {"input": 1, "output": 2}}},
        "channels": [{"name": f"c{i}", "provider": ["openai", "deepseek"][i % 2], "base_url": "http://127.0.0.1:1",
                      "keys": [f"sk-{i}"], "models": [f"m{i % 3}", "shared"], "groups": [["default"], ["default", "vip"]][i % 2],
                      "priority": i % 3, "weight": 1 + i % 2} for i in range(channels)],
        "tokens": [{"name": f"t{i}", "key": f"${{TOKEN_{i}:-sk-client-{i}}}", "group": ["default", "vip"][i % 2],
                    **({"subnets": ["10.0.0.0/8"]} if i % 5 == 0 else {})} for i in range(tokens)],
    }


_EDITS = ["token changed", "token added", "token removed", "channel changed", "channel added", "channel removed",
          "item moved", "reversed", "env changed", "secret changed", "provider changed", "group ratio changed",
          "comment added", "broken group", "broken schema", "nothing"]


def _apply(edit: str, n: int, model: dict[str, Any], environ: dict[str, str], files: dict[str, Path]) -> None:
    tokens, channels = model["tokens"], model["channels"]
    if edit == "token changed" and tokens:
        tokens[n % len(tokens)]["rpm"] = n
    elif edit == "token added":
        tokens.insert(n % (len(tokens) + 1), {"name": f"new{n}-{len(tokens)}", "key": f"sk-new-{n}-{len(tokens)}"})
    elif edit == "token removed" and tokens:
        del tokens[n % len(tokens)]
    elif edit == "channel changed" and channels:
        channel = channels[n % len(channels)]
        channel["models"] = [f"m{n % 4}"] + (["shared"] if n % 2 else [])
        channel["priority"] = n % 3
    elif edit == "channel added":
        channels.insert(n % (len(channels) + 1), {"name": f"added{n}-{len(channels)}", "provider": "deepseek", "keys": ["sk-a"],
                                                  "models": ["shared", f"m{n % 5}"], "groups": ["vip"]})
    elif edit == "channel removed" and channels:
        del channels[n % len(channels)]
    elif edit == "item moved":
        items = tokens if n % 2 else channels
        if items:
            items.append(items.pop(n % len(items)))
    elif edit == "reversed":
        (tokens if n % 2 else channels).reverse()
    elif edit == "env changed":
        environ[f"TOKEN_{n % 30}"] = f"sk-env-{n}"
    elif edit == "secret changed":
        files["secret"].write_text(f"admin-{n}\n")
    elif edit == "provider changed":
        text = files["deepseek"].read_text()
        files["deepseek"].write_text(text.replace("api_prefix: /v1", "api_prefix: /v2") if "/v1" in text else text.replace("/v2", "/v1"))
    elif edit == "group ratio changed":
        model["groups"]["vip"]["ratio"] = 2 + n % 3
    elif edit == "comment added":
        model["comment"] = model.get("comment", 0) + 1
    elif edit == "broken group" and tokens:
        tokens[n % len(tokens)]["group"] = "gold"
    elif edit == "broken schema" and tokens:
        tokens[n % len(tokens)]["rmp"] = 1


def _text(model: dict[str, Any], files: dict[str, Path]) -> str:
    data = {key: value for key, value in model.items() if key != "comment"}
    data["providers_dir"] = str(files["deepseek"].parent)
    data["admin_key"] = f"${{file:{files['secret']}}}"
    text = yaml.safe_dump(data)
    return text.replace("\ntokens:\n", "\n" + "# a note\n" * model.get("comment", 0) + "tokens:\n")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_EDITS), st.integers(0, 50)), min_size=1, max_size=8))
def test_a_reload_after_any_edits_serves_what_a_cold_build_serves(tmp_path_factory: pytest.TempPathFactory,
                                                                  edits: list[tuple[str, int]]) -> None:
    import copy
    tmp = tmp_path_factory.mktemp("reuse")
    providers = tmp / "providers.d"
    providers.mkdir()
    for name in ("openai", "deepseek"):
        (providers / f"{name}.yaml").write_text((PROVIDERS_DIR / f"{name}.yaml").read_text())
    files = {"deepseek": providers / "deepseek.yaml", "secret": tmp / "admin"}
    files["secret"].write_text("admin-0\n")
    path = tmp / "config.yaml"
    model, environ = _model(), {"TOKEN_1": "sk-env"}
    path.write_text(_text(model, files))
    live = build_snapshot(path, environ)
    for edit, n in edits:
        edited = copy.deepcopy(model)
        _apply(edit, n, edited, environ, files)
        path.write_text(_text(edited, files))
        try:
            cold = build_snapshot(path, environ)
        except ConfigError as exc:
            with pytest.raises(ConfigError) as refused:
                build_snapshot(path, environ, live)
            assert [str(p) for p in refused.value.problems] == [str(p) for p in exc.problems], edit
            path.write_text(_text(model, files))  # the operator puts it back; the live snapshot kept serving
            cold = build_snapshot(path, environ)
        else:
            model = edited
        live = build_snapshot(path, environ, live)
        assert served(live) == served(cold), (edit, n)


def test_a_token_edit_keeps_the_channels_and_routes_and_a_channel_edit_keeps_the_tokens(path: Path) -> None:
    first = build_snapshot(path, {})
    path.write_text(CONFIG.replace("  rpm: 10\n", "  rpm: 11\n"))
    token_edit = build_snapshot(path, {}, first)
    assert token_edit.channels is first.channels and token_edit.routes is first.routes
    assert token_edit.config.tokens[0] is first.config.tokens[0] and token_edit.config.tokens[1] is not first.config.tokens[1]

    path.write_text(CONFIG.replace("  rpm: 10\n", "  rpm: 11\n").replace("      - gpt-4o-mini\n    groups: [vip]", "      - gpt-4o\n    groups: [vip]"))
    channel_edit = build_snapshot(path, {}, token_edit)
    assert channel_edit.tokens is token_edit.tokens and channel_edit.config.tokens == token_edit.config.tokens
    assert channel_edit.channels["a"] is token_edit.channels["a"] and channel_edit.channels["b"] is not token_edit.channels["b"]
    assert channel_edit.routes.knows("vip", "gpt-4o") and not channel_edit.routes.knows("vip", "gpt-4o-mini")
    assert served(channel_edit) == served(build_snapshot(path, {}))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("  rpm: 10\n", "  rpm: 11\n"),  # inside an item
        ("- {name: t3", "- name: t0\n  key: sk-client-0\n- {name: t3"),  # an item put in
        ("  - name: a\n    provider: openai\n", "  - name: a2\n    provider: openai\n"),  # an item's first line
        ("  vip: {ratio: 2}\n", "  vip: {ratio: 3}\n"),  # a block that is not cut
        ("tokens:\n", "tokens:   # cut at its items\n"),  # an array's header
        ("  # a comment between items\n", ""),  # between items
        ("channels:\n", "store: sqlite:///x.db\nchannels:\n"),  # a block put in: everything cut again
        ("    provider: deepseek\n", "provider: deepseek\n"),  # an item line at column 0: not cut at all
        ("    keys: [sk-c]\n", "    keys: [sk-c]\n  stray: line\n"),  # a stray line among items
        ("CONFIG_END", "extra: 1\n"),  # appended at the end
    ],
)
def test_cutting_again_only_around_an_edit_cuts_as_the_whole_text_is_cut(old: str, new: str) -> None:
    base = CONFIG + "CONFIG_END"
    assert base.count(old) == 1
    before, after = base.replace("CONFIG_END", ""), base.replace(old, new).replace("CONFIG_END", "")
    itemized = incremental._itemized(SCHEMA)
    blocks = incremental.split_blocks(before, itemized)
    assert blocks is not None

    def cut(text: str) -> Any:
        try:
            found = incremental.split_blocks(text, itemized)
        except incremental._NeedsWholeFile:
            return "whole"
        return found and [(b.text, b.line, b.key, b.items, b.start) for b in found]

    try:
        again = incremental.resplit(blocks, "\n" + before, "\n" + after, itemized)
    except incremental._NeedsWholeFile:
        assert cut(after) == "whole"
        return
    if again is not None:
        assert [(b.text, b.line, b.key, b.items, b.start) for b in again] == cut(after)


def _cut_or_whole(text: str) -> Any:
    try:
        found = incremental.split_blocks(text, incremental._itemized(SCHEMA))
    except incremental._NeedsWholeFile:
        return "whole"
    return found and [(b.text, b.line, b.key, b.items, b.start) for b in found]


@settings(max_examples=600, deadline=None)
@given(_config_text(), _config_text(), st.data())
def test_cutting_again_around_a_line_edit_of_a_generated_file_cuts_as_the_whole_text_is_cut(first: str, other: str, data: st.DataObject) -> None:
    lines, donor = first.splitlines(keepends=True), other.splitlines(keepends=True)
    start = data.draw(st.integers(0, len(lines)))
    stop = data.draw(st.integers(start, min(len(lines), start + 3)))
    taken = data.draw(st.integers(0, len(donor)))
    edited = "".join(lines[:start] + donor[taken:taken + data.draw(st.integers(0, 3))] + lines[stop:])
    before = _cut_or_whole(first)
    if not isinstance(before, list):
        return
    blocks = incremental.split_blocks(first, incremental._itemized(SCHEMA))
    assert blocks is not None
    try:
        again = incremental.resplit(blocks, "\n" + first, "\n" + edited, incremental._itemized(SCHEMA))
    except incremental._NeedsWholeFile:
        assert _cut_or_whole(edited) == "whole", edited
        return
    if again is not None:
        assert [(b.text, b.line, b.key, b.items, b.start) for b in again] == _cut_or_whole(edited), edited
