"""shardline: Kinesis -> Gearman stage workers -> S3 -> Redshift COPY, exactly once."""

__version__ = "0.1.0"
