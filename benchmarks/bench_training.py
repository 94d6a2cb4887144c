"""Training: throughput of a recipe, convergence curves and the full-vs-plain ablation on the demo data.

Measures, side by side in one run:
- the input pipeline alone (train.json's preprocessing: load, PBTSeg, resize, online ART-ASyn synthesis with
  1-3 variants + healthy copy, collate), in training images per second;
- the training step alone (forward, ART-ASyn loss with bottleneck features, backward, AdamW; AMP on CUDA) on
  pre-made batches, and its peak GPU memory;
- both together, with train.json's own CacheDataset and DataLoader, for each number of DataLoader workers given,
  and the share of time the trainer waits for data (whether the input pipeline keeps the device busy).

Usage::

    python benchmarks/bench_training.py [--image_size 256] [--batch_size 4] [--iters 6] [--num_workers 0,2,4]
        [--device cuda] [--amp auto|true|false] [--set KEY=VALUE ...]
    python benchmarks/bench_training.py --curve [--every 300] [--recipes full,plain] [--iterations N]
        [--config configs/demo.json] [--set KEY=VALUE ...] [--output docs/images/training_curve.png]
    python benchmarks/bench_training.py --ablation [--workdir runs/ablation] [overrides for both runs ...]
    python benchmarks/bench_training.py --rules [--bundle_root .] [--config configs/demo.json] [--set KEY=VALUE ...]

``--curve`` trains each recipe in this process with train.json + configs/demo.json (by default) and evaluates it
on the demo test set every ``--every`` iterations: image AUROC (published whole-image mean score), pixel Dice
(per-image mask rule), and diagnostics (median score of healthy and diseased images, mean ``input - recon``
inside the lesion masks); with ``rule_selection`` "validation" (configs/demo.json) it also chooses the score and
mask rules on the synthetic validation monitor at every evaluation, as training does at its end
(:func:`bundle.training.validation.select_operating_point`), and measures the test set with them. It plots AUROC and
Dice
against iterations.

``--rules`` takes a trained ``models/model.pt`` (e.g. the quick start's) and prints every candidate score and mask
rule of the post-training selection twice: on the synthetic validation monitor (where the selection chooses) and,
as a diagnosis only, on the demo test set.

``--ablation`` trains twice with the same budget through ``monai.bundle run``, as the quick start does: (a) the
full ART-ASyn recipe and (b) plain reconstruction (no synthetic anomalies, global MSE only), evaluates both with
configs/evaluate.json on the demo test set (opacities from a generator independent of the synthesis) and prints
image AUROC, AP and pixel Dice side by side.

The batch holds ``batch_size`` healthy images, each with its healthy copy and 1-3 variants (published: 4 healthy
images, 8-16 images per step). On CPU the thread count is torch's default unless ``--threads`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.data import list_data_collate
from monai.engines import SupervisedTrainer
from monai.utils import set_determinism

from bundle.evaluation.operating_point import describe_point_mask
from bundle.training.validation import MASK_SETTINGS

REPO = Path(__file__).resolve().parents[1]


PLAIN = [
    "--anomaly_prob",
    "0",
    "--num_variants",
    "1",
    "--include_healthy",
    "false",
    "--loss_weights#local_mse",
    "0",
    "--loss_weights#feature",
    "0",
    "--loss_weights#dice",
    "0",
]


def ablation(workdir: str, extra: list[str]) -> None:
    """Full recipe vs plain reconstruction with the demo recipe (train.json + demo.json, plus ``extra`` overrides),
    each trained and evaluated through ``monai.bundle run`` exactly as the quick start does."""
    import subprocess
    import sys

    from bundle.data.demo import write_demo_dataset

    work = Path(workdir).absolute()
    dataset = write_demo_dataset(work / "demo")
    common = [
        "--meta_file",
        str(REPO / "configs" / "metadata.json"),
        "--logging_file",
        str(REPO / "configs" / "logging.conf"),
        "--dataset_dir",
        str(dataset),
    ]
    rows = {}
    for name, recipe in (("full ART-ASyn loss", []), ("plain reconstruction", PLAIN)):
        root = work / name.split()[0]
        t0 = time.perf_counter()
        train = f"['{REPO / 'configs' / 'train.json'}','{REPO / 'configs' / 'demo.json'}']"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "monai.bundle",
                "run",
                "training",
                "--config_file",
                train,
                "--bundle_root",
                str(root),
                *common,
                *recipe,
                *extra,
            ],
            check=True,
            cwd=REPO,
        )
        t_train = time.perf_counter() - t0
        evaluate = str([str(REPO / "configs" / f) for f in ("train.json", "demo.json", "evaluate.json")])
        subprocess.run(
            [
                sys.executable,
                "-m",
                "monai.bundle",
                "run",
                "evaluating",
                "--config_file",
                evaluate,
                "--bundle_root",
                str(root),
                *common,
                *extra,
            ],
            check=True,
            cwd=REPO,
        )
        metrics = json.loads((root / "eval" / "metrics.json").read_text())
        rows[name] = (metrics, t_train)
    print(f"{'recipe':24s} {'image AUROC':>12s} {'image AP':>9s} {'pixel Dice':>11s} {'train s':>8s}")
    for name, (m, t) in rows.items():
        cells = [m.get(k) for k in ("image_auroc", "image_ap", "pixel_dice")]
        print(
            f"{name:24s} "
            + " ".join(f"{'n/a' if v is None else f'{v:.3f}':>{w}s}" for v, w in zip(cells, (12, 9, 11), strict=True))
            + f" {t:8.0f}"
        )


def _load_test_set(dataset_dir: Path, image_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The demo test split at the model resolution, as configs/evaluate.json sees it (area / nearest resize).

    Returns:
        images (N, 1, S, S), labels (N,), masks (N, 1, S, S) (zeros for healthy images).
    """
    from monai.transforms import Resize

    from bundle.evaluation.evaluator import evaluation_datalist
    from bundle.io import read_image, read_labels

    entries = evaluation_datalist(str(dataset_dir), "test")
    resize_img = Resize((image_size, image_size), mode="area")
    resize_msk = Resize((image_size, image_size), mode="nearest")
    images, labels, masks = [], [], []
    for e in entries:
        img = torch.as_tensor(read_image(e["image"])[0])[None].float()
        images.append(torch.as_tensor(resize_img(img)).float())
        m = (
            torch.zeros_like(img)
            if not e.get("mask")
            else torch.as_tensor((read_labels(e["mask"]) > 0)[None].astype("float32"))
        )
        masks.append((torch.as_tensor(resize_msk(m)) > 0).float())
        labels.append(int(e["label"]))
    return torch.stack(images), torch.tensor(labels), torch.stack(masks)


