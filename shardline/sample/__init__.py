"""Sample traffic, for the demo, tests, benchmarks and trying the pipeline out: realistic
seeded page views (``events``, with the simulated site in ``traffic``), malformed records
(``malformed``), the reference event rules a reader must match (``event_rules``), and the
``shardline produce`` command (``produce_cli``) that puts them through the producer library.
Nothing in the producer library or the pipeline's data path imports from here.
"""
