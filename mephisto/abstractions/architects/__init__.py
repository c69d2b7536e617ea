"""Architect plugins, one module each: `local` (in-process), `mock`, `remote` (a router
run elsewhere), `ec2` and `heroku` (which start that router; `provisioned.py` is their
shared contract). May import everything below `operations`."""
