"""Hosted services that are bigger than one component (design.md §11).

A big feature is a small pure core plus one module per sub-feature; each
package here holds one such feature (``pubsub``: XEP-0060 and, over the same
core, XEP-0163 PEP).
"""
