"""XEP-0060 publish-subscribe, shared by the pubsub service and PEP.

``core`` is the pure model (nodes, items, affiliations, subscriptions, access
and publish models, configuration, the error of every refusal); ``store``
persists one core service through the storage API; the protocol modules turn
XML into core calls and core notifications into XML.
"""
