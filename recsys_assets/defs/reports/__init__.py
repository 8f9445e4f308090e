"""Reports for people: the service's web pages (home, analytics, experiments) published to Redis."""