def test_metrics(
    network: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    device: torch.device,
    batch: int = 16,
) -> dict[str, float]:
    """Image AUROC (mean error) and mean per-image pixel Dice (default per-image mask rule) on a test set."""
    from bundle.evaluation.metrics import dice, image_auroc
    from bundle.evaluation.postprocess import anomaly_mask, error_map, image_score

    was_training = network.training
    network.eval()
    scores, dices, lesion_err = [], [], []
    with torch.no_grad():
        for i in range(0, images.shape[0], batch):
            x = images[i : i + batch].to(device)
            recon = network(x).float().clamp(0, 1).cpu()
            x = x.cpu()
            for k in range(x.shape[0]):
                scores.append(image_score(error_map(x[k], recon[k])))
                if labels[i + k] == 1:
                    dices.append(dice(anomaly_mask(x[k], recon[k]), masks[i + k]))
                    inside = masks[i + k] > 0
                    if inside.any():
                        lesion_err.append(float((x[k] - recon[k])[inside].mean()))
    network.train(was_training)
    auroc = image_auroc(scores, labels.tolist())
    score = torch.tensor(scores)
    return {
        "image_auroc": float("nan") if auroc is None else auroc,
        "pixel_dice": float(sum(dices) / len(dices)) if dices else float("nan"),
        # diagnostics: median score of healthy / diseased images, how much of the lesions is removed
        "score_healthy": float(score[labels == 0].median()) if (labels == 0).any() else float("nan"),
        "score_diseased": float(score[labels == 1].median()) if (labels == 1).any() else float("nan"),
        "lesion_removed": float(sum(lesion_err) / len(lesion_err)) if lesion_err else float("nan"),
    }


