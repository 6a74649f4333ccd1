"""The command line under hostile and careless input (issue 10): every case ends in exit code 0 or
2 with at most one line on stderr, never a traceback, a payload run, a stray file or temporary
litter. A bounded run here; ``python benchmarks/fuzz_cli.py --cases 5000`` runs the long one."""

from __future__ import annotations

import random

import pytest
from cli_fuzz import FuzzBench
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return FuzzBench(tmp_path_factory.mktemp("fuzz"))


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_cli_never_crashes_leaks_or_runs_a_payload(bench, seed, monkeypatch):
    monkeypatch.chdir(bench.dir)  # a write to the working directory would show as a stray file
    case = bench.case(random.Random(seed))
    outcome = bench.check(case)
    assert outcome.problems == [], (case.kind, [str(a) for a in case.argv], outcome.result.err[-600:])
