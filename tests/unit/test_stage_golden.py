"""The stage path against its goldens (tests/golden/): the committed corpus of input records
staged by today's code must give the committed CSV bytes and dead letters, byte for byte.

A failure means a staging rule, a reason or the CSV format changed. If that is the intent,
run ``python -m tests.golden.regen`` and commit the reviewed diff of tests/golden/expected/.
"""
from __future__ import annotations

import pytest

from tests.golden import regen

CASES = sorted(p.stem for p in regen.CORPUS.glob("*.jsonl"))


def _assert_bytes(name: str, got: bytes) -> None:
    want = (regen.EXPECTED / name).read_bytes()
    if got != want:  # name the first differing line, not a 1 MB diff
        for i, (g, w) in enumerate(zip(got.splitlines(True), want.splitlines(True),
                                       strict=False)):
            assert g == w, f"{name} line {i + 1} differs (python -m tests.golden.regen)"
    assert got == want, f"{name}: {len(got)} bytes, golden {len(want)}"


def test_the_corpus_covers_every_case_kind():
    assert len(CASES) >= 7 and (regen.CORPUS / "codec.json").exists()
    expected = {p.name for p in regen.EXPECTED.iterdir()}
    for case in CASES:
        assert f"{case}.dead-letters.jsonl" in expected


@pytest.mark.parametrize("case", CASES)
def test_staged_output_matches_the_goldens(case):
    kind, batches = regen.read_case(regen.CORPUS / f"{case}.jsonl")
    for suffix, body in regen.stage(kind, batches).items():
        _assert_bytes(f"{case}.{suffix}", body)


def test_codec_decode_matches_the_goldens():
    got = regen.outputs_codec()
    _assert_bytes("codec.json", got)
