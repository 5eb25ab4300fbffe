"""The staged CSV rules: what the stage worker writes is what COPY reads back."""
from __future__ import annotations

import csv
import io
from datetime import datetime

from shardline import csvformat
from shardline.sample.traffic import HOSTILE
from tests.csvcheck import parse_csv

NASTY = ['plain', 'quote " inside', 'comma, inside', 'tab\tinside', 'back\\slash',
         'new\nline', 'cr\r\nlf', 'ctl \x01\x1f\x7f', 'emoji 🚀', 'ünïcödé', '', '\\N', 'NULL']


def test_every_non_null_value_is_quoted_and_null_is_bare():
    line = csvformat.format_row(["a", None, 5])
    assert line == '"a",\\N,"5"\n'


def test_nasty_values_survive_a_csv_reader():
    text = "".join(csvformat.format_row([v, None]) for v in NASTY)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert [r[0] for r in rows] == NASTY
    # the bare \N marker is distinguishable from the quoted text "\N"
    assert text.count('\\N\n') == len(NASTY) and '"\\N"' in text


def test_hostile_values_are_plain_quoted_text():
    """SQL / formula / COPY look-alikes: each written as one quoted field, read back as is."""
    text = "".join(csvformat.format_row([v, None, v]) for v in HOSTILE)
    assert parse_csv(text) == [[v, None, v] for v in HOSTILE]
    assert '"\\N",\\N,"\\N"\n' in text and '"\\.",\\N,"\\."\n' in text


def test_timestamps_are_utc_text_with_microseconds():
    assert (csvformat.format_value(datetime(2026, 1, 2, 3, 4, 5, 6))
            == '"2026-01-02 03:04:05.000006"')


def test_copy_options_match_the_rules():
    assert "NULL '\\N'" in csvformat.POSTGRES_COPY_OPTIONS
    assert "FORMAT csv" in csvformat.POSTGRES_COPY_OPTIONS
    rs = csvformat.REDSHIFT_COPY_OPTIONS
    assert "CSV" in rs and "NULL AS '\\\\N'" in rs and "GZIP" in rs and "ESCAPE" not in rs
