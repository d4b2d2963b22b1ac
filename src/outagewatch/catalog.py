"""The service catalog (docs/contract.md §1): strict TOML loading.

Every mistake is a `CatalogError` whose message names the file, the service and the key.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from outagewatch.errors import CatalogError

SERVICE_ID = re.compile(r"[a-z0-9][a-z0-9-]*")  # used with fullmatch
METRIC_ROLES = ("load", "traffic", "sources", "errors", "latency")
STATUS_PAGE_KINDS = ("statuspage", "feed")
OTHER_PROBLEM = "other"

MetricRole = Literal["load", "traffic", "sources", "errors", "latency"]

_DUPLICATE = re.compile(r"Cannot declare \('services', '([^']*)'\) twice \((at line \d+)")
_SERVICE_KEYS = {
    "name",
    "aliases",
    "group",
    "depends_on",
    "problems",
    "metrics",
    "probes",
    "status_page",
}
_PROBE_KEYS = {"url", "site", "interval_s", "expect_status", "keyword", "timeout_s"}
_STATUS_KEYS = {"url", "kind", "interval_s"}


@dataclass(frozen=True, slots=True)
class Probe:
    url: str
    site: str = "public"
    interval_s: int = 60
    expect_status: int | None = None  # None: any 2xx after redirects
    keyword: str | None = None  # text the body must contain
    timeout_s: float = 10.0  # the whole check, connect to last byte read


@dataclass(frozen=True, slots=True)
class StatusPage:
    url: str
    kind: Literal["statuspage", "feed"] = "statuspage"
    interval_s: int = 120


@dataclass(frozen=True, slots=True)
class Service:
    id: str
    name: str
    aliases: tuple[str, ...] = ()
    group: str | None = None
    depends_on: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    metrics: Mapping[str, MetricRole] = field(default_factory=dict)
    probes: tuple[Probe, ...] = ()
    status_page: StatusPage | None = None

    @property
    def all_problems(self) -> tuple[str, ...]:
        """The service's problem types followed by `other`, the catch-all."""
        if OTHER_PROBLEM in self.problems:
            return self.problems
        return (*self.problems, OTHER_PROBLEM)


