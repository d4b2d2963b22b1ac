"""Test tiers. Every test runs under `make test`; `make check` runs the fast tier only:
no server process, browser, PostgreSQL, NATS or benchmark, and no test marked
`@pytest.mark.slow` (over half a second on the 2-core CI machine: month-long replays,
property runs; `-m "not integration and not slow"`).

A test is in the integration tier when its module drives real servers, browsers or whole
simulated weeks (listed here), when it starts a CLI process (listed here), or when it runs on
the PostgreSQL store or
the NATS bus (the `postgresql` and `nats` parameters)."""

from __future__ import annotations

import pytest

# The kernels of test processes are numba's (outagewatch.jit): their modules are imported
# here, before a test can call `cli.main(["replay", ...])`, which asks for the kernels
# compiled ahead of time and would hand them to every later test of its worker. The
# extension is tested through the command line in fresh processes (test_jit, test_startup).
import outagewatch.detect.quiet
import outagewatch.pipeline.dedup  # noqa: F401

INTEGRATION_MODULES = frozenset(
    {
        "test_benchmarks",
        "test_browser",
        "test_browser_probes",
        "test_browser_admin",
        "test_client_memory",
        "test_serve_hardening",
        "test_startup",
        "test_jit",
        "test_writer_lock",
        "test_bus_nats",
        "test_demo",
        "test_e2e_seeds",
        "test_escaping",
        "test_operations_process",
        "test_visitors_process",
        "test_overload",
        "test_schemathesis",
        "test_secrets_in_logs",
        "test_server_process",
        "test_worker",
        "test_leader",
    }
)

INTEGRATION_TESTS = frozenset(
    {
        "test_causes.py::test_replay_cli_shows_causes_in_json_and_table",
        "test_cli.py::test_subprocess_exit_code_and_one_line_stderr",
        "test_probe_quorum_serve.py::test_a_real_serve_opens_a_probe_only_incident_within_two_checks",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
        test = item.nodeid.rsplit("/", 1)[-1].split("[", 1)[0]
        if (
            module in INTEGRATION_MODULES
            or test in INTEGRATION_TESTS
            or "postgresql" in item.nodeid
        ):
            item.add_marker(pytest.mark.integration)
