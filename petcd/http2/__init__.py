"""petcd's client port on the wire: HTTP/2 and gRPC written for the calls
etcd clients make. ``frames`` (constants, frame and HPACK output helpers),
``connection`` (the sans-I/O HTTP/2 state machine), ``grpc`` (message
framing, statuses, metadata, timeouts), ``server`` (the listener and the
asyncio protocol that dispatches calls to registered handlers)."""
