"""The Adam schedule on a network (``surgesim.workloads.probe_schedule``): B_t and lr_t follow the
probe's lr*_T(B) by the rule written out by hand (an injected probe with a known peak), and the
real probe runs on a trainer's state."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from surgesim.workloads import protocol  # noqa: E402
from surgesim.workloads import schedules as ws  # noqa: E402
from surgesim.workloads.probe import TensorData  # noqa: E402
from surgesim.workloads.probe_schedule import probe_trainer, probe_window  # noqa: E402

TINY = protocol.RunSpec(workload="cnn", lr=0.5, batch_size=4, seed=1, targets=(2.2,), further_steps=0, max_steps=30,
                        eval_examples=32)  # fmt: skip
LR_MAX = 2e-3


def _curve(peak):
    """eq 2 with its peak at ``peak``: lr*(B) = LR_MAX / (1/2 (sqrt(peak / B) + sqrt(B / peak)))."""
    return lambda b: LR_MAX / (0.5 * (math.sqrt(peak / b) + math.sqrt(b / peak)))


def _fake_probe(peak, calls):
    def probe(trainer, batch_sizes, seed, lr0):
        calls.append(list(batch_sizes))
        return {int(b): _curve(peak)(b) for b in batch_sizes}

    return probe


@pytest.mark.parametrize("c", [1.0, 2.0])
def test_probe_rule_moves_to_c_times_the_peak_of_lr_star(c):
    rule = ws.ScheduleRule("probe", interval=3, batch_min=2, batch_max=64, batch_start=4)
    calls: list = []
    t = ws.ScheduleTrainer(TINY, rule, c, probe=_fake_probe(16, calls))
    for _ in range(12):
        t.step()
    lr = _curve(16)
    if c == 1.0:  # windows one octave apart around B_t: 2,4,8 (peak at the end 8), 4,8,16 (end 16), 8,16,32
        assert calls == [[2, 4, 8], [4, 8, 16], [8, 16, 32], [8, 16, 32]]  # (16 exactly: symmetric in log B)
        want_b = [8] * 3 + [16] * 9
    else:  # c = 2: B_t = 2 x 8, then 2 x 16 (the window 8,16,32's peak), then 2 x 16 again
        assert calls == [[2, 4, 8], [8, 16, 32], [16, 32, 64], [16, 32, 64]]
        want_b = [16] * 3 + [32] * 9
    # lr_t = k lr*_T(B_t), flat past the window's ends (B_t = 16 beyond the first window 2, 4, 8)
    want_lr = [TINY.lr * lr(min(b, 8) if i < 3 else b) for i, b in enumerate(want_b)]
    assert t.batch_trace == want_b  # a factor 2 planted in B_t = c B_peak fails here
    assert t.lr_trace == pytest.approx(want_lr, rel=1e-12)
    assert [g["lr"] for g in t.optimizer.param_groups] == pytest.approx([t.lr_trace[-1]])
    assert t.probes == 4 and t.examples[-1] == sum(want_b)


def test_probe_window_stays_inside_the_range():
    assert probe_window(8, 2, 64) == [4, 8, 16]
    assert probe_window(2, 2, 64) == [2, 4, 8] and probe_window(64, 2, 64) == [16, 32, 64]
    assert probe_window(3, 2, 4) == [2, 3, 4]


def test_probe_variants_and_rule_on_a_network():
    vs = ws.default_variants(["constant", "probe"], [1e-3], [4, 8, 16], multipliers=[1.0, 2.0])
    probe = [v for v in vs if v.schedule == "probe"]
    assert [v.label for v in probe] == ["c=1", "c=2"] and probe[0].lrs == (1.0,)
    assert probe[0].rule.batch == "probe" and probe[0].rule.start_batch(1.0) == 8
    assert "probe" not in {v.schedule for v in ws.default_variants(["constant"], [1e-3], [4, 8])}


def test_probe_trainer_measures_lr_star_at_the_trainer_state():
    torch.manual_seed(0)
    x, y = torch.randn(256, 3), torch.randint(0, 2, (256,))
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[:16]), y[:16]).backward()
        opt.step()
    tr = SimpleNamespace(model=model, loss_fn=torch.nn.functional.cross_entropy, optimizer=opt,
                         probe=(x[:64], y[:64]), data=TensorData(x, y))  # fmt: skip
    before = [p.detach().clone() for p in model.parameters()]
    lrs = probe_trainer(tr, [2, 8, 32], seed=0, lr0=1e-2)
    assert sorted(lrs) == [2, 8, 32] and all(math.isfinite(v) and v > 0 for v in lrs.values())
    assert lrs == probe_trainer(tr, [2, 8, 32], seed=0, lr0=1e-2)  # deterministic in (state, seed)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # the run is untouched


def test_constant_spec_of_a_probe_task_starts_at_batch_start():
    rule = ws.ScheduleRule("probe", interval=5, batch_max=16, batch_start=4)
    spec = dataclasses.replace(TINY, batch_size=rule.start_batch(1.0))
    assert spec.batch_size == 4
