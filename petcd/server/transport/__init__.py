"""The raft peer transport: long-lived TCP connections that carry raft messages between members.

Each member dials every peer it has messages for and keeps that one connection
open; the connection carries only this member's messages to that peer (the
peer's replies come back on the connection the peer dials). Snapshots travel on
a short-lived connection of their own, so tens of megabytes of snapshot never
sit in front of a heartbeat.

The package:

- ``wire``: the wire format (handshake, framing, codec, the bounds on what a
  peer may send) as pure functions, tested without sockets;
- ``peer``: one remote member as the sender sees it, the outbound state
  machine (bounded queue, dial, backoff, redial, snapshot sends);
- ``inbound``: the acceptor's side of a connection;
- ``call_wire`` and ``calls``: call connections, requests with answers
  between members (what a follower asks its leader: petcd/server/leader_client.py;
  the prober's pings, timed into etcd_network_peer_round_trip_time_seconds),
  one long-lived connection per pair carrying many calls at once, bounded on
  both sides (see calls.py's docstring);
- ``peer_transport``: ``PeerTransport``, what the server uses.

The member-list request a joining member makes lives with the join code
(petcd/server/join.py). URLs are parsed by petcd/server/urls.py.

Guarantees:

- ``send`` never blocks and never queues without bound: per peer at most
  ``max_queue_messages`` messages / ``max_queue_bytes`` bytes wait while the
  connection is coming up or the socket is backed up; beyond that, and
  whenever the peer is down, messages are dropped and ``on_unreachable`` is
  called (at most once per 100 ms per peer). Raft retransmits what was lost.
- messages to one peer leave in the order they were sent, and the messages
  of one ``send`` call for one peer go out in one write.
- received messages are handed to ``on_message`` in the order they were sent
  on each connection; a malformed frame closes that connection only, with a
  logged reason.
- what a peer sends is bounded before it is buffered or parsed (see
  ``wire.read_frame``): a frame must start with a known
  message type; a snapshot frame may be up to 4 GiB, a MsgApp or MsgProp up
  to ``max_message_bytes`` (64 MiB by default) holding at most
  MAX_ENTRIES_PER_MESSAGE entries and no snapshot, any other message 64 KiB;
  every message's ``from`` must be the member that opened the connection
  (but on what followers forward: a MsgProp or MsgReadIndex names the member
  that made it, which a follower that just lost its leadership forwards
  again, a MsgTransferLeader its transferee), and that member is neither 0
  nor this member. Senders this member does not know are let in: a
  member that is behind does not yet know the members added since, and must
  still hear from a leader among them. What is well-formed on the wire but
  impossible for raft (a term near 2**64, say) is raft's to ignore
  (petcd/raft/bounds.py).
- ``on_unreachable`` is called from a fresh loop callback, never from inside
  ``send``, so the caller may step raft from it.
- each MsgSnap ends in exactly one ``on_snapshot_status(to, ok)``: True once
  the receiver has acked it, False on any failure (no connection, hang-up,
  the receiver's handler raised, timeout); none if the peer is removed or the
  transport stopped meanwhile.
- snapshot data is neither copied on the sending side nor run through
  protobuf on either side (see wire.snapshot_frame and wire.decode_snapshot); it is
  written in 1 MiB slices, so a big snapshot does not stall the loop.
"""

from petcd.server.transport.calls import CallFailed, CallTimeout
from petcd.server.transport.peer_transport import (
    DEFAULT_QUEUE_BYTES,
    DEFAULT_QUEUE_MESSAGES,
    Backlog,
    PeerTransport,
)
from petcd.server.transport.wire import (
    CALL_MAGIC,
    DEFAULT_MAX_MESSAGE_BYTES,
    HANDSHAKE_SIZE,
    MAGIC,
    MEMBERS_MAGIC,
    SNAP_ACK,
    BadURLError,
    FrameError,
    TransportError,
)

__all__ = [
    "CALL_MAGIC",
    "CallFailed",
    "CallTimeout",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_QUEUE_BYTES",
    "DEFAULT_QUEUE_MESSAGES",
    "HANDSHAKE_SIZE",
    "MAGIC",
    "MEMBERS_MAGIC",
    "SNAP_ACK",
    "Backlog",
    "BadURLError",
    "FrameError",
    "PeerTransport",
    "TransportError",
]
