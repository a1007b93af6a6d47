"""A local server that speaks Finnhub's WebSocket protocol: the platform's default feed.

Synthetic trades (``market``), the protocol's subscribe/unsubscribe rules (``protocol``),
replay of recorded frames (``replay``) and fault injection for tests (``faults``), served
by ``server`` and started by ``finpipe-simulator`` (``cli``).
"""
