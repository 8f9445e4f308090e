"""Publishing: the serving bundle written to Redis."""
