"""Blueprint plugins, one module each. May import everything below `operations`."""