def selected_metrics(network: torch.nn.Module, monitor, test_loader, device: torch.device) -> dict[str, object]:
    """Choose the score and mask rules on the validation monitor (as training does at its end), then measure the
    test set with them: ``selected_auroc``, ``selected_dice`` and the chosen rules."""
    from bundle.training.validation import select_operating_point

    point = select_operating_point(network, monitor, device)
    test = select_operating_point(
        network,
        test_loader,
        device,
        score_rules=[point["score_rule"]],
        smoothings=[point["score_smoothing"]],
        mask_relatives=[point["mask_relative"]],
        restrict_options=[point["restrict_to_lungs"]],
        mask_smoothings=[point["mask_smoothing"]],
        mask_floors=[point["mask_floor"]],
        mask_polarities=[point["mask_polarity"]],
    )
    return {
        **{k: point[k] for k in ("score_rule", "score_smoothing", *MASK_SETTINGS)},
        "selected_auroc": next(iter(test["score_auroc"].values())),
        "selected_dice": next(iter(test["mask_dice"].values())),
    }


def curve(
    workdir: str,
    iterations: int,
    every: int,
    recipes: list[str],
    configs: list[str],
    overrides: dict[str, object],
    output: str | None,
    keep_weights: bool = False,
) -> dict[str, list[dict[str, float]]]:
    """Train each recipe in this process and evaluate it on the demo test set every ``every`` iterations.

    Both recipes read the same configs (train.json + ``configs``) and the same data, with the same seed and
    iteration budget; "plain" adds :data:`PLAIN` (no synthetic anomalies, global MSE only).
    """
    from ignite.engine import Events

    work = Path(workdir).absolute()
    results: dict[str, list[dict[str, float]]] = {}
    shown = dict(overrides)  # what the user set, for the figure's title
    if "dataset_dir" not in overrides:  # one copy of the configs' dataset for every recipe
        shared = ConfigParser()
        shared.read_config([str(REPO / "configs" / "train.json"), *[str(REPO / c) for c in configs]])
        shared.update({"bundle_root": str(work), **overrides})
        overrides = {**overrides, "dataset_dir": str(shared.get_parsed_content("dataset_dir"))}
    for name in recipes:
        parser = ConfigParser()
        parser.read_config([str(REPO / "configs" / "train.json"), *[str(REPO / c) for c in configs]])
        root = work / name
        parser.update({"bundle_root": str(root), **overrides})
        if name == "plain":
            parser.update(_plain_overrides())
        # one epoch of the whole budget (the learning-rate policy sees the same length); no synthetic validation
        parser.update({"num_iterations": iterations, "epoch_length": iterations, "val_interval": 10**9})
        parser.parse()
        parser.get_parsed_content("initialize")  # determinism and the image-size check, as `monai.bundle run`
        dataset_dir = Path(parser.get_parsed_content("dataset_dir"))
        size = int(parser.get_parsed_content("image_size"))
        images, labels, masks = _load_test_set(dataset_dir, size)
        trainer = parser.get_parsed_content("train#trainer")
        network = parser.get_parsed_content("network")
        device = torch.device(parser.get_parsed_content("device"))
        select = parser.get_parsed_content("rule_selection") == "validation"
        monitor = test_loader = None
        if select:  # the selection the training run makes at its end, repeated at every evaluation
            monitor = parser.get_parsed_content("validate#dataloader")
            test_parser = ConfigParser()
            test_parser.read_config(
                [
                    str(REPO / "configs" / "train.json"),
                    *[str(REPO / c) for c in configs],
                    str(REPO / "configs" / "evaluate.json"),
                ]
            )
            test_parser.update({"bundle_root": str(root), **overrides})
            test_loader = test_parser.get_parsed_content("validate#dataloader")
        rows: list[dict[str, float]] = []
        state = {"t": 0.0, "t0": time.perf_counter()}

        # bound now: the handler runs inside this recipe's trainer.run(), the loop variables are this recipe's
        def evaluate(
            engine,
            rows=rows,
            state=state,
            network=network,
            root=root,
            name=name,
            images=images,
            labels=labels,
            masks=masks,
            device=device,
            select=select,
            monitor=monitor,
            test_loader=test_loader,
        ) -> None:
            state["t"] += time.perf_counter() - state["t0"]
            m = test_metrics(network, images, labels, masks, device)
            if select:
                m.update(selected_metrics(network, monitor, test_loader, device))
            loss = float(engine.state.output["loss"]) if engine.state.output else float("nan")
            rows.append({"iteration": engine.state.iteration, "train_s": state["t"], "loss": loss, **m})
            if keep_weights:
                root.mkdir(parents=True, exist_ok=True)
                torch.save(network.state_dict(), root / f"weights_iteration={engine.state.iteration}.pt")
            print(
                f"{name:6s} it {engine.state.iteration:6d}  train {state['t']:7.1f} s  loss {loss:.4f}  "
                f"image AUROC {m['image_auroc']:.3f}  pixel Dice {m['pixel_dice']:.3f}  "
                + (
                    f"selected rules ({m['score_rule']} smoothed {m['score_smoothing']:g}; mask "
                    f"{describe_point_mask(m)}): "
                    f"image AUROC {m['selected_auroc']:.3f}  pixel Dice "
                    f"{m['selected_dice']:.3f}  "
                    if select
                    else ""
                )
                + f"(median score healthy {m['score_healthy']:.5f} diseased {m['score_diseased']:.5f}, "
                f"mean input - recon in lesions {m['lesion_removed']:.3f})",
                flush=True,
            )
            state["t0"] = time.perf_counter()

        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=every), evaluate)
        trainer.add_event_handler(Events.STARTED, evaluate)
        trainer.run()
        results[name] = rows
    if output:
        _plot(results, output, configs, shown)
    return results