@dataclass(frozen=True)
class Catalog:
    services: Mapping[str, Service]
    source: str = ""
    path: str = "<catalog>"
    _names: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        names: dict[str, str] = {}
        for sid, svc in self.services.items():
            names[sid] = sid
            for alias in svc.aliases:
                names.setdefault(alias.lower(), sid)
        object.__setattr__(self, "_names", names)

    def resolve(self, name: str) -> Service | None:
        """The service whose id or alias is `name` (case-insensitive), or None."""
        sid = self._names.get(name) or self._names.get(name.lower())
        return None if sid is None else self.services[sid]

    @property
    def names(self) -> Mapping[str, str]:
        """Every accepted name (ids and lower-cased aliases) mapped to its service id."""
        return self._names

    def __len__(self) -> int:
        return len(self.services)

    @classmethod
    def from_toml(cls, text: str, path: str = "<catalog>") -> Catalog:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            dup = _DUPLICATE.search(str(exc))
            if dup:  # name the service, as every other catalog error does
                raise CatalogError(
                    f"{path}: service {dup.group(1)!r}: duplicate service id {dup.group(2)}"
                ) from None
            raise CatalogError(f"{path}: not valid TOML: {exc}") from None
        except RecursionError:  # tomllib recurses into nested arrays and inline tables
            raise CatalogError(f"{path}: not valid TOML: values nested too deeply") from None
        return cls(services=_parse(doc, path), source=text, path=path)

    @classmethod
    def load(cls, path: str | Path) -> Catalog:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise CatalogError(f"{p}: cannot read catalog: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise CatalogError(f"{p}: catalog is not UTF-8 text") from None
        return cls.from_toml(text, str(p))

    @classmethod
    def demo(cls) -> Catalog:
        """The built-in demo catalog: about a dozen well-known services."""
        text = resources.files("outagewatch").joinpath("data/demo_catalog.toml").read_text("utf-8")
        return cls.from_toml(text, "<built-in demo catalog>")


def _err(path: str, sid: str | None, key: str | None, why: str) -> CatalogError:
    where = path
    if sid is not None:
        where += f": service {sid!r}"
    if key is not None:
        where += f": key {key!r}"
    return CatalogError(f"{where}: {why}")


def _str(path: str, sid: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _err(path, sid, key, "must be a non-empty string")
    return value


def _str_list(path: str, sid: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _err(path, sid, key, "must be a list of non-empty strings")
    if len(set(value)) != len(value):
        raise _err(path, sid, key, "has duplicate entries")
    return tuple(value)


def _interval(path: str, sid: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 5 <= value <= 86_400:
        raise _err(path, sid, key, "must be an integer number of seconds from 5 to 86400")
    return value


def _status(path: str, sid: str, key: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise _err(path, sid, key, "must be an HTTP status code from 100 to 599")
    return value


def _timeout(path: str, sid: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.1 <= value <= 300:
        raise _err(path, sid, key, "must be a number of seconds from 0.1 to 300")
    return float(value)


def _url(path: str, sid: str, key: str, value: Any) -> str:
    url = _str(path, sid, key, value)
    if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", url):
        raise _err(path, sid, key, "must be an http:// or https:// URL")
    return url


def _parse(doc: dict[str, Any], path: str) -> dict[str, Service]:
    unknown_top = set(doc) - {"services"}
    if unknown_top:
        raise _err(path, None, sorted(unknown_top)[0], "unknown top-level key")
    raw = doc.get("services", {})
    if not isinstance(raw, dict):
        raise _err(path, None, "services", "must be a table of services")
    services: dict[str, Service] = {}
    for sid, body in raw.items():
        if not SERVICE_ID.fullmatch(sid):
            raise _err(path, sid, None, "bad service id: use lower-case [a-z0-9][a-z0-9-]*")
        if not isinstance(body, dict):
            raise _err(path, sid, None, "must be a table")
        services[sid] = _parse_service(path, sid, body)
    _check_names(path, services)
    _check_dependencies(path, services)
    return services


def _parse_service(path: str, sid: str, body: dict[str, Any]) -> Service:
    for key in body:
        if key not in _SERVICE_KEYS:
            raise _err(path, sid, key, "unknown key")
    name = _str(path, sid, "name", body["name"]) if "name" in body else sid
    aliases = _str_list(path, sid, "aliases", body.get("aliases", []))
    group = _str(path, sid, "group", body["group"]) if "group" in body else None
    depends_on = _str_list(path, sid, "depends_on", body.get("depends_on", []))
    problems = _str_list(path, sid, "problems", body.get("problems", []))
    metrics_raw = body.get("metrics", {})
    if not isinstance(metrics_raw, dict):
        raise _err(path, sid, "metrics", "must be a table of metric name = role")
    metrics: dict[str, MetricRole] = {}
    for mname, role in metrics_raw.items():
        if role not in METRIC_ROLES:
            raise _err(
                path,
                sid,
                f"metrics.{mname}",
                f"unknown metric role {role!r}; expected one of {', '.join(METRIC_ROLES)}",
            )
        metrics[mname] = role
    probes_raw = body.get("probes", [])
    if not isinstance(probes_raw, list):
        raise _err(path, sid, "probes", "must be an array of tables ([[services.ID.probes]])")
    probes = []
    for i, pr in enumerate(probes_raw):
        key = f"probes[{i}]"
        if not isinstance(pr, dict):
            raise _err(path, sid, key, "must be a table")
        for k in pr:
            if k not in _PROBE_KEYS:
                raise _err(path, sid, f"{key}.{k}", "unknown key")
        if "url" not in pr:
            raise _err(path, sid, f"{key}.url", "is required")
        probes.append(
            Probe(
                url=_url(path, sid, f"{key}.url", pr["url"]),
                site=_str(path, sid, f"{key}.site", pr.get("site", "public")),
                interval_s=_interval(path, sid, f"{key}.interval_s", pr.get("interval_s", 60)),
                expect_status=_status(path, sid, f"{key}.expect_status", pr.get("expect_status")),
                keyword=(
                    _str(path, sid, f"{key}.keyword", pr["keyword"]) if "keyword" in pr else None
                ),
                timeout_s=_timeout(path, sid, f"{key}.timeout_s", pr.get("timeout_s", 10.0)),
            )
        )
    status_page = None
    if "status_page" in body:
        sp = body["status_page"]
        if not isinstance(sp, dict):
            raise _err(path, sid, "status_page", "must be a table")
        for k in sp:
            if k not in _STATUS_KEYS:
                raise _err(path, sid, f"status_page.{k}", "unknown key")
        if "url" not in sp:
            raise _err(path, sid, "status_page.url", "is required")
        kind = sp.get("kind", "statuspage")
        if kind not in STATUS_PAGE_KINDS:
            raise _err(path, sid, "status_page.kind", "must be 'statuspage' or 'feed'")
        status_page = StatusPage(
            url=_url(path, sid, "status_page.url", sp["url"]),
            kind=kind,
            interval_s=_interval(path, sid, "status_page.interval_s", sp.get("interval_s", 120)),
        )
    return Service(
        id=sid,
        name=name,
        aliases=aliases,
        group=group,
        depends_on=depends_on,
        problems=problems,
        metrics=metrics,
        probes=tuple(probes),
        status_page=status_page,
    )


def _check_names(path: str, services: dict[str, Service]) -> None:
    """An alias may not be another service's id or alias (names must resolve uniquely)."""
    owner: dict[str, str] = {sid: sid for sid in services}
    for sid, svc in services.items():
        for alias in svc.aliases:
            other = owner.get(alias.lower())
            if other is not None and other != sid:
                raise _err(path, sid, "aliases", f"alias {alias!r} is already a name of {other!r}")
            owner[alias.lower()] = sid


def _check_dependencies(path: str, services: dict[str, Service]) -> None:
    for sid, svc in services.items():
        for dep in svc.depends_on:
            if dep not in services:
                raise _err(path, sid, "depends_on", f"names no service: {dep!r}")
            if dep == sid:
                raise _err(path, sid, "depends_on", "a service cannot depend on itself")
    # Cycle detection: depth-first search with colours, without recursion (a long chain of
    # dependencies must not exhaust Python's stack). The grey services are the trail.
    colour: dict[str, int] = dict.fromkeys(services, 0)
    for root, svc in services.items():
        if colour[root] != 0:
            continue
        colour[root] = 1
        trail = [root]
        todo = [iter(svc.depends_on)]
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                colour[trail.pop()] = 2
                todo.pop()
            elif colour[nxt] == 1:
                cycle = [*trail[trail.index(nxt) :], nxt]
                raise _err(path, trail[-1], "depends_on", f"forms a cycle: {' -> '.join(cycle)}")
            elif colour[nxt] == 0:
                colour[nxt] = 1
                trail.append(nxt)
                todo.append(iter(services[nxt].depends_on))


# ---------------------------------------------------------------- the catalog as data
def catalog_doc(catalog: Catalog) -> dict[str, Any]:
    """The catalog's TOML document (as loaded: what an edit starts from)."""
    return tomllib.loads(catalog.source) if catalog.source.strip() else {"services": {}}


def with_service(catalog: Catalog, sid: str, body: Any, path: str) -> Catalog:
    """The catalog with service `sid` added or replaced by `body` (a §1 service table as
    JSON), checked by the same loader as a file: a `CatalogError` names what was wrong."""
    if not isinstance(body, dict):
        raise _err(path, sid, None, "must be a table (a JSON object)")
    _no_nulls(path, sid, body, "")
    doc = catalog_doc(catalog)
    doc.setdefault("services", {})[sid] = body
    return Catalog.from_toml(to_toml(doc), path)


def without_service(catalog: Catalog, sid: str, path: str) -> Catalog:
    """The catalog without `sid` (a service that still names it in `depends_on` is an
    error naming that service)."""
    doc = catalog_doc(catalog)
    doc.get("services", {}).pop(sid, None)
    return Catalog.from_toml(to_toml(doc), path)


def _no_nulls(path: str, sid: str, value: Any, key: str) -> None:
    if value is None:
        raise _err(path, sid, key or None, "null is not a TOML value: leave the key out")
    if isinstance(value, dict):
        for k, v in value.items():
            _no_nulls(path, sid, v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_nulls(path, sid, v, f"{key}[{i}]")


def to_toml(doc: Mapping[str, Any]) -> str:
    """A TOML document of nested tables, arrays of tables and plain values (JSON's types
    without null), that `tomllib` reads back equal."""
    out: list[str] = []
    _toml_table(out, [], doc)
    return "\n".join(out).strip() + "\n"


def _toml_table(out: list[str], path: list[str], table: Mapping[str, Any]) -> None:
    plain = {k: v for k, v in table.items() if not _is_tables(v) and not isinstance(v, dict)}
    if path and (plain or not table):
        out.append(f"\n[{'.'.join(_toml_key(p) for p in path)}]")
    for k, v in plain.items():
        out.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in table.items():
        if isinstance(v, dict):
            _toml_table(out, [*path, k], v)
        elif _is_tables(v):
            for item in v:
                out.append(f"\n[[{'.'.join(_toml_key(p) for p in [*path, k])}]]")
                for ik, iv in item.items():
                    out.append(f"{_toml_key(ik)} = {_toml_value(iv)}")


def _is_tables(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(i, dict) for i in v)


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml_string(k)


def _toml_string(s: str) -> str:
    # JSON's escapes are TOML's, but for "\/", which json.dumps never writes.
    import json

    return json.dumps(s, ensure_ascii=False)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return repr(v)
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(i) for i in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(i)}" for k, i in v.items()) + "}"
    raise TypeError(f"not a TOML value: {v!r}")
