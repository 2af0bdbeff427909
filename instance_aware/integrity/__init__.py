"""Helpers of the data_integrity filter: digests computed while data
streams, download bodies judged once, and what Glance's import plugins
do to staged data."""