def rules(bundle_root: str, configs: list[str], overrides: dict[str, object]) -> None:
    """Every candidate of :func:`bundle.training.validation.select_operating_point` on the synthetic monitor and on
    the test
    set (diagnosis: the test figures are never used to choose), for the weights in ``<bundle_root>/models``."""
    from bundle.training.validation import chosen_candidates, select_operating_point

    def parsed(extra: list[str]) -> ConfigParser:
        p = ConfigParser()
        p.read_config([str(REPO / "configs" / "train.json"), *[str(REPO / c) for c in configs], *extra])
        p.update({"bundle_root": str(Path(bundle_root).absolute()), **overrides})
        return p

    train = parsed([])
    network = train.get_parsed_content("network_def")
    path = Path(train.get_parsed_content("ckpt_dir")) / "model.pt"
    network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    monitor = select_operating_point(network, train.get_parsed_content("validate#dataloader"))
    test = select_operating_point(
        network, parsed([str(REPO / "configs" / "evaluate.json")]).get_parsed_content("validate#dataloader")
    )
    print(
        f"weights {path}; monitor: {monitor['num_healthy']} healthy + {monitor['num_diseased']} synthetic; "
        f"test: {test['num_healthy']} healthy + {test['num_diseased']} diseased"
    )
    print(f"{'image score, smoothing':30s} {'monitor AUROC':>13s} {'monitor d':>9s} {'test AUROC':>10s}")
    for key, value in monitor["score_auroc"].items():
        d = monitor["score_separation"][key]
        print(f"{key:30s} {value:13.3f} {'inf' if d is None else f'{d:.2f}':>9s} {test['score_auroc'][key]:10.3f}")
    print(f"{'mask rule':75s} {'monitor Dice':>12s} {'test Dice':>9s}")
    for key, value in monitor["mask_dice"].items():
        print(f"{key:75s} {value:12.3f} {test['mask_dice'][key]:9.3f}")
    score, mask = chosen_candidates(monitor)
    print(f"chosen on the monitor: score {score}; mask {describe_point_mask(monitor)}")
    chosen = f"image AUROC {test['score_auroc'][score]:.3f}, pixel Dice {test['mask_dice'][mask]:.3f}"
    print(f"the chosen rules on the test set (diagnosis only): {chosen}")


