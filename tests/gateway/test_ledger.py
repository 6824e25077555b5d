"""The ledger: every planned output settled exactly once, released in order, never left open."""

import pytest

from streamer.gateway.ledger import Ledger, LedgerError, Outgoing


def make() -> tuple[Ledger, list[str]]:
    sent: list[str] = []
    return Ledger(lambda out: sent.append(out.text)), sent


def test_outputs_are_released_in_plan_order_per_channel():
    ledger, sent = make()
    a, b, c = ledger.plan(0), ledger.plan(0), ledger.plan(1)
    ledger.settle(b, Outgoing("b"))
    ledger.settle(c, Outgoing("c"))  # another channel: not held back by channel 0
    assert sent == ["c"]
    ledger.settle(a, Outgoing("a"))
    assert sent == ["c", "a", "b"]
    assert ledger.open == 0 and ledger.waiting == 0


def test_settling_twice_is_a_ledger_error():
    ledger, _ = make()
    slot = ledger.plan(0)
    ledger.settle(slot, Outgoing("x"))
    with pytest.raises(LedgerError, match="settled twice"):
        ledger.settle(slot, Outgoing("y"))


def test_a_withdrawn_output_releases_what_waits_behind_it():
    ledger, sent = make()
    a, b = ledger.plan(0, seconds=0.5), ledger.plan(0, seconds=0.25)
    assert ledger.backlog_seconds == 0.75
    ledger.settle(b, Outgoing("b"))
    ledger.settle(a, None)
    assert sent == ["b"] and ledger.backlog_seconds == 0.0


def test_settle_by_settles_with_the_fallback_when_building_raises():
    ledger, sent = make()
    slot = ledger.plan(0)
    ledger.settle_by(slot, lambda: Outgoing(str({1} | {"x": 1})),
                     lambda exc: Outgoing(f"error: {type(exc).__name__}"))
    assert sent == ["error: TypeError"] and ledger.open == 0


def test_settle_by_settles_with_nothing_when_the_fallback_raises_too():
    ledger, sent = make()
    first, second = ledger.plan(0), ledger.plan(0)
    ledger.settle(second, Outgoing("second"))

    def broken(exc: Exception) -> Outgoing:
        raise RuntimeError("the fallback fails as well")

    with pytest.raises(RuntimeError):
        ledger.settle_by(first, lambda: 1 / 0, broken)  # type: ignore[arg-type,return-value]
    assert ledger.open == 0
    assert sent == ["second"]  # the slot was filled: nothing behind it is held forever


def test_close_drops_what_is_open_and_ignores_late_answers():
    ledger, sent = make()
    slot = ledger.plan(0)
    assert ledger.close() == 1
    ledger.settle(slot, Outgoing("late"))
    assert sent == [] and ledger.open == 0
    with pytest.raises(LedgerError, match="after the stream was closed"):
        ledger.plan(0)
