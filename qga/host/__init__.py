"""Host-side tools: the protocol client, ``qga-client`` and the man page generator.

Nothing in the in-guest agent imports this package.
"""
