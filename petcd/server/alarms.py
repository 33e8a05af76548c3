"""Active alarms (NOSPACE, CORRUPT) per member, persisted in the backend's
`alarm` bucket so they survive restarts, as etcd keeps them."""

from __future__ import annotations

from collections.abc import Iterable

from petcd.proto import rpc_pb2

ALARM_BUCKET = "alarm"


class AlarmStore:
    """The active alarms as (member id, alarm type) pairs; the applier
    changes them and the backend's alarm bucket mirrors them."""

    def __init__(self) -> None:
        self._active: set[tuple[int, rpc_pb2.AlarmType]] = set()

    def load(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        """Take the alarm bucket's content as the whole truth: alarms not in
        it are cleared (a backend installed from the leader replaces ours,
        with the alarms the cluster disarmed meanwhile gone)."""
        active: set[tuple[int, rpc_pb2.AlarmType]] = set()
        for key, _ in items:
            am = rpc_pb2.AlarmMember()
            am.ParseFromString(key)
            active.add((am.memberID, am.alarm))
        self._active = active

    @staticmethod
    def key(member_id: int, alarm: rpc_pb2.AlarmType) -> bytes:
        return rpc_pb2.AlarmMember(memberID=member_id, alarm=alarm).SerializeToString()

    def activate(self, member_id: int, alarm: rpc_pb2.AlarmType) -> bool:
        """True when the alarm was not active before."""
        if (member_id, alarm) in self._active:
            return False
        self._active.add((member_id, alarm))
        return True

    def deactivate(self, member_id: int, alarm: rpc_pb2.AlarmType) -> bool:
        if (member_id, alarm) not in self._active:
            return False
        self._active.discard((member_id, alarm))
        return True

    def is_active(self, alarm: rpc_pb2.AlarmType) -> bool:
        return any(a == alarm for _, a in self._active)

    def list(self, alarm: rpc_pb2.AlarmType = rpc_pb2.NONE) -> list[rpc_pb2.AlarmMember]:
        return [
            rpc_pb2.AlarmMember(memberID=m, alarm=a)
            for m, a in sorted(self._active)
            if alarm == rpc_pb2.NONE or a == alarm
        ]
