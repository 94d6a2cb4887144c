"""Training throughput of the default model on this machine: iterations/s and images/s.

Measures, side by side in one run:
- the input pipeline alone (train.json's preprocessing: load, PBTSeg, resize, online ART-ASyn synthesis with
  1-3 variants + healthy copy, collate), in training images per second;
- the training step alone (forward, ART-ASyn loss with bottleneck features, backward, AdamW) on pre-made batches;
- both together (DataLoader feeding the step, as in `monai.bundle run training`).

Usage::

    python benchmarks/bench_training.py [--image_size 256] [--batch_size 4] [--iters 6] [--num_workers 0]
    python benchmarks/bench_training.py --ablation [--workdir runs/ablation] [overrides for both runs ...]

``--ablation`` is the evidence that the method works: it trains twice with the same budget on the demo data,
(a) the full ART-ASyn recipe and (b) plain reconstruction (no synthetic anomalies, global MSE only), evaluates both
with configs/evaluate.json on the demo test set (opacities from a generator independent of the synthesis) and
prints image AUROC, AP and pixel Dice side by side.

The batch holds ``batch_size`` healthy images, each with its healthy copy and 1-3 variants (published: 4 healthy
images, 8-16 images per step). On CPU the thread count is torch's default unless ``--threads`` is given.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset, list_data_collate
from monai.engines import SupervisedTrainer
from monai.utils import set_determinism

REPO = Path(__file__).resolve().parents[1]


PLAIN = ["--anomaly_prob", "0", "--num_variants", "1", "--include_healthy", "false",
         "--loss_weights#local_mse", "0", "--loss_weights#feature", "0", "--loss_weights#dice", "0"]


def ablation(workdir: str, extra: list[str]) -> None:
    """Full loss vs plain reconstruction, same budget, evaluated on the demo test set."""
    import json
    import subprocess
    import sys

    from bundle.data import write_demo_dataset

    work = Path(workdir).absolute()
    dataset = write_demo_dataset(work / "demo")
    common = ["--meta_file", str(REPO / "configs" / "metadata.json"), "--logging_file",
              str(REPO / "configs" / "logging.conf"), "--dataset_dir", str(dataset)]
    rows = {}
    for name, recipe in (("full ART-ASyn loss", []), ("plain reconstruction", PLAIN)):
        root = work / name.split()[0]
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
                        str(REPO / "configs" / "train.json"), "--bundle_root", str(root), *common, *recipe, *extra],
                       check=True, cwd=REPO)
        t_train = time.perf_counter() - t0
        evaluate = f"['{REPO / 'configs' / 'train.json'}','{REPO / 'configs' / 'evaluate.json'}']"
        subprocess.run([sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file", evaluate,
                        "--bundle_root", str(root), *common, *extra], check=True, cwd=REPO)
        metrics = json.loads((root / "eval" / "metrics.json").read_text())
        rows[name] = (metrics, t_train)
    print(f"{'recipe':24s} {'image AUROC':>12s} {'image AP':>9s} {'pixel Dice':>11s} {'train s':>8s}")
    for name, (m, t) in rows.items():
        cells = [m.get(k) for k in ("image_auroc", "image_ap", "pixel_dice")]
        print(f"{name:24s} " + " ".join(f"{'n/a' if v is None else f'{v:.3f}':>{w}s}" for v, w in zip(cells, (12, 9, 11)))
              + f" {t:8.0f}")


def main() -> None:
    import sys

    if "--ablation" in sys.argv:
        argv = [a for a in sys.argv[1:] if a != "--ablation"]
        workdir = "runs/ablation"
        if "--workdir" in argv:
            i = argv.index("--workdir")
            workdir = argv[i + 1]
            del argv[i : i + 2]
        ablation(workdir, argv)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image_size", type=int, default=256)
    ap.add_argument("--batch_size", type=int, default=4)
    ap.add_argument("--iters", type=int, default=6, help="timed training iterations")
    ap.add_argument("--num_workers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    set_determinism(0)

    from bundle.data import write_demo_dataset

    tmp = tempfile.mkdtemp(prefix="bench_training_")
    n_images = max(8, args.batch_size * 3)
    dataset_dir = write_demo_dataset(Path(tmp) / "demo", n_train=n_images, n_test_healthy=0, n_test_diseased=0)
    parser = ConfigParser()
    parser.read_config(str(REPO / "configs" / "train.json"))
    parser.update({"bundle_root": tmp, "dataset_dir": str(dataset_dir), "image_size": args.image_size,
                   "device": f"$torch.device('{args.device}')"})
    files = sorted(str(p) for p in (dataset_dir / "train" / "healthy").glob("*.png"))
    device = torch.device(args.device)

    # 1. input pipeline alone (every image through the full online chain, nothing cached)
    preprocessing = parser.get_parsed_content("train#preprocessing")
    t0 = time.perf_counter()
    samples = [preprocessing({"image": f}) for f in files]
    t_pipe = time.perf_counter() - t0
    n_samples = sum(len(s) for s in samples)
    batches = [list_data_collate(samples[i : i + args.batch_size]) for i in range(0, len(samples), args.batch_size)]
    batches = [b for b in batches if b["image"].shape[0] > 0]

    # 2. training step alone on pre-made batches
    net = parser.get_parsed_content("network_def").to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loss = parser.get_parsed_content("loss")
    from bundle.engine import ARTASynIteration, prepare_artasyn_batch

    def trainer(data, iters):
        return SupervisedTrainer(device=device, max_epochs=1, epoch_length=iters, train_data_loader=data,
                                 network=net, optimizer=opt, loss_function=loss, prepare_batch=prepare_artasyn_batch,
                                 iteration_update=ARTASynIteration(), amp=device.type == "cuda", decollate=False)

    warm = trainer(batches, 2)
    warm.run()
    times, imgs = [], []
    step = trainer(batches * (args.iters // len(batches) + 1), args.iters)


    from ignite.engine import Events

    step.add_event_handler(Events.ITERATION_STARTED, lambda e: setattr(e, "_t", time.perf_counter()))

    def _stop(e):
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - e._t)
        imgs.append(e.state.output["image"].shape[0])

    step.add_event_handler(Events.ITERATION_COMPLETED, _stop)
    step.run()
    t_step = statistics.median(times)
    img_per_step = statistics.mean(imgs)

    # 3. both together, as in training (online synthesis in the DataLoader, no cache)
    loader = DataLoader(Dataset([{"image": f} for f in files], transform=preprocessing), batch_size=args.batch_size,
                        shuffle=True, num_workers=args.num_workers)
    full = trainer(loader, min(args.iters, len(loader)))
    t0 = time.perf_counter()
    full.run()
    t_full = (time.perf_counter() - t0) / full.state.iteration

    print(f"device={args.device} threads={torch.get_num_threads()} image_size={args.image_size} "
          f"batch={args.batch_size} healthy (+ copies and 1-3 variants = {img_per_step:.1f} images/step), "
          f"num_workers={args.num_workers}, load average {os.getloadavg()[0]:.1f}")
    print(f"input pipeline alone : {n_samples / t_pipe:7.1f} training images/s ({len(files) / t_pipe:.1f} healthy/s)")
    print(f"training step alone  : {1 / t_step:7.3f} it/s  {img_per_step / t_step:7.1f} images/s  (median of {len(times)})")
    print(f"pipeline + step      : {1 / t_full:7.3f} it/s  {img_per_step / t_full:7.1f} images/s")
    print(f"100,000 iterations at the step rate: {100000 * t_step / 3600:.1f} h")


if __name__ == "__main__":
    main()
