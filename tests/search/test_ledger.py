"""The ledger's record format: one result attribute per child, older ledgers still read."""

from __future__ import annotations

from mnas.trial import Trial
from search.ledger import RESULT, Ledger


def _scored(number: int) -> Trial:
    return Trial(number, "a-b", (1, 2), accuracy=0.7, latency_ms=4.5, reward=0.6,
                 params=1234, macs=5678, target_ms=5.0, measurement={"median_ms": 4.5},
                 train_seconds=1.25, measure_seconds=0.5, meta={"rank": 3})


def test_a_scored_child_is_one_result_attribute_and_reads_back_whole(tmp_path):
    led = Ledger(tmp_path / "l.db")
    n = led.open("1:0", (1, 2), "a-b", {"rank": 3})
    led.record(_scored(n))
    (ft,) = led.study.get_trials()
    assert set(ft.user_attrs) == {"slot", "choices", "arch", "meta", RESULT}
    (t,) = Ledger(tmp_path / "l.db").trials()       # reopened from disk
    want = _scored(n)
    got = (t.accuracy, t.latency_ms, t.reward, t.params, t.macs, t.target_ms,
           t.measurement, t.train_seconds, t.measure_seconds, t.meta, t.choices, t.arch)
    assert got == (want.accuracy, want.latency_ms, want.reward, want.params, want.macs,
                   want.target_ms, want.measurement, want.train_seconds,
                   want.measure_seconds, want.meta, want.choices, want.arch)


def test_failed_child_keeps_its_reason(tmp_path):
    led = Ledger(None)
    n = led.open("1:0", (0,), "x")
    led.record(Trial(n, "x", (0,), state="failed", reason="latency: boom", target_ms=5.0))
    (t,) = led.trials()
    assert (t.state, t.reason, t.reward, t.target_ms) == ("failed", "latency: boom", None, 5.0)


def test_ledgers_written_one_attribute_per_field_still_read(tmp_path):
    led = Ledger(tmp_path / "old.db")
    n = led.open("1:0", (1, 2), "a-b")
    tid = led._trial_id(n)
    for k, v in {"reward": 0.6, "params": 99, "target_ms": 10.0, "reason": "",
                 "meta": {"old": True}}.items():      # the format before RESULT
        led._storage.set_trial_user_attr(tid, k, v)
    led.study.tell(n, [0.7, 4.5])
    (t,) = Ledger(tmp_path / "old.db").trials()
    assert (t.reward, t.params, t.target_ms, t.meta) == (0.6, 99, 10.0, {"old": True})
