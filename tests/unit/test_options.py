"""How options are read: the one boolean reader, up-front checks of every config's options, the boolean options of
the configs (each read by the reader, used only in its read form, and covered by the end-to-end test in
tests/workflows/test_options.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from bundle.options import (
    EvaluateOptions,
    InferenceOptions,
    OptionError,
    PreprocessOptions,
    TrainOptions,
    as_bool,
    as_optional_bool,
)
from tests.workflows.test_options import COVERED, INTERNAL

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
META = str(CONFIGS / "metadata.json")
LOGGING = str(CONFIGS / "logging.conf")

# each config as it is run, with the options class that reads it
RUNS = {
    "train.json": (["train.json"], TrainOptions),
    "multi_gpu_train.json": (["train.json", "multi_gpu_train.json"], TrainOptions),
    "evaluate.json": (["train.json", "evaluate.json"], EvaluateOptions),
    "inference.json": (["inference.json"], InferenceOptions),
    "preprocess.json": (["preprocess.json"], PreprocessOptions),
}


# ---------------------------------------------------------------------------------------------- the reader


@pytest.mark.parametrize("value", [True, "true", "True", "TRUE", " yes ", "Yes", "1", 1])
def test_true_spellings(value):
    assert as_bool(value, "x") is True


@pytest.mark.parametrize("value", [False, "false", "False", "FALSE", "no", "NO", "0", 0])
def test_false_spellings(value):
    assert as_bool(value, "x") is False


@pytest.mark.parametrize("value", ["flase", "", "on", "y", "2", 2, -1, 1.0, None, "None", [], "truee"])
def test_anything_else_is_an_error_naming_option_and_value(value):
    with pytest.raises(OptionError) as info:
        as_bool(value, "calibrate")
    assert "--calibrate" in str(info.value) and repr(value) in str(info.value)


def test_optional_boolean_accepts_none_and_null():
    assert as_optional_bool(None) is None and as_optional_bool("null") is None and as_optional_bool("None") is None
    assert as_optional_bool("NULL") is None and as_optional_bool("no") is False
    with pytest.raises(OptionError):
        as_optional_bool("nil", "x")


# ---------------------------------------------------------------------------------------------- the configs' options


def _config_files(name: str) -> list[str]:
    return [str(CONFIGS / f) for f in RUNS[name][0]]


def _read_json(name: str) -> dict:
    return json.loads((CONFIGS / name).read_text())


def _own_boolean_options(name: str) -> dict[str, str]:
    """Boolean options a config defines itself: ``{option id: how found}``.

    An option is a top-level key, or a key of a top-level parameter dict (no ``_target_``, e.g. ``pbtseg``),
    whose value is a JSON boolean, or a top-level expression without references that evaluates to a boolean
    (e.g. ``amp: $torch.cuda.is_available()``). Component arguments (inside a ``_target_`` dict, or set from the
    top level with a ``#`` path such as multi_gpu_train.json's ``train#dataloader#shuffle``) are not options.
    """
    import os  # noqa: F401  (for the evaluated expressions)

    found = {}
    for key, value in _read_json(name).items():
        if key.startswith("_") or "#" in key or key in ("imports", "initialize", "run", "finalize"):
            continue
        if isinstance(value, bool):
            found[key] = "json"
        elif isinstance(value, dict) and "_target_" not in value:
            for sub, v in value.items():
                if isinstance(v, bool):
                    found[f"{key}#{sub}"] = "json"
        elif isinstance(value, str) and value.startswith("$") and "@" not in value:
            try:
                result = eval(value[1:], {"torch": torch, "os": os})
            except Exception:  # expressions needing a process group etc. are not plain options
                continue
            if isinstance(result, bool):
                found[key] = "expression"
    return found


def _found() -> set[tuple[str, str]]:
    out = set()
    for name in RUNS:
        for option in _own_boolean_options(name):
            out.add((name, option))
    # multi_gpu_train.json merges over train.json: train's boolean options are its options too
    out |= {("multi_gpu_train.json", o) for (c, o) in list(out) if c == "train.json"}
    return out


def test_every_boolean_option_is_covered_end_to_end():
    """A new boolean option in any config fails here until it is read by the reader and covered end to end."""
    found = _found()
    assert {
        ("train.json", "include_healthy"),
        ("evaluate.json", "calibrate"),
        ("inference.json", "write_overlays"),
        ("preprocess.json", "pbtseg#fill_holes"),
        ("train.json", "amp"),
    } <= found  # the scan sees them
    missing = sorted(found - set(COVERED) - set(INTERNAL))
    assert not missing, f"boolean options without an end-to-end check in tests/test_options_e2e.py: {missing}"
    stale = sorted(set(COVERED) - found)
    assert not stale, f"COVERED lists options the configs no longer have: {stale}"


def test_boolean_options_are_fields_read_with_the_reader():
    for name, option in _found() - set(INTERNAL):
        cls = RUNS[name][1]
        field = option.split("#")[0]
        assert field in cls.__dataclass_fields__, f"{name}: {option} is not read by {cls.__name__}"
        if "#" not in option:
            reader = cls.__dataclass_fields__[field].metadata["read"]
            assert reader(" No ", option) is False and reader("TRUE", option) is True, (name, option)


def _references(value, out: list[str], path: str = "") -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _references(v, out, f"{path}#{k}" if path else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _references(v, out, f"{path}#{i}")
    elif isinstance(value, str):
        out.append((path, value))


def test_boolean_options_are_used_only_as_read():
    """Outside the options object, no config item uses a raw boolean option (``@calibrate``): only ``@options.x``.

    The evaluate config's ``operating_point`` reads ``calibrate`` with ``bundle.options.as_bool`` itself (the
    options object reads the operating point's mask threshold, so it cannot use the object).
    """
    for name, option in sorted(_found() - set(INTERNAL)):
        top = option.split("#")[0]
        pattern = re.compile(r"@" + re.escape(top) + r"(?![\w#])")
        for file in RUNS[name][0]:
            items: list = []
            _references(_read_json(file), items)
            for path, text in items:
                if path.startswith("options#") or not pattern.search(text):
                    continue
                assert f"bundle.options.as_bool(@{top}, '{top}')" in text, f"{file}: {path} uses @{top} unread: {text}"


def _initialize(name: str, tmp_path: Path, demo_root: Path, **override):
    from monai.bundle import ConfigWorkflow

    files = _config_files(name)
    kwargs = {"bundle_root": str(tmp_path / "bundle"), "dataset_dir": str(demo_root), **override}
    if name == "multi_gpu_train.json":
        name, files = "train.json", _config_files("train.json")  # same options; torchrun not needed to read them
    if name == "inference.json":
        kwargs["output_dir"] = str(tmp_path / "out")
    workflow = ConfigWorkflow(config_file=files, meta_file=META, logging_file=LOGGING, workflow_type=None, **kwargs)
    workflow.initialize()
    return workflow


def _error(name, tmp_path, demo_root, **override) -> str:
    with pytest.raises(Exception) as info:
        _initialize(name, tmp_path, demo_root, **override)
    err, text = info.value, []
    while err is not None:
        text.append(str(err))
        err = err.__cause__ or err.__context__
    return "\n".join(text)


def test_each_boolean_option_stops_the_run_on_a_bad_value(tmp_path, demo_root):
    """Through the real configs: ``false``/``No``/``1`` accepted, ``maybe`` stops ``initialize`` naming the option."""
    options = sorted((n, o) for n, o in _found() - set(INTERNAL) if n != "multi_gpu_train.json")
    for name, option in options:
        message = _error(name, tmp_path, demo_root, **{option: "maybe"})
        assert f"--{option}: expected a boolean" in message and "'maybe'" in message, (name, option, message[-500:])
    # good spellings pass, and the config sees a real bool
    wf = _initialize(
        "evaluate.json", tmp_path, demo_root, calibrate="No", restrict_to_lungs="1", fail_on_skipped="FALSE"
    )
    opts = wf.parser.get_parsed_content("options")
    assert (opts.calibrate, opts.restrict_to_lungs, opts.fail_on_skipped) == (False, True, False)
    assert wf.parser.get_parsed_content("validate#report").calibration_path is None


@pytest.mark.parametrize(
    "name, override, message",
    [
        ("train.json", {"batch_size": 0}, "--batch_size: expected an integer >= 1, got 0"),
        ("train.json", {"batch_size": -2}, "--batch_size: expected an integer >= 1, got -2"),
        ("train.json", {"learning_rate": 0}, "--learning_rate: expected a number in (0, inf), got 0"),
        ("train.json", {"learning_rate": -1e-4}, "--learning_rate: expected a number in (0, inf)"),
        ("train.json", {"score_rule": "median"}, "--score_rule: unknown score rule 'median'"),
        (
            "train.json",
            {"image_size": 40},
            "--image_size: image_size 40 is not divisible by the UNet's total stride 16",
        ),
        ("train.json", {"num_variants": [3, 1]}, "--num_variants: the range [3, 1] is empty"),
        ("train.json", {"synthesis": "sometimes"}, "--synthesis must be one of online, offline"),
        ("train.json", {"dataset_dir": "/nonexistent/dataset"}, "dataset_dir does not exist: /nonexistent/dataset"),
        ("train.json", {"dataset_dir": ""}, "dataset_dir is not set"),
        ("train.json", {"resume_ckpt": "/nonexistent/ckpt.pt"}, "--resume_ckpt: file not found"),
        ("evaluate.json", {"mask_threshold": 1.5}, "--mask_threshold: expected a number in [0, 1], got 1.5"),
        ("evaluate.json", {"eval_split": "train"}, "--eval_split must be one of test, validation"),
        ("evaluate.json", {"val_batch_size": 0}, "--val_batch_size: expected an integer >= 1"),
        ("evaluate.json", {"mask_polarity": "darker"}, "--mask_polarity must be one of absolute, brighter"),
        ("inference.json", {"mask_floor": 2}, "--mask_floor: expected a number in [0, 1], got 2"),
        ("inference.json", {"score_threshold": -0.1}, "--score_threshold: expected a number in [0, 1], got -0.1"),
        ("inference.json", {"batch_size": 0}, "--batch_size: expected an integer >= 1"),
        ("inference.json", {"score_rule": "p101"}, "--score_rule: percentile in score rule 'p101'"),
        ("inference.json", {"image_size": 100}, "not divisible by the UNet's total stride 16"),
        ("preprocess.json", {"num_variants": [2, 1]}, "--num_variants: the range [2, 1] is empty"),
        ("preprocess.json", {"pbtseg#fill_hole": True}, "--pbtseg#fill_hole: unknown PBTSegParams field"),
    ],
)
def test_numeric_and_choice_options_checked_up_front(tmp_path, demo_root, name, override, message):
    assert message in _error(name, tmp_path, demo_root, **override)


def test_all_bad_options_reported_at_once(tmp_path, demo_root):
    text = _error("train.json", tmp_path, demo_root, batch_size=0, use_ema="flase", score_rule="median")
    assert "3 option(s)" in text and "--batch_size" in text and "--use_ema" in text and "--score_rule" in text


def test_null_where_an_option_accepts_it(tmp_path, demo_root):
    wf = _initialize("train.json", tmp_path, demo_root, resume_ckpt="null")
    assert wf.parser.get_parsed_content("options").resume_ckpt is None
    wf = _initialize("inference.json", tmp_path, demo_root, mask_threshold="None", lung_cache_dir="null")
    opts = wf.parser.get_parsed_content("options")
    assert opts.mask_threshold is None and opts.lung_cache_dir is None
    assert (
        _initialize("preprocess.json", tmp_path, demo_root, num_workers="null")
        .parser.get_parsed_content("options")
        .num_workers
        is None
    )
