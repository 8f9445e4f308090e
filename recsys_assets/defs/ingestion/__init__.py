"""Raw RetailRocket files into DuckDB: events by day, category tree, properties, catalog."""
