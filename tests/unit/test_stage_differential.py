"""The stage path's two definitions of a row held to each other: the generated fast path
(``TablePlan.row_line``, the spec-compiled accept test) against the exact path
(``TablePlan.exact_line``, the column-by-column checks that define every reason), on large
seeded corpora (tests/stage_corpus.py): same CSV bytes, same rows, same dead letters and
reasons. What the output must be, byte for byte, is held by the goldens
(tests/unit/test_stage_golden.py).
"""
from __future__ import annotations

import json
import random
import traceback

import pytest

from shardline import codec
from shardline.tables import PAGE_VIEWS
from shardline.transforms.page_views import page_view
from shardline.workers.rows import RowBuilder
from tests import stage_corpus as corpus


def exact_builder(builder: RowBuilder) -> RowBuilder:
    """The same builder with the fast path off: every row through ``exact_line``."""
    for plan in builder.plans:
        plan.fast_ok = False
    return builder


def _builders(transform=page_view) -> tuple[RowBuilder, RowBuilder]:
    fast = RowBuilder(PAGE_VIEWS, transform)
    assert fast.plans[0].row_line is not None  # page_views has a fast path to test
    return fast, exact_builder(RowBuilder(PAGE_VIEWS, transform))


def _assert_same(records: list[codec.Record], fast: RowBuilder, exact: RowBuilder,
                 shard: str = corpus.SHARD, batch: int = 500) -> None:
    for i in range(0, len(records), batch):
        b = codec.Batch("events", shard, records[i:i + batch])
        got, want = fast.build(b, corpus.STAGED_AT), exact.build(b, corpus.STAGED_AT)
        assert got.rows == want.rows
        assert got.dead_letters == want.dead_letters
        if got.csv_text != want.csv_text:  # name the first differing line, not a 100 KB diff
            for g, w in zip(got.csv_text.splitlines(True), want.csv_text.splitlines(True),
                            strict=False):
                assert g == w
        assert got.csv_text.encode("utf-8", "surrogatepass") == \
            want.csv_text.encode("utf-8", "surrogatepass")


def test_the_exact_builder_takes_no_fast_path(monkeypatch):
    """Guards the test itself: with fast_ok off, row_line is never called."""
    fast, exact = _builders()
    monkeypatch.setattr(exact.plans[0], "row_line", None)
    datas = corpus.producer_datas(300, seed=4)
    _assert_same(corpus.records(datas), fast, exact)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_producer_corpus_with_every_malformed_kind(seed):
    _assert_same(corpus.records(corpus.producer_datas(6000, seed)), *_builders())


def test_hostile_and_awkward_text_in_every_field():
    _assert_same(corpus.records(corpus.hostile_datas()), *_builders())


def test_json_that_parsers_disagree_on():
    _assert_same(corpus.records(corpus.json_edge_datas()), *_builders())


def test_seeded_byte_mutations_of_good_records():
    _assert_same(corpus.records(corpus.mutated_datas(4000)), *_builders())


def test_odd_kinesis_metadata():
    fast, exact = _builders()
    _assert_same(corpus.odd_metadata_records(), fast, exact)
    goods = [json.dumps(e).encode() for e in corpus.good_events(5, seed=9)]
    for shard in corpus.ODD_SHARDS:
        _assert_same(corpus.records(goods), fast, exact, shard=shard)


def test_plugin_transforms_returning_odd_values_in_every_column():
    """The column checks and the CSV line alone: the same outputs from both paths."""
    rng = random.Random(31)
    good = page_view(corpus.good_events(1, seed=31)[0])
    columns = [c.name for c in PAGE_VIEWS.columns][:-5]
    odd = corpus.odd_values()
    variants: list = []
    for _ in range(3000):
        out = dict(good)
        for _ in range(rng.choice((0, 1, 1, 1, 2, 3))):
            out[rng.choice(columns)] = rng.choice(odd)
        r = rng.random()
        if r < 0.02:
            out.pop(rng.choice(columns))
        elif r < 0.03:
            out["unknown_column"] = "x"
        elif r < 0.035:
            out = ["not", "a", "dict"]
        elif r < 0.04:
            out = ValueError("plugin says no " + "x" * 600)
        variants.append(out)

    def plugin(event):
        out = variants[event["case"]]
        if isinstance(out, Exception):
            raise out
        return dict(out) if isinstance(out, dict) else out

    datas = [json.dumps({"case": i}).encode() for i in range(len(variants))]
    _assert_same(corpus.records(datas), *_builders(plugin))


def test_a_traceback_through_the_generated_code_shows_its_line():
    plan = RowBuilder(PAGE_VIEWS, page_view).plans[0]
    out = page_view(corpus.good_events(1, seed=1)[0])
    with pytest.raises(TypeError) as info:
        plan.row_line(out, None)  # the worker values' tuple missing
    text = "".join(traceback.format_exception(info.value))
    assert "generated row_line" in text and "<string>" not in text
    assert "    values = [v0, v1, v2," in text  # the generated line that raised
