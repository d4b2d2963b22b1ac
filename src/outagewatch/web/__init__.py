"""The HTTP side of `serve`: JSON API, pages, feeds, metrics."""
