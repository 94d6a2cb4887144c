"""The quick start's demo lung maps under a PBTSeg change: which maps change, and their Dice against the true lungs.

Writes (or reuses) the demo dataset that ``configs/train.json`` and the quick start use (``write_demo_dataset`` with
its defaults: 200 healthy training images, 25 + 25 test images, 256 px, seed 0) in ``--data`` (default
``data/demo``), computes every image's lung map as stored (the 8-bit PNG read back) with our PBTSeg and with a
"before" version: ``--baseline FILE`` (another version of ``bundle/lungs/pbtseg.py``, e.g. ``git show
<commit>:bundle/lungs/pbtseg.py > /tmp/before.py``) and/or ``--before-params JSON`` (``PBTSegParams`` fields for the
"before" maps, e.g. ``'{"medial_fill": 0}'``). It prints how many maps change in each split and, over the changed
training maps, the per-lung Dice against the phantoms' true lungs before and after.

The training maps decide where the synthetic anomalies go, so a change to any of them changes the quick start's
weights: its figures must then be measured again. Test maps change only the lung-restricted scores and masks.

Run: ``python benchmarks/demo_lung_maps.py [--data data/demo] [--baseline FILE] [--before-params JSON]``
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_pbtseg import load_baseline  # noqa: E402

from bundle.data.demo import _phantom, _plan, _read_manifest, write_demo_dataset  # noqa: E402
from bundle.evaluation.lung_dice import zone_dice  # noqa: E402
from bundle.io import read_image  # noqa: E402
from bundle.lungs.pbtseg import PBTSegParams, pbtseg  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "demo")
    parser.add_argument("--baseline", type=Path, default=None, help="another version of bundle/lungs/pbtseg.py")
    parser.add_argument("--before-params", type=json.loads, default={}, help="PBTSegParams fields, as JSON")
    args = parser.parse_args()
    fields = set(PBTSegParams.__dataclass_fields__)
    if not isinstance(args.before_params, dict) or set(args.before_params) - fields:
        raise SystemExit(f"--before-params {args.before_params}: expected a JSON object of PBTSegParams fields")
    if args.baseline is None and not args.before_params:
        raise SystemExit("nothing to compare: give --baseline FILE and/or --before-params JSON")
    before = load_baseline(args.baseline) if args.baseline else pbtseg
    root = write_demo_dataset(args.data)
    made = _read_manifest(root)  # the parameters the dataset was written with: its plan and its phantoms
    changed, totals, dice_before, dice_after = Counter(), Counter(), [], []
    for rel, seed, diseased in _plan(made["n_train"], made["n_test_healthy"], made["n_test_diseased"], made["seed"]):
        split = rel.split("/")[0] + "/" + rel.split("/")[1]
        image = read_image(root / rel)[0]
        old, new = before(image, **args.before_params)[0], pbtseg(image)[0]
        totals[split] += 1
        if np.array_equal(old, new):
            continue
        changed[split] += 1
        if split.startswith("train"):
            truth = _phantom(made["size"], seed, diseased).lung
            dice_before += list(zone_dice(old, truth)[:, 0])  # the whole-lung Dice of lungs 1 and 2
            dice_after += list(zone_dice(new, truth)[:, 0])
    print(f"Demo lung maps ({root}): ours against {args.baseline or 'ours'} {args.before_params or ''}")
    for split in totals:
        print(f"  {split:<16} {changed[split]:>4} of {totals[split]} maps change")
    if dice_before:
        b, a = np.array(dice_before), np.array(dice_after)
        print(
            f"  changed training maps, per-lung Dice against the true lungs: mean {b.mean():.3f} -> {a.mean():.3f}, "
            f"lowest {b.min():.3f} -> {a.min():.3f}; {int((a > b).sum())} lungs gain, {int((a < b).sum())} lose"
        )


if __name__ == "__main__":
    main()
