"""Venue adapters behind one port (:class:`tradebook.venues.base.VenuePort`).

Broker SDKs are imported only inside their own adapter module; adapters never import
each other. The paper venue (:mod:`tradebook.venues.paper`) is an adapter like the others.
"""
