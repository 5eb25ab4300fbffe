"""The stage path as it was before the per-record speed-up (revision d89c0d2): the reference
the differential test (tests/unit/test_stage_differential.py) holds today's code to.

Verbatim copies of that revision's shardline/codec.py, shardline/csvformat.py,
workers/transform.py and workers/rows.py, with only their imports of each other pointed
here. Test code only: nothing in shardline imports it.
"""
