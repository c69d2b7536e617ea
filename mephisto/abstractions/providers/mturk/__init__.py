"""The `mturk` and `mturk_sandbox` crowd providers (Amazon Mechanical Turk, boto3).

The plugins live in `mturk_provider.py` (Mephisto's path); beside it: `client.py` (the
boto3 client, its injectable factory, MTurk's errors), `credentials.py` (AWS profiles),
`hits.py` (HIT type, HITs, open units), `qualifications.py` (requirements and mirrored
qualification types) and the page shim `wrap_crowd_source.js`. Importing this package
imports no boto3. May import everything below `operations`.
"""
