"""The lake loader: staged files into Apache Iceberg tables (``shardline lake-loader``)."""
