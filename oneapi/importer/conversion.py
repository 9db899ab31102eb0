"""One API's rows -> config.yaml: channels, tokens, groups and pricing, with secrets set apart and every loss noted."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any, Callable

import yaml

from .database import OneApiData

DEFAULT_QUOTA_PER_UNIT = 500_000.0  # One API's QuotaPerUnit: quota units per US dollar
DEFAULT_GROUP = "default"
# config JSON fields that become options under their own name unless a type says otherwise
CONFIG_OPTIONS = {"region": "region", "api_version": "api_version", "user_id": "user_id"}
# One API's channel and token statuses (model/channel.go, model/token.go)
CHANNEL_DISABLED = {2: "disabled by hand in {flavor} (status 2)",
                    3: "disabled automatically by {flavor} after upstream failures (status 3): enable it once its keys work"}
TOKEN_DISABLED = {2: "disabled in {flavor} (status 2)", 3: "expired in {flavor} (status 3)", 4: "quota used up in {flavor} (status 4)"}
USER_DISABLED, USER_DELETED = 2, 3
ADMIN_ROLE = 10  # model/user.go: RoleAdminUser; root is 100
# options that change how One API served or billed, and why they do not carry over
UNMAPPED_OPTIONS = {
    "ModelPrice": "fixed prices per request: pricing here is per token only",
    "ChannelDisableThreshold": "channels are set aside by the circuit breaker (`breaker:`), not by a response-time threshold",
    "AutomaticDisableChannelEnabled": "failing channels and keys are set aside for a cooldown (`breaker:`), never disabled for good",
    "PreConsumedQuota": "requests reserve their likely cost from the budget by themselves",
    "QuotaForNewUser": "there are no user accounts: every token has its own budget",
    "QuotaForInviter": "there are no user accounts or invitations",
    "QuotaForInvitee": "there are no user accounts or invitations",
}
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_URL = re.compile(r"^https?://[^\s]+$")  # what config.schema.json accepts as a base_url
_TYPED_RATIO = re.compile(r"^(?P<model>.+)\((?P<type>\d+)\)$")


@dataclass
class Imported:
    """What the import produced: the config as data, the comments that go above its items, the secrets, the report."""

    flavor: str
    config: dict[str, Any] = field(default_factory=dict)
    comments: dict[tuple[str, int], list[str]] = field(default_factory=dict)  # (section, index) -> lines
    secrets: dict[str, str] = field(default_factory=dict)  # variable -> value, for secrets.env
    report: dict[str, list[str]] = field(default_factory=dict)  # section -> lines: what did not map, and why
    counts: dict[str, int] = field(default_factory=dict)

    def note(self, section: str, line: str) -> None:
        self.report.setdefault(section, []).append(line)


@cache
def channel_types() -> dict[str, dict[int, dict[str, Any]]]:
    """The type-id table (channel_types.yaml): flavor -> type id -> how a channel of that type is imported."""
    data = yaml.safe_load(Path(__file__).with_name("channel_types.yaml").read_text())
    return {flavor: {int(k): v for k, v in table.items()} for flavor, table in data.items()}


def convert(data: OneApiData, providers_dir: str | None = None) -> Imported:
    out = Imported(data.flavor)
    quota_per_unit = _number(data.options.get("QuotaPerUnit")) or DEFAULT_QUOTA_PER_UNIT
    if providers_dir:
        out.config["providers_dir"] = providers_dir
    retries = _number(data.options.get("RetryTimes"))
    if retries and retries > 0:
        out.config["retry"] = {"attempts": min(20, int(retries) + 1)}  # One API retried this many times after the first
    groups = _groups(data, out)
    pricing = _pricing(data, out, quota_per_unit)
    channels = _channels(data, out)
    tokens = _tokens(data, out, quota_per_unit)
    for group in sorted({g for c in channels for g in c.get("groups", [DEFAULT_GROUP])} | {t.get("group", DEFAULT_GROUP) for t in tokens}):
        if group not in groups:
            groups[group] = {"ratio": 1.0}
            if group != DEFAULT_GROUP:
                out.note("groups", f"group {group!r} is used by channels or tokens but has no GroupRatio entry: ratio 1")
    out.config["groups"] = groups
    if pricing:
        out.config["pricing"] = {"models": pricing}
    out.config["channels"] = channels
    out.config["tokens"] = tokens
    _unmapped_options(data, out)
    _left_behind(data, out, quota_per_unit)
    out.counts.update(channels=len(channels), tokens=len(tokens), secrets=len(out.secrets), prices=len(pricing))
    return out


def _groups(data: OneApiData, out: Imported) -> dict[str, dict[str, float]]:
    ratios = _json_object(data.options.get("GroupRatio"), "GroupRatio", out)
    groups = {}
    for name, ratio in ratios.items():
        if isinstance(ratio, (int, float)) and ratio >= 0:
            groups[str(name)] = {"ratio": float(ratio)}
        else:
            out.note("groups", f"GroupRatio {name!r}: {ratio!r} is not a ratio; left out")
    return groups


def _pricing(data: OneApiData, out: Imported, quota_per_unit: float) -> dict[str, dict[str, float]]:
    """ModelRatio r means r quota units per token: r * 1M / QuotaPerUnit USD per 1M input tokens ($2 at r = 1)."""
    if "ModelRatio" not in data.options:
        out.note("pricing", f"the options table has no ModelRatio ({data.flavor} used its built-in defaults): "
                            "no prices imported; `oneapi check` names every unpriced model")
        return {}
    model_ratio = _json_object(data.options.get("ModelRatio"), "ModelRatio", out)
    completion = _json_object(data.options.get("CompletionRatio"), "CompletionRatio", out)
    cache_ratio = _json_object(data.options.get("CacheRatio"), "CacheRatio", out)  # new-api: cached input, relative to input
    per_type: dict[str, tuple[str, float]] = {}
    plain: dict[str, float] = {}
    for name, ratio in model_ratio.items():
        if not isinstance(ratio, (int, float)) or ratio < 0:
            out.note("pricing", f"ModelRatio {name!r}: {ratio!r} is not a ratio; left out")
            continue
        if typed := _TYPED_RATIO.match(name):  # One API's per-channel-type ratio, "model(type)"
            per_type.setdefault(typed["model"], (name, float(ratio)))
        else:
            plain[name] = float(ratio)
    for model, (name, ratio) in per_type.items():
        if model in plain:
            out.note("pricing", f"ModelRatio {name!r} priced {model!r} on one channel type only: pricing is per model, so {model!r} keeps its general ratio")
        else:
            plain[model] = ratio
            out.note("pricing", f"ModelRatio {name!r} priced {model!r} on one channel type only: it now prices {model!r} everywhere")
    guessed = []
    prices = {}
    for model in sorted(plain):
        price = {"input": _round(plain[model] * 1_000_000 / quota_per_unit)}
        ratio = completion.get(model)
        if not isinstance(ratio, (int, float)):
            guessed.append(model)
            ratio = 1.0
        price["output"] = _round(price["input"] * ratio)
        if isinstance(cache_ratio.get(model), (int, float)):
            price["cached_input"] = _round(price["input"] * cache_ratio[model])
        prices[model] = price
    if guessed:
        out.note("pricing", f"{len(guessed)} model(s) have no CompletionRatio entry, so output is priced as input "
                            f"({data.flavor} guessed a ratio from some model names): {', '.join(guessed[:20])}{' ...' if len(guessed) > 20 else ''}")
    return prices


def _channels(data: OneApiData, out: Imported) -> list[dict[str, Any]]:
    table = channel_types()[data.flavor]
    names: set[str] = set()
    variables: set[str] = set()
    channels = []
    for row in sorted(data.channels, key=lambda r: int(r.get("id") or 0)):
        cid, title = int(row.get("id") or 0), str(row.get("name") or "")
        label = f"channel #{cid} {title!r}"
        kind = table.get(int(row.get("type") or 0))
        if kind is None or "provider" not in kind:
            why = kind["gone"] if kind else f"type {row.get('type')} is not in {data.flavor}'s type list"
            out.note("channels not imported", f"{label} (type {row.get('type')}{' ' + kind['name'] if kind else ''}): {why}")
            continue
        name = _unique(_slug(title) or f"channel-{cid}", cid, names)
        comments = [f"{data.flavor} channel #{cid} {title!r}, type {row.get('type')} ({kind['name']})"]
        if row.get("tag"):
            comments.append(f"tag: {row['tag']}")
        channel: dict[str, Any] = {"name": name, "provider": kind["provider"]}
        config = _json_object(row.get("config"), f"{label} config", out)
        options = _options(row, config, kind, label, out)
        keys = _keys(row, config, kind, options, label, out)
        base_url = _base_url(row, kind, options)
        if base_url and not _URL.match(base_url):
            comments.append(f"base_url {base_url!r} is not an http(s) URL: set the right one, then enable the channel")
            out.note("channels to check", f"{label} -> {name}: base_url {base_url!r} is not an http(s) URL; imported disabled without it")
            channel["enabled"], base_url = False, None
        if base_url:
            channel["base_url"] = base_url
        elif kind.get("needs_base_url"):
            names.discard(name)
            out.note("channels not imported", f"{label} (type {row.get('type')} {kind['name']}): it has no base_url, "
                                              f"which provider {kind['provider']} needs")
            continue
        if keys:
            channel["keys"] = [_secret(out, key, name, f"KEY_{i}", cid, variables) for i, key in enumerate(keys, 1)]
        models = _split(row.get("models"), ",")
        if models:
            channel["models"] = models
        mapping = {str(k): str(v) for k, v in _json_object(row.get("model_mapping"), f"{label} model_mapping", out).items() if k and v}
        if mapping:
            channel["model_map"] = mapping
        groups = _split(row.get("group"), ",")
        if groups and groups != [DEFAULT_GROUP]:
            channel["groups"] = groups
        if int(row.get("priority") or 0):
            channel["priority"] = int(row["priority"])
        if int(row.get("weight") or 0) > 0:
            channel["weight"] = int(row["weight"])
        headers = _headers(row, label, out, lambda value, what: _secret(out, value, name, what, cid, variables))
        if headers:
            channel["headers"] = headers
        if options:
            channel["options"] = options
        _disable_by_status(channel, row, CHANNEL_DISABLED, comments, data.flavor)
        if "disable" in kind:
            channel["enabled"] = False
            comments.append(kind["disable"])
            out.note("channels to check", f"{label} -> {name}: imported disabled: {kind['disable']}")
        if "note" in kind:
            out.note("channels to check", f"{label} -> {name}: {kind['note']}")
        info = _json_object(row.get("channel_info"), f"{label} channel_info", out)
        if off := [i for i, status in (info.get("multi_key_status_list") or {}).items() if status != 1]:
            out.note("channels to check", f"{label} -> {name}: {len(off)} of its keys were disabled in {data.flavor}; all are imported "
                                           "(a key that fails auth is set aside by itself)")
        if not keys and not kind.get("keyless"):
            out.note("channels to check", f"{label} -> {name}: no key in the database; the channel routes nothing until it has one")
        for column, why in (("system_prompt", "a system prompt forced on every request"), ("param_override", "request parameters overridden"),
                            ("status_code_mapping", "upstream status codes rewritten"), ("setting", "new-api channel settings")):
            if str(row.get(column) or "").strip() not in {"", "{}", "null"}:
                out.note("channels to check", f"{label} -> {name}: {column} ({why}) has no equivalent here; left out")
        out.comments[("channels", len(channels))] = comments
        channels.append(channel)
    return channels


def _options(row: dict[str, Any], config: dict[str, Any], kind: dict[str, Any], label: str, out: Imported) -> dict[str, Any]:
    fields = {**CONFIG_OPTIONS, **kind.get("config_options", {})}
    consumed = set(kind.get("key_from_config", ()))
    options: dict[str, Any] = {}
    for key, value in config.items():
        if value in (None, ""):
            continue
        if key in fields:
            options[fields[key]] = value
        elif key not in consumed:
            out.note("channels to check", f"{label}: config field {key!r} has no equivalent here; left out")
    other = str(row.get("other") or "").strip()
    if other.startswith("{") and "other_option" in kind:  # new-api: a region per model, {"default": ...} for the rest
        per_model = _json_object(other, f"{label} other", out)
        other = str(per_model.get("default") or "")
        if set(per_model) - {"default"}:
            out.note("channels to check", f"{label}: per-model {kind['other_option']} ({', '.join(sorted(set(per_model) - {'default'}))}) "
                                           f"needs a channel per {kind['other_option']}; the default one is kept")
    if other and "other_option" in kind:
        options.setdefault(kind["other_option"], other)
    elif other and other not in {"{}", "null"}:
        out.note("channels to check", f"{label}: the `other` column ({other[:40]!r}) has no equivalent here; left out")
    return options


def _keys(row: dict[str, Any], config: dict[str, Any], kind: dict[str, Any], options: dict[str, Any], label: str, out: Imported) -> list[str]:
    keys = _column_keys(row, config, kind, options)
    for option, json_field in kind.get("options_from_key_json", {}).items():
        found = sorted({_json_field(key, json_field) for key in keys} - {None})
        if found and option not in options:
            options[option] = found[0]
            if len(found) > 1:
                out.note("channels to check", f"{label}: its keys name several {json_field}s ({', '.join(found)}); options.{option} "
                                               f"is {found[0]!r}, so split the channel, one per {json_field}")
    return keys


def _json_field(key: str, name: str) -> str | None:
    try:
        value = json.loads(key)
    except ValueError:
        return None
    return str(value[name]) if isinstance(value, dict) and value.get(name) else None


def _column_keys(row: dict[str, Any], config: dict[str, Any], kind: dict[str, Any], options: dict[str, Any]) -> list[str]:
    from_config = [str(config.get(f) or "") for f in kind.get("key_from_config", ())]
    if from_config and all(from_config):
        return ["|".join(_compact(v) for v in from_config)]
    keys = []
    for key in _raw_keys(str(row.get("key") or "")):
        parts = key.split("|")
        for option, index in kind.get("options_from_key", {}).items():
            if index < len(parts) and parts[index]:
                options.setdefault(option, parts[index])
        if "key_parts" in kind and len(parts) > max(kind["key_parts"]):
            key = "|".join(parts[i] for i in kind["key_parts"])
        keys.append(key)
    return keys


def _raw_keys(column: str) -> list[str]:
    """One key per line; new-api also keeps a JSON array of keys (service-account files for Vertex)."""
    text = column.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except ValueError:
            items = None
        if isinstance(items, list):
            return [_compact(item if isinstance(item, str) else json.dumps(item)) for item in items if item]
    if text.startswith("{"):
        return [_compact(text)]  # one service-account JSON, which may span lines
    return [line.strip() for line in text.splitlines() if line.strip()]


def _compact(value: str) -> str:
    """JSON credentials on one line, so that secrets.env keeps one variable per line."""
    try:
        return json.dumps(json.loads(value), separators=(",", ":"))
    except ValueError:
        return value


def _base_url(row: dict[str, Any], kind: dict[str, Any], options: dict[str, Any]) -> str | None:
    stored = str(row.get("base_url") or "").strip().rstrip("/")
    default = str(kind.get("default_base_url", "")).rstrip("/")
    if kind.get("needs_base_url"):
        stored = stored or default
    if stored and (stored != default or kind.get("needs_base_url")):
        return stored + kind.get("base_url_suffix", "")
    if "base_url_template" in kind:
        try:
            return kind["base_url_template"].format(**options)
        except KeyError:  # the option it needs is not set: the provider's default stands
            return None
    return None


def _headers(row: dict[str, Any], label: str, out: Imported, secret: Callable[[str, str], str]) -> dict[str, str]:
    headers = {}
    if str(row.get("openai_organization") or "").strip():
        headers["OpenAI-Organization"] = str(row["openai_organization"]).strip()
    overrides = _json_object(row.get("header_override"), f"{label} header_override", out)
    for n, (name, value) in enumerate(overrides.items(), 1):
        if isinstance(value, str) and "{" not in value:
            headers[str(name)] = secret(value, f"HEADER_{n}")  # an overridden header is often a credential
        else:
            out.note("channels to check", f"{label}: header_override {name!r} is a template or not text; left out")
    return headers


def _tokens(data: OneApiData, out: Imported, quota_per_unit: float) -> list[dict[str, Any]]:
    users = {int(u.get("id") or 0): u for u in data.users}
    names: set[str] = set()
    digests: set[str] = set()
    tokens = []
    skipped: dict[str, int] = {}
    kept: list[dict[str, Any]] = []  # the row of each token, by position
    for row in sorted(data.tokens, key=lambda r: int(r.get("id") or 0)):
        tid, title = int(row.get("id") or 0), str(row.get("name") or "")
        user = users.get(int(row.get("user_id") or 0))
        key = str(row.get("key") or "").strip()
        if row.get("deleted_at"):
            skipped["deleted"] = skipped.get("deleted", 0) + 1
            continue
        if user is not None and (int(user.get("status") or 1) == USER_DELETED or user.get("deleted_at")):
            skipped["owned by a deleted user"] = skipped.get("owned by a deleted user", 0) + 1
            continue
        if not key:
            out.note("tokens", f"token #{tid} {title!r} has no key; left out")
            continue
        digest = hashlib.sha256(f"sk-{key}".encode()).hexdigest()  # clients send sk- and the stored key
        if digest in digests:
            out.note("tokens", f"token #{tid} {title!r} has the same key as an earlier token; left out")
            continue
        digests.add(digest)
        owner = str(user.get("username") or "") if user else ""
        name = _unique(_slug(title) or f"token-{tid}", tid, names, _slug(owner))
        comments = [f"{data.flavor} token #{tid} {title!r}" + (f" of user {owner!r}" if owner else " (owner not found)")]
        token: dict[str, Any] = {"name": name, "key_sha256": digest}
        group = str(row.get("group") or "").strip()
        if group == "auto":
            out.note("tokens", f"token #{tid} {title!r}: group 'auto' (new-api picks a group per request) becomes its owner's group")
            group = ""
        group = group or (str(user.get("group") or "").strip() if user else "") or DEFAULT_GROUP
        if group != DEFAULT_GROUP:
            token["group"] = group
        models = _token_models(row)
        if models:
            token["models"] = models
        if not row.get("unlimited_quota"):
            token["budget"] = _round(max(0, int(row.get("remain_quota") or 0)) / quota_per_unit)
        expires = int(row.get("expired_time") if row.get("expired_time") is not None else -1)
        if expires != -1:  # One API refuses any other value once it is past, 0 included
            token["expires"] = datetime.fromtimestamp(max(expires, 0), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        subnets = _subnets(row, tid, title, out)
        if subnets:
            token["subnets"] = subnets
        _disable_by_status(token, row, TOKEN_DISABLED, comments, data.flavor)
        if user is not None and int(user.get("status") or 1) == USER_DISABLED:
            token["enabled"] = False
            comments.append(f"its owner {owner!r} is disabled in {data.flavor}")
        out.comments[("tokens", len(tokens))] = comments
        tokens.append(token)
        kept.append(row)
    for why, count in skipped.items():
        out.note("tokens", f"{count} token(s) {why}; left out")
    admins = [t["name"] for t, row in zip(tokens, kept) if int((users.get(int(row.get("user_id") or 0)) or {}).get("role") or 0) >= ADMIN_ROLE]
    if admins:
        out.note("tokens", f"{data.flavor} let admins pin a channel by sending sk-KEY-CHANNELID; here a key is exactly sk-KEY "
                           f"(admin tokens: {', '.join(admins[:10])}{' ...' if len(admins) > 10 else ''})")
    return tokens


def _disable_by_status(item: dict[str, Any], row: dict[str, Any], reasons: dict[int, str], comments: list[str], flavor: str) -> None:
    """Status 1 is enabled in every One API table; any other is imported disabled, with the reason as a comment."""
    status = int(row.get("status") or 1)
    if status != 1:
        item["enabled"] = False
        comments.append(reasons.get(status, f"status {status} in {{flavor}}: not enabled").format(flavor=flavor))


def _token_models(row: dict[str, Any]) -> list[str]:
    if "model_limits" in row:  # new-api: a list that applies only while model_limits_enabled
        return _split(row.get("model_limits"), ",") if row.get("model_limits_enabled") else []
    return _split(row.get("models"), ",")


def _subnets(row: dict[str, Any], tid: int, title: str, out: Imported) -> list[str]:
    text = str(row.get("subnet") or row.get("allow_ips") or "")
    subnets = []
    for item in re.split(r"[,\s]+", text):
        if not item:
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            out.note("tokens", f"token #{tid} {title!r}: subnet {item!r} is not an IP network; left out")
        else:
            subnets.append(item)
    return list(dict.fromkeys(subnets))


def _unmapped_options(data: OneApiData, out: Imported) -> None:
    for key, why in UNMAPPED_OPTIONS.items():
        value = data.options.get(key, "").strip()
        if value and value not in {"0", "false", "{}"}:
            out.note("options", f"{key} = {value[:60]}: {why}")


def _left_behind(data: OneApiData, out: Imported, quota_per_unit: float) -> None:
    with_quota = [u for u in data.users if int(u.get("quota") or 0) > 0 and int(u.get("status") or 1) != USER_DELETED]
    if with_quota:
        total = sum(int(u["quota"]) for u in with_quota) / quota_per_unit
        out.note("left in the database", f"per-user quotas: {len(with_quota)} user(s) hold ${total:,.2f} in all; there are no user "
                                         "accounts here, so each token keeps only its own remaining quota as its budget")
    if data.users:
        out.note("left in the database", f"{len(data.users)} user account(s): logins, passwords and access tokens are not imported")
    why = {"redemptions": "redemption codes top up user accounts, which do not exist here",
           "logs": "request history stays in the old database; the ledger here starts empty, so budgets are what remained",
           "top_ups": "payment records of user top-ups", "midjourneys": "Midjourney task records", "tasks": "async task records"}
    for table, count in data.counts.items():
        if count and table in why:
            out.note("left in the database", f"{count} row(s) in {table}: {why[table]}")


def _json_object(text: Any, what: str, out: Imported) -> dict[str, Any]:
    if text is None or not str(text).strip():
        return {}
    try:
        value = json.loads(str(text))
    except ValueError:
        out.note("unreadable", f"{what} is not valid JSON; left out")
        return {}
    if value is None:
        return {}
    if not isinstance(value, dict):
        out.note("unreadable", f"{what} is not a JSON object; left out")
        return {}
    return value


def _split(text: Any, sep: str) -> list[str]:
    return list(dict.fromkeys(p.strip() for p in str(text or "").split(sep) if p.strip()))


def _slug(text: str) -> str:
    return _NAME_CHARS.sub("-", text).strip("-._")[:60].strip("-._")


def _unique(name: str, row_id: int, taken: set[str], *alternatives: str) -> str:
    """The name itself, else with an alternative (the owner), else with the row id: stable across runs."""
    for candidate in (name, *(f"{name}-{a}" for a in alternatives if a), f"{name}-{row_id}"):
        if candidate not in taken:
            taken.add(candidate)
            return candidate
    n = 2
    while f"{name}-{row_id}-{n}" in taken:
        n += 1
    taken.add(f"{name}-{row_id}-{n}")
    return f"{name}-{row_id}-{n}"


def _secret(out: Imported, value: str, channel: str, what: str, row_id: int, taken: set[str]) -> str:
    """A `${CHANNEL_<NAME>_<WHAT>}` reference, its value set apart for secrets.env."""
    stem = "CHANNEL_" + re.sub(r"[^A-Z0-9]+", "_", channel.upper()).strip("_")
    name = f"{stem}_{what}"
    if name in taken:
        name = f"{stem}_{row_id}_{what}"
    taken.add(name)
    out.secrets[name] = value
    return f"${{{name}}}"


def _number(text: Any) -> float | None:
    try:
        return float(str(text).strip())
    except (TypeError, ValueError):
        return None


def _round(value: float) -> float:
    return round(value, 6)
