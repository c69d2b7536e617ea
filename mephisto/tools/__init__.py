"""User-facing tools over the operations layer: run-script helpers (`scripts`), the
data browser, and the demo. May import every layer below."""
