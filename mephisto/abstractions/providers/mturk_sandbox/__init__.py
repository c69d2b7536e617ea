"""Mephisto's package path for the `mturk_sandbox` provider; the real home is
`mephisto.abstractions.providers.mturk.mturk_provider` (the sandbox is mturk with a
flag)."""
