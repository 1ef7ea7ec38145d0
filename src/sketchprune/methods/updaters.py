"""The dynamic sparse training updaters (``static``, ``set``, ``rigl``, ``dsr``, ``deepr``, ``dns``) join
the registry through this import: they live, and register once each, in :mod:`sketchprune.dst`
(kind ``update``: they move a mask while the network trains; ``dst=`` in train / run / sweeps)."""

import sketchprune.dst  # noqa: F401  (registers the updaters)
