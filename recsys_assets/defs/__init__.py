"""The Dagster definitions, one folder per domain (its assets, jobs and sensors together).

``recsys_assets.definitions`` loads every module below this package, so an asset, job, schedule
or sensor defined at module level in a domain module is part of the code location with no edit
elsewhere.
"""
