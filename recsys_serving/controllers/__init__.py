"""One Litestar controller per domain; all of them delegate to :class:`RecommenderService`."""
