"""bundle/training/schedule.py: the learning-rate policy."""

from __future__ import annotations

import pytest
import torch


def test_lr_policy():
    from bundle.training.schedule import LRPolicy

    const = LRPolicy("constant", num_iterations=100)
    assert [const(i) for i in (0, 50, 99, 500)] == [1.0, 1.0, 1.0, 1.0]
    cos = LRPolicy("cosine", num_iterations=100, warmup_iterations=10)
    assert cos(0) == pytest.approx(0.1, abs=1e-3) and cos(9) == pytest.approx(0.980, abs=0.001)
    assert cos(50) == pytest.approx(0.5, abs=1e-6) and cos(100) == pytest.approx(0.0, abs=1e-9)
    assert all(cos(i) >= cos(i + 1) for i in range(10, 100))
    with pytest.raises(ValueError, match="lr_policy must be one of"):
        LRPolicy("step")
    # the scheduler state (the policy's fields) survives a checkpoint round trip
    opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cos)
    for _ in range(30):
        opt.step()
        sched.step()
    opt2 = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, LRPolicy("cosine", num_iterations=100, warmup_iterations=10))
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr() == sched.get_last_lr()
