"""bundle/training/data.py: the training split (the synthetic monitor stays in training) and the learning-rate
policy."""

from __future__ import annotations


def test_synthetic_monitor_stays_in_training(demo_root):
    from bundle.training.data import training_split

    split = training_split(demo_root, val_fraction=0.25, seed=0)
    train = {e["image"] for e in split["training"]}
    monitor = {e["image"] for e in split["validation"]}
    assert len(train) == 8 and len(monitor) == 2 and monitor <= train  # every healthy image trains
    assert sorted(e["label"] for e in split["validation"]) == [0, 0, 1, 1]
    held = training_split(demo_root, val_fraction=0.25, seed=0, hold_out=True)
    assert len(held["training"]) == 6 and not ({e["image"] for e in held["training"]} & monitor)
