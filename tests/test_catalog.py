"""The service catalog (contract §1): the demo catalog and every error path of strict loading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from outagewatch.catalog import Catalog, Probe, StatusPage
from outagewatch.errors import CatalogError, InputError

FILE = "my-catalog.toml"


def load_error(text: str) -> str:
    """The message of the CatalogError that loading `text` (as FILE) raises."""
    with pytest.raises(CatalogError) as info:
        Catalog.from_toml(text, FILE)
    msg = str(info.value)
    assert "\n" not in msg, "a catalog error is one line"
    assert msg.startswith(FILE), msg
    return msg


def assert_names(msg: str, service: str, key: str) -> None:
    assert f"service {service!r}" in msg, msg
    assert f"key {key!r}" in msg, msg


# ---------------------------------------------------------------------- the demo catalog
def test_demo_catalog_loads_with_thirteen_services() -> None:
    cat = Catalog.demo()
    assert len(cat) == 13
    assert set(cat.services) == {
        "x",
        "facebook",
        "instagram",
        "messenger",
        "threads",
        "whatsapp",
        "cloudflare",
        "discord",
        "shopify",
        "youtube",
        "gmail",
        "netflix",
        "att",
    }
    x = cat.services["x"]
    assert x.name == "X"
    assert x.metrics["spaces_listeners"] == "load"
    assert x.metrics["error_rate"] == "errors"
    assert cat.services["discord"].depends_on == ("cloudflare",)
    assert cat.services["facebook"].group == "meta"
    assert cat.services["cloudflare"].group is None


@pytest.mark.parametrize(
    ("name", "sid"),
    [
        ("Twitter", "x"),
        ("twitter", "x"),
        ("TWITTER", "x"),
        ("X", "x"),
        ("x", "x"),
        ("FB", "facebook"),
        ("Insta", "instagram"),
        ("iG", "instagram"),
        ("YT", "youtube"),
        ("AT&T", "att"),
        ("Att-Wireless", "att"),
        ("gmail", "gmail"),
    ],
)
def test_demo_names_resolve_case_insensitively(name: str, sid: str) -> None:
    svc = Catalog.demo().resolve(name)
    assert svc is not None
    assert svc.id == sid


@pytest.mark.parametrize("name", ["", "twit", "meta", "google", "x ", "facebook.com"])
def test_unknown_names_resolve_to_none(name: str) -> None:
    assert Catalog.demo().resolve(name) is None


def test_all_problems_ends_with_other() -> None:
    x = Catalog.demo().services["x"]
    assert x.all_problems == ("app", "website", "login", "spaces", "other")


def test_full_service_loads() -> None:
    cat = Catalog.from_toml(
        """
[services.x]
name = "X"
aliases = ["twitter"]
group = "meta"
depends_on = ["cloudflare"]
problems = ["app", "website"]

[services.x.metrics]
spaces_listeners = "load"
requests_per_second = "traffic"
unique_client_ips = "sources"
error_rate = "errors"
p99_ms = "latency"

[[services.x.probes]]
url = "https://x.com/"
site = "primary"
interval_s = 30

[[services.x.probes]]
url = "http://x.example/health"

[services.x.status_page]
url = "https://status.x.example/api/v2/summary.json"
kind = "feed"
interval_s = 300

