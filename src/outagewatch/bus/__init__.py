"""Buses: how accepted events travel from the API to the pipeline that counts them."""
