"""Collect human data through crowdsourcing. Importing this package does no I/O."""

__version__ = "0.1.0"