[services.cloudflare]
""",
        FILE,
    )
    x = cat.services["x"]
    assert x.probes == (
        Probe("https://x.com/", "primary", 30),
        Probe("http://x.example/health", "public", 60),
    )
    assert x.status_page == StatusPage("https://status.x.example/api/v2/summary.json", "feed", 300)
    assert dict(x.metrics) == {
        "spaces_listeners": "load",
        "requests_per_second": "traffic",
        "unique_client_ips": "sources",
        "error_rate": "errors",
        "p99_ms": "latency",
    }
    assert cat.services["cloudflare"].name == "cloudflare"  # name defaults to the id
    assert cat.path == FILE


def test_load_reads_a_file(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[services.a1-b]\nname = "A"\naliases = ["Alpha"]\n', encoding="utf-8")
    cat = Catalog.load(p)
    assert cat.path == str(p)
    svc = cat.resolve("ALPHA")
    assert svc is not None
    assert svc.id == "a1-b"


# ---------------------------------------------------------------------- error paths
def test_unknown_service_key() -> None:
    msg = load_error('[services.x]\nname = "X"\ncolour = "blue"\n')
    assert_names(msg, "x", "colour")
    assert "unknown key" in msg


def test_unknown_probe_key() -> None:
    msg = load_error('[services.x]\n[[services.x.probes]]\nurl = "https://x.com/"\ntimeout = 3\n')
    assert_names(msg, "x", "probes[0].timeout")
    assert "unknown key" in msg


def test_unknown_status_page_key() -> None:
    msg = load_error(
        '[services.x]\n[services.x.status_page]\nurl = "https://s.example/"\nformat = "json"\n'
    )
    assert_names(msg, "x", "status_page.format")
    assert "unknown key" in msg


@pytest.mark.parametrize("sid", ["X", "Twitter", "-x", "_x", "x_y", "x.y", "ä"])
def test_bad_service_id(sid: str) -> None:
    msg = load_error(f'[services."{sid}"]\nname = "n"\n')
    assert f"service {sid!r}" in msg
    assert "bad service id" in msg


def test_service_id_with_trailing_newline_is_bad() -> None:
    msg = load_error('[services."x\\n"]\nname = "n"\n')
    assert "bad service id" in msg


def test_duplicate_service_id_names_the_file() -> None:
    with pytest.raises(CatalogError) as info:
        Catalog.from_toml('[services.x]\nname = "a"\n\n[services.x]\nname = "b"\n', FILE)
    msg = str(info.value)
    assert msg.startswith(FILE)
    assert "x" in msg.removeprefix(FILE)
    assert "\n" not in msg
    assert msg == f"{FILE}: service 'x': duplicate service id at line 4"


def test_depends_on_naming_no_service() -> None:
    msg = load_error('[services.a]\ndepends_on = ["ghost"]\n')
    assert_names(msg, "a", "depends_on")
    assert "'ghost'" in msg


def test_two_service_cycle() -> None:
    msg = load_error('[services.a]\ndepends_on = ["b"]\n[services.b]\ndepends_on = ["a"]\n')
    assert "key 'depends_on'" in msg
    assert "cycle" in msg
    assert re.search(r"service '[ab]'", msg)
    assert "a -> b -> a" in msg or "b -> a -> b" in msg


def test_three_service_cycle() -> None:
    msg = load_error(
        "[services.a]\ndepends_on = ['b']\n"
        "[services.b]\ndepends_on = ['c']\n"
        "[services.c]\ndepends_on = ['a']\n"
    )
    assert "key 'depends_on'" in msg
    assert "cycle" in msg
    assert re.search(r"service '[abc]'", msg)
    assert any(c in msg for c in ("a -> b -> c -> a", "b -> c -> a -> b", "c -> a -> b -> c"))


def test_cycle_reached_from_outside_names_only_the_cycle() -> None:
    msg = load_error(
        "[services.top]\ndepends_on = ['a']\n"
        "[services.a]\ndepends_on = ['b']\n"
        "[services.b]\ndepends_on = ['a']\n"
    )
    assert "cycle" in msg
    assert "a -> b -> a" in msg or "b -> a -> b" in msg


def test_diamond_is_no_cycle() -> None:
    cat = Catalog.from_toml(
        "[services.a]\ndepends_on = ['b', 'c']\n"
        "[services.b]\ndepends_on = ['d']\n"
        "[services.c]\ndepends_on = ['d']\n"
        "[services.d]\n",
        FILE,
    )
    assert len(cat) == 4


def test_self_dependency() -> None:
    msg = load_error('[services.a]\ndepends_on = ["a"]\n')
    assert_names(msg, "a", "depends_on")
    assert "itself" in msg


def test_unknown_metric_role() -> None:
    msg = load_error('[services.x]\n[services.x.metrics]\nerror_rate = "failures"\n')
    assert_names(msg, "x", "metrics.error_rate")
    assert "'failures'" in msg


@pytest.mark.parametrize(
    ("probe", "key"),
    [
        ('url = "ftp://x.com/"', "probes[0].url"),
        ('url = "x.com"', "probes[0].url"),
        ('url = ""', "probes[0].url"),
        ("url = 5", "probes[0].url"),
        ('site = "public"', "probes[0].url"),  # url is required
        ('url = "https://x.com/"\ninterval_s = 4', "probes[0].interval_s"),
        ('url = "https://x.com/"\ninterval_s = 86401', "probes[0].interval_s"),
        ('url = "https://x.com/"\ninterval_s = 60.0', "probes[0].interval_s"),
        ('url = "https://x.com/"\ninterval_s = true', "probes[0].interval_s"),
        ('url = "https://x.com/"\ninterval_s = "60"', "probes[0].interval_s"),
        ('url = "https://x.com/"\nsite = ""', "probes[0].site"),
    ],
)
def test_bad_probe(probe: str, key: str) -> None:
    msg = load_error(f"[services.x]\n[[services.x.probes]]\n{probe}\n")
    assert_names(msg, "x", key)


def test_bad_second_probe_is_named_by_index() -> None:
    msg = load_error(
        "[services.x]\n"
        '[[services.x.probes]]\nurl = "https://x.com/"\n'
        '[[services.x.probes]]\nurl = "https://x.com/"\ninterval_s = 1\n'
    )
    assert_names(msg, "x", "probes[1].interval_s")


def test_probe_url_with_whitespace_is_bad() -> None:
    msg = load_error('[services.x]\n[[services.x.probes]]\nurl = "https://x.com/a b"\n')
    assert_names(msg, "x", "probes[0].url")


@pytest.mark.parametrize("kind", ["rss", "Statuspage", "atom", ""])
def test_bad_status_page_kind(kind: str) -> None:
    msg = load_error(
        f'[services.x]\n[services.x.status_page]\nurl = "https://s.example/"\nkind = "{kind}"\n'
    )
    assert_names(msg, "x", "status_page.kind")


def test_status_page_needs_url() -> None:
    msg = load_error('[services.x]\n[services.x.status_page]\nkind = "feed"\n')
    assert_names(msg, "x", "status_page.url")


def test_alias_clashing_with_another_services_id() -> None:
    msg = load_error('[services.a]\naliases = ["B"]\n[services.b]\n')
    assert_names(msg, "a", "aliases")
    assert "'b'" in msg


def test_alias_clashing_with_another_services_alias() -> None:
    msg = load_error('[services.a]\naliases = ["same"]\n[services.b]\naliases = ["SAME"]\n')
    assert_names(msg, "b", "aliases")


def test_alias_equal_to_own_id_is_fine() -> None:
    cat = Catalog.from_toml('[services.a]\naliases = ["A"]\n', FILE)
    svc = cat.resolve("a")
    assert svc is not None
    assert svc.id == "a"


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("name = 5", "name"),
        ('name = "  "', "name"),
        ('aliases = "x"', "aliases"),
        ('aliases = ["a", ""]', "aliases"),
        ('problems = ["app", "app"]', "problems"),
        ("group = []", "group"),
        ("depends_on = 'b'", "depends_on"),
        ("metrics = 'load'", "metrics"),
        ("probes = { url = 'https://x.com/' }", "probes"),
        ("status_page = 'https://s.example/'", "status_page"),
    ],
)
def test_bad_value_types(body: str, key: str) -> None:
    msg = load_error(f"[services.x]\n{body}\n")
    assert_names(msg, "x", key)


def test_unknown_top_level_key() -> None:
    msg = load_error('version = 2\n[services.x]\nname = "X"\n')
    assert "'version'" in msg


def test_invalid_toml_names_the_file() -> None:
    msg = load_error("[services.x\nname = 1\n")
    assert "TOML" in msg


def test_catalog_error_is_an_input_error() -> None:
    with pytest.raises(InputError):
        Catalog.from_toml("[services.X]\n", FILE)


def test_load_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "catalog.toml"
    with pytest.raises(CatalogError) as info:
        Catalog.load(missing)
    assert str(missing) in str(info.value)
    assert "\n" not in str(info.value)


def test_load_error_in_file_names_the_path(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text('[services.x]\ndepends_on = ["y"]\n', encoding="utf-8")
    with pytest.raises(CatalogError) as info:
        Catalog.load(p)
    msg = str(info.value)
    assert msg.startswith(str(p))
    assert_names(msg, "x", "depends_on")


def test_load_non_utf8_file_names_the_path(tmp_path: Path) -> None:
    p = tmp_path / "latin1.toml"
    p.write_bytes(b'[services.x]\nname = "caf\xe9"\n')
    with pytest.raises(CatalogError) as info:
        Catalog.load(p)
    assert str(p) in str(info.value)


# ---------------------------------------------------------------------- probe checks (issue 6)
def test_probe_check_keys() -> None:
    cat = Catalog.from_toml(
        '[services.x]\n[[services.x.probes]]\nurl = "https://x.com/health"\n'
        'expect_status = 204\nkeyword = "healthy"\ntimeout_s = 2.5\n'
        '[[services.x.probes]]\nurl = "https://x.com/"\ntimeout_s = 3\n'
    )
    first, second = cat.services["x"].probes
    assert first == Probe(
        "https://x.com/health", expect_status=204, keyword="healthy", timeout_s=2.5
    )
    assert second.expect_status is None and second.keyword is None and second.timeout_s == 3.0


@pytest.mark.parametrize(
    ("probe", "key"),
    [
        ("expect_status = 99", "probes[0].expect_status"),
        ("expect_status = 600", "probes[0].expect_status"),
        ('expect_status = "200"', "probes[0].expect_status"),
        ('keyword = ""', "probes[0].keyword"),
        ("keyword = 5", "probes[0].keyword"),
        ("timeout_s = 0", "probes[0].timeout_s"),
        ("timeout_s = 301", "probes[0].timeout_s"),
        ("timeout_s = true", "probes[0].timeout_s"),
    ],
)
def test_bad_probe_check_keys(probe: str, key: str) -> None:
    msg = load_error(f'[services.x]\n[[services.x.probes]]\nurl = "https://x.com/"\n{probe}\n')
    assert_names(msg, "x", key)
