"""Read staged CSV back the way COPY does, to check what the stage worker wrote."""
from __future__ import annotations

import csv
import io

from shardline.csvformat import format_value


def parse_csv(text: str) -> list[list[str | None]]:
    """Parse staged CSV with the csv module, applying the \\N rule: an UNQUOTED \\N is NULL.

    csv.reader gives the same string for ``\\N`` and ``"\\N"``, so walk the raw text
    alongside it to see which fields were quoted.
    """
    rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    out, pos = [], 0
    for row in rows:
        values = []
        for i, field in enumerate(row):
            if text.startswith('"', pos):
                quoted = format_value(field)
                assert text.startswith(quoted, pos), (text[pos:pos + 40], quoted)
                pos += len(quoted)
                values.append(field)
            else:
                assert text.startswith("\\N", pos), f"unquoted non-NULL field at {pos}"
                pos += 2
                values.append(None)
            sep = "," if i < len(row) - 1 else "\n"
            assert text[pos] == sep
            pos += 1
        out.append(values)
    assert pos == len(text)
    return out
