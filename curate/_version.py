"""The package version: part of every recipe id (``curate.store.recipe_id``)."""

__version__ = "0.1.0"
