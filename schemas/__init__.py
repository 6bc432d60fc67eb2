"""On-disk contracts of a LongVid build: config, Parquet schemas, file layout, sample JSON.

Everything that names a column, a file or a folder is defined here once; the rest of the code imports it.
"""
