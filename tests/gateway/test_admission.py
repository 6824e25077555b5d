from streamer.config import ServerConfig
from streamer.gateway.admission import Admission
from streamer.gateway.pool.base import PoolStats, WorkerInfo


def stats(ready: int) -> PoolStats:
    return PoolStats(kind="test", size=2, ready=ready, queued=0, inflight=0, restarts=0,
                     redispatched=0, poisoned=0, available=True,
                     workers=[WorkerInfo(i, None, i < ready, 0, 0) for i in range(2)])


def test_admits_when_there_is_room():
    a = Admission(ServerConfig(max_sessions=2), lambda: stats(2), lambda: [1.0, 2.0])
    assert a.check(sessions=1) is None


def test_refuses_with_a_reason_for_each_limit():
    cfg = ServerConfig(max_sessions=2, max_backlog_seconds=1.0, max_memory_mb=1.0)
    assert Admission(cfg, lambda: stats(0), list).check(0).reason == "not_ready"
    assert Admission(cfg, lambda: stats(2), list).check(2).reason == "max_sessions"
    backlog = Admission(cfg, lambda: stats(2), lambda: [1.5, 1.0]).check(0)
    assert backlog.reason == "backlog" and "1.2 s of audio behind" in backlog.message
    memory = Admission(cfg, lambda: stats(2), list).check(0)  # this process alone is > 1 MB
    assert memory.reason == "memory" and "over the limit of 1 MB" in memory.message
