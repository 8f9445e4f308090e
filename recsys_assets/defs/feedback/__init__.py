"""The online loop: feedback posted to the service, consumed from Redis, reported as an A/B test."""
