"""Golden outputs of the stage path: a committed corpus of input records and the staged CSV
bytes and dead letters today's code makes of them (regen.py writes both; the test is
tests/unit/test_stage_golden.py)."""
