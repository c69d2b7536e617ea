"""`inhouse`: the requester's own participants, invited with signed, expiring links.

- `provider`: the crowd provider (`InhouseProvider`) and its records;
- `tokens`: participant tokens and the requester's signing secret;
- `links`: participant links for a run or a server URL;
- `inhouse_wrap_crowd_source.js`: the page shim reading `?token=`.
"""

from mephisto.abstractions.providers.inhouse.links import (
    DEFAULT_EXPIRY,
    ParticipantLink,
    anonymous_participants,
    links_for_requester,
    links_for_run,
    make_links,
)
from mephisto.abstractions.providers.inhouse.provider import InhouseProvider, InhouseProviderArgs
from mephisto.abstractions.providers.inhouse.tokens import PROVIDER_TYPE, LinkClaims, SigningKey

__all__ = [
    "DEFAULT_EXPIRY",
    "PROVIDER_TYPE",
    "InhouseProvider",
    "InhouseProviderArgs",
    "LinkClaims",
    "ParticipantLink",
    "SigningKey",
    "anonymous_participants",
    "links_for_requester",
    "links_for_run",
    "make_links",
]
