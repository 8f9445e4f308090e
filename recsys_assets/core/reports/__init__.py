"""What the service's web pages show: documents (JSON-ready dicts) and PNG charts, built from
the warehouse's tables. Pure code (polars, matplotlib); the ``ui_reports`` asset publishes it."""
