"""The CLI's output, the HTTP API's JSON and the incident JSON on the seed scenarios are
byte for byte what tests/golden/seeds-*.json hold (written by tests/golden_outputs.py from
the reference commit), on both stores: refactors change none of what users see."""

from __future__ import annotations

import orjson
import pytest

from golden_outputs import DB_FOR, GOLDEN, encode, outputs


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.slow
def test_outputs_are_byte_identical_to_the_golden_file(backend: str) -> None:
    want = orjson.loads(GOLDEN[backend].read_bytes())
    got = orjson.loads(encode(outputs(DB_FOR[backend])))
    assert sorted(got) == sorted(want)
    differ = [k for k in want if got[k] != want[k]]
    assert not differ, f"{len(differ)} outputs differ from the golden file, first {differ[0]!r}"
