"""The online half of recsys: a Litestar service that serves what the graph published to Redis.

``redis_layout`` holds the key layout, the encodings, the writer (``publish_bundle``, called by
the Dagster asset ``serving_bundle``) and the reader; ``app`` builds the ASGI application.
This package imports neither Dagster nor torch.
"""
