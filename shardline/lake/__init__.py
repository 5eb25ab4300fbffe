"""The lake: Apache Iceberg tables on S3 holding the rows the warehouse holds (docs/lake.md)."""