def _plain_overrides() -> dict[str, object]:
    """:data:`PLAIN` as a ConfigParser update."""
    return {
        "anomaly_prob": 0.0,
        "num_variants": 1,
        "include_healthy": False,
        "loss_weights#local_mse": 0.0,
        "loss_weights#feature": 0.0,
        "loss_weights#dice": 0.0,
    }


def _plot(results: dict[str, list[dict[str, float]]], output: str, configs: list[str], overrides: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"full": "full ART-ASyn recipe", "plain": "plain reconstruction"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for (name, rows), color in zip(results.items(), ("C0", "C1", "C2", "C3"), strict=False):
        it = [r["iteration"] for r in rows]
        label = labels.get(name, name)
        if "selected_auroc" in rows[0]:  # rules chosen on the synthetic monitor: solid; published rules: dashed
            axes[0].plot(
                it,
                [r["selected_auroc"] for r in rows],
                marker="o",
                ms=3,
                color=color,
                label=f"{label}, rules selected on the synthetic monitor",
            )
            axes[1].plot(it, [r["selected_dice"] for r in rows], marker="o", ms=3, color=color)
            label, style = f"{label}, published rules", {"ls": "--", "alpha": 0.6}
        else:
            style = {}
        axes[0].plot(it, [r["image_auroc"] for r in rows], marker="o", ms=3, color=color, label=label, **style)
        axes[1].plot(it, [r["pixel_dice"] for r in rows], marker="o", ms=3, color=color, **style)
    for ax, title in zip(axes, ("image AUROC", "pixel Dice"), strict=True):
        ax.set_xlabel("training iterations")
        ax.set_title(f"demo test set (synthetic phantoms): {title}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 1.02)
    axes[0].axhline(0.5, color="gray", lw=0.8, ls=":")
    axes[0].legend(loc="lower right", fontsize=7)
    fig.suptitle("configs: train.json + " + " + ".join(configs) + (f", {overrides}" if overrides else ""), fontsize=8)
    fig.tight_layout()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    print(f"wrote {output}")


def _parse_overrides(items: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` command-line overrides; each value parsed as JSON when it is JSON, else kept as text."""
    overrides: dict[str, object] = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except ValueError:
            overrides[key] = value
    return overrides


def _main_curve() -> None:
    """``--curve``: training curves of the full and plain recipes."""
    cp = argparse.ArgumentParser(description="training curves of the full and plain recipes on the demo data")
    cp.add_argument("--curve", action="store_true")
    cp.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="training iterations (default: the configs' max_epochs x epoch_length)",
    )
    cp.add_argument("--every", type=int, default=50, help="iterations between test-set evaluations")
    cp.add_argument("--recipes", default="full,plain")
    cp.add_argument(
        "--config",
        action="append",
        default=None,
        help="configs merged over train.json (default: configs/demo.json)",
    )
    cp.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, value parsed as JSON when possible (e.g. --set learning_rate=0.002)",
    )
    cp.add_argument("--workdir", default="runs/curve")
    cp.add_argument("--output", default="docs/images/training_curve.png")
    cp.add_argument("--json", default=None, help="also write the measured rows to this JSON file")
    cp.add_argument("--keep_weights", action="store_true", help="save the weights at every evaluation")
    a = cp.parse_args()
    overrides = _parse_overrides(a.set)
    configs = a.config or ["configs/demo.json"]
    iterations = a.iterations
    if iterations is None:
        p = ConfigParser()
        p.read_config([str(REPO / "configs" / "train.json"), *[str(REPO / c) for c in configs]])
        p.update(overrides)
        iterations = int(p.get_parsed_content("num_iterations"))
    res = curve(
        a.workdir, iterations, a.every, a.recipes.split(","), configs, overrides, a.output or None, a.keep_weights
    )
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


def _main_rules() -> None:
    """``--rules``: every candidate evaluation rule on the synthetic monitor and the test set."""
    rp = argparse.ArgumentParser(description="candidate evaluation rules on the synthetic monitor and the test set")
    rp.add_argument("--rules", action="store_true")
    rp.add_argument("--bundle_root", default=".")
    rp.add_argument(
        "--config",
        action="append",
        default=None,
        help="configs merged over train.json (default: configs/demo.json)",
    )
    rp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    a = rp.parse_args()
    rules(a.bundle_root, a.config or ["configs/demo.json"], _parse_overrides(a.set))


def main() -> None:
    import sys

    if "--curve" in sys.argv:
        _main_curve()
        return
    if "--rules" in sys.argv:
        _main_rules()
        return
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
    ap.add_argument("--num_workers", default="0", help="DataLoader workers; a comma list sweeps (e.g. 0,2,4,8)")
    ap.add_argument("--n_images", type=int, default=0, help="demo training images (default: 3 batches, at least 8)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", default="auto", choices=("auto", "true", "false"), help="auto: on for CUDA")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="train.json override, value parsed as JSON when possible "
        "(e.g. --set 'network_def#channels=[16,32,64,128,256]')",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    set_determinism(0)
    device = torch.device(args.device)
    amp = device.type == "cuda" if args.amp == "auto" else args.amp == "true"

    from ignite.engine import Events

    from bundle.data.demo import write_demo_dataset
    from bundle.training.engine import ARTASynIteration, prepare_artasyn_batch

    tmp = tempfile.mkdtemp(prefix="bench_training_")
    n_images = args.n_images or max(8, args.batch_size * 3)
    dataset_dir = write_demo_dataset(
        Path(tmp) / "demo", n_train=n_images, n_test_healthy=0, n_test_diseased=0, size=max(256, args.image_size)
    )
    overrides = _parse_overrides(args.set)

    def parser_for(workers: int) -> ConfigParser:
        parser = ConfigParser()
        parser.read_config(str(REPO / "configs" / "train.json"))
        parser.update(
            {
                "bundle_root": tmp,
                "dataset_dir": str(dataset_dir),
                "image_size": args.image_size,
                "batch_size": args.batch_size,
                "num_workers": workers,
                "amp": amp,
                "device": f"$torch.device('{args.device}')",
                **overrides,
            }
        )
        return parser

    parser = parser_for(0)
    files = sorted(str(p) for p in (dataset_dir / "train" / "healthy").glob("*.png"))
    n_params = sum(p.numel() for p in parser.get_parsed_content("network_def").parameters())

    # 1. input pipeline alone, one process (every image through the full online chain, nothing cached)
    preprocessing = parser.get_parsed_content("train#preprocessing")
    t0 = time.perf_counter()
    samples = [preprocessing({"image": f}) for f in files]
    t_pipe = time.perf_counter() - t0
    n_samples = sum(len(s) for s in samples)
    batches = [list_data_collate(samples[i : i + args.batch_size]) for i in range(0, len(samples), args.batch_size)]
    batches = [b for b in batches if b["image"].shape[0] > 0]

    # 2. training step alone on pre-made batches (forward, loss with bottleneck features, backward, AdamW)
    net = parser.get_parsed_content("network_def").to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loss = parser.get_parsed_content("loss")

    def trainer(data, iters):
        return SupervisedTrainer(
            device=device,
            max_epochs=1,
            epoch_length=iters,
            train_data_loader=data,
            network=net,
            optimizer=opt,
            loss_function=loss,
            prepare_batch=prepare_artasyn_batch,
            iteration_update=ARTASynIteration(),
            amp=amp,
            decollate=False,
        )

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    trainer(batches, 2).run()  # warm-up (cuDNN autotuning, allocator)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, imgs = [], []
    step = trainer(batches * (args.iters // len(batches) + 1), args.iters)
    step.add_event_handler(Events.ITERATION_STARTED, lambda e: (sync(), setattr(e, "_t", time.perf_counter())))

    def _stop(e):
        sync()
        times.append(time.perf_counter() - e._t)
        imgs.append(e.state.output["image"].shape[0])

    step.add_event_handler(Events.ITERATION_COMPLETED, _stop)
    step.run()
    t_step = statistics.median(times)
    img_per_step = statistics.mean(imgs)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")

    print(
        f"device={args.device} amp={amp} threads={torch.get_num_threads()} image_size={args.image_size} "
        f"network {n_params / 1e6:.2f} M parameters, batch={args.batch_size} healthy (+ copies and 1-3 variants = "
        f"{img_per_step:.1f} images/step), load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"input pipeline alone (1 process, no cache): {n_samples / t_pipe:7.1f} training images/s "
        f"({len(files) / t_pipe:.1f} healthy/s)"
    )
    print(
        f"training step alone : {1 / t_step:7.3f} it/s {img_per_step / t_step:8.1f} images/s  (median of {len(times)})"
        + (f"  peak GPU memory {peak:.0f} MiB" if device.type == "cuda" else "")
    )

    # 3. both together, as in `monai.bundle run training`: train.json's CacheDataset (load + lungs cached) and
    # DataLoader (online synthesis in the workers); the share of wall time spent waiting for batches says whether
    # the input pipeline keeps the device busy
    for workers in [int(w) for w in str(args.num_workers).split(",")]:
        loader = parser_for(workers).get_parsed_content("train#dataloader")
        full = trainer(loader, args.iters + 2)
        waits: list[float] = []
        marks: dict[str, float] = {}
        # the handlers run inside this iteration's full.run(): they bind this iteration's marks and waits
        full.add_event_handler(
            Events.GET_BATCH_STARTED, lambda e, marks=marks: marks.__setitem__("g", time.perf_counter())
        )
        full.add_event_handler(
            Events.GET_BATCH_COMPLETED,
            lambda e, waits=waits, marks=marks: (
                waits.append(time.perf_counter() - marks["g"]) if e.state.iteration > 2 else None
            ),
        )

        def _mark(e, marks=marks):
            if e.state.iteration == 2:
                sync()
                marks["t0"] = time.perf_counter()

        full.add_event_handler(Events.ITERATION_COMPLETED, _mark)
        full.run()
        sync()
        wall = (time.perf_counter() - marks["t0"]) / args.iters
        wait = sum(waits) / args.iters
        print(
            f"pipeline + step, num_workers={workers:2d}: {1 / wall:7.3f} it/s {img_per_step / wall:8.1f} images/s, "
            f"waiting for data {100 * wait / wall:5.1f} % of the time"
        )
    print(f"100,000 iterations at the step rate: {100000 * t_step / 3600:.1f} h")


if __name__ == "__main__":
    main()
