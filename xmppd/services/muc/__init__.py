"""Multi-user chat (XEP-0045) as a hosted service.

The layout follows Prosody's ``plugins/muc/``: a small room core and one
module per room feature, each a handful of hooks on the room events.

- :mod:`.service` — the hosted domain: rooms by name, creation, persistence,
  the stanzas to the service itself;
- :mod:`.room` — one room: occupants, roles, affiliations, presence and
  message routing (the core knows no feature by name);
- :mod:`.occupant` — an occupant and its sessions;
- :mod:`.hooks` — the room events and the :class:`~.hooks.Feature` base;
- :mod:`.forms` — the data forms of the room configuration;
- :mod:`.admin`, :mod:`.owner` — the moderators' and owners' iq protocols;
- :mod:`.store` — rooms in storage;
- :mod:`.features` — password, members-only, moderated, …: one module each.
"""
