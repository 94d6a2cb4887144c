"""How the bundle reads its options: one boolean reader, and up-front checks of every workflow's options.

``python -m monai.bundle run ... --calibrate false`` hands the config the *string* ``"false"`` (python-fire turns
``False``/``True``/``None``/numbers/lists into Python values, but bare words stay strings), and any non-empty
string is true in Python. So no config value or handler tests an option directly: booleans go through
:func:`as_bool`, and each workflow builds one options object (:class:`TrainOptions`, :class:`EvaluateOptions`,
:class:`InferenceOptions`, :class:`PreprocessOptions`) from its config values in ``initialize``, before any work.
The object converts booleans, checks numbers and choices, and reports *every* bad value at once in one
:class:`OptionError` that names the options; the config then uses the converted values (``$@options.resume``).

Spellings (any case, surrounding spaces ignored):

- boolean: ``true``/``false``, ``yes``/``no``, ``1``/``0`` and real booleans; anything else is an error.
- empty value, where an option accepts one: ``None``/``null`` (and Python ``None``).
"""

from __future__ import annotations

import logging
import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import torch

from bundle.evaluation.operating_point import MASK_POLARITIES
from bundle.evaluation.postprocess import image_score
from bundle.lungs.pbtseg import PBTSegParams
from bundle.training.network import check_image_size

__all__ = [
    "OptionError",
    "as_bool",
    "as_optional_bool",
    "is_null",
    "read_params",
    "Options",
    "TrainOptions",
    "EvaluateOptions",
    "InferenceOptions",
    "PreprocessOptions",
    "BOOLEAN_SPELLING",
]

logger = logging.getLogger(__name__)

_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})
_NULL = frozenset({"none", "null"})
BOOLEAN_SPELLING = "true/false, yes/no or 1/0, any case"


class OptionError(ValueError):
    """A workflow option has a value the bundle cannot use; the message names the option(s) and value(s)."""


def _name(name: str) -> str:
    return f"--{name}" if name else "value"


def as_bool(value: Any, name: str = "") -> bool:
    """Read a boolean option the one way the bundle accepts.

    Args:
        value: ``True``/``False`` (also numpy booleans), the integers 1/0, or a string ``true``/``false``,
            ``yes``/``no``, ``1``/``0`` in any case.
        name: the option's name, for the error message.

    Raises:
        OptionError: for anything else (e.g. ``"flase"``, ``2``, ``None``, ``""``).
    """
    if isinstance(value, bool):
        return value
    if type(value).__name__ == "bool_":  # numpy.bool_ without importing numpy
        return bool(value)
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise OptionError(f"{_name(name)}: expected a boolean ({BOOLEAN_SPELLING}), got {value!r}.")


def is_null(value: Any) -> bool:
    """True for ``None`` and the strings ``None``/``null`` (any case): the empty value of an optional option."""
    return value is None or (isinstance(value, str) and value.strip().lower() in _NULL)


def as_optional_bool(value: Any, name: str = "") -> bool | None:
    """:func:`as_bool` for an option that may also be empty (``None``/``null``), which gives ``None``."""
    return None if is_null(value) else as_bool(value, name)


# ---------------------------------------------------------------------------------------------- value readers
# A reader is ``reader(value, name) -> converted value``; it raises OptionError naming the option.

Reader = Callable[[Any, str], Any]


def _boolean(value: Any, name: str) -> bool:
    return as_bool(value, name)


def _integer(low: int | None = None) -> Reader:
    def read(value: Any, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise OptionError(f"{_name(name)}: expected an integer{_bound(low)}, got {value!r}.")
        if low is not None and value < low:
            raise OptionError(f"{_name(name)}: expected an integer{_bound(low)}, got {value!r}.")
        return int(value)

    return read


def _bound(low: Any) -> str:
    return "" if low is None else f" >= {low}"


def _number(
    low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False
) -> Reader:
    lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
    hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
    where = f" in {lo or '(-inf'}, {hi or 'inf)'}" if (low is not None or high is not None) else ""

    def read(value: Any, name: str) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise OptionError(f"{_name(name)}: expected a number{where}, got {value!r}.")
        v = float(value)
        if low is not None and (v <= low if low_open else v < low):
            raise OptionError(f"{_name(name)}: expected a number{where}, got {value!r}.")
        if high is not None and (v >= high if high_open else v > high):
            raise OptionError(f"{_name(name)}: expected a number{where}, got {value!r}.")
        return v

    return read


def _optional(reader: Reader) -> Reader:
    def read(value: Any, name: str) -> Any:
        return None if is_null(value) else reader(value, name)

    return read


def _choice(*choices: str) -> Reader:
    def read(value: Any, name: str) -> str:
        if not isinstance(value, str) or value not in choices:
            raise OptionError(f"{_name(name)} must be one of {', '.join(choices)}; got {value!r}.")
        return value

    return read


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise OptionError(f"{_name(name)}: expected a text value, got {value!r}.")
    return value


def _score_rule(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise OptionError(f"{_name(name)}: expected a score rule name, got {value!r}.")
    try:
        image_score(torch.zeros(2, 2), rule=value)
    except ValueError as err:
        raise OptionError(f"{_name(name)}: {err}") from None
    return value


def _variant_range(value: Any, name: str) -> tuple[int, int]:
    """``num_variants``: an int >= 0 or an inclusive [low, high] range with 0 <= low <= high."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)
    ):
        pair = (int(value[0]), int(value[1]))
    else:
        raise OptionError(f"{_name(name)}: expected an integer or a [low, high] range of integers, got {value!r}.")
    if pair[0] < 0 or pair[1] < pair[0]:
        raise OptionError(
            f"{_name(name)}: the range {list(value) if not isinstance(value, int) else value} is empty "
            "or negative; use 0 <= low <= high, e.g. [1, 3]."
        )
    return pair


def _existing_path(value: Any, name: str) -> str:
    if value is None or not str(value).strip():
        raise OptionError(f"{_name(name)}: {name} is not set: pass {_name(name)} <folder | datalist.json | list.csv>.")
    if not isinstance(value, (str, os.PathLike)):
        raise OptionError(f"{_name(name)}: expected a path, got {value!r}.")
    if not os.path.exists(value):
        raise OptionError(f"{_name(name)}: {name} does not exist: {value}")
    return str(value)


def _existing_file(value: Any, name: str) -> str:
    if not isinstance(value, (str, os.PathLike)) or not os.path.isfile(value):
        raise OptionError(f"{_name(name)}: file not found: {value!r}.")
    return str(value)


def _strides(value: Any, name: str) -> Any:
    return value  # checked together with image_size (see Options._check_image_size)


def read_params(cls: type, value: Any, name: str) -> dict[str, Any]:
    """Read a dict of parameters for the frozen dataclass ``cls`` (e.g. ``--pbtseg#fill_holes false``).

    Boolean fields (annotated ``bool``) go through :func:`as_bool`; unknown names fail. Other fields are left to
    ``cls`` itself.

    Returns:
        the dict with booleans converted.
    """
    if is_null(value):
        return {}
    if not isinstance(value, Mapping):
        raise OptionError(f"{_name(name)}: expected a dict of {cls.__name__} fields, got {value!r}.")
    known = {f.name: f for f in fields(cls)}
    out, errors = {}, []
    for key, v in value.items():
        if key not in known:
            errors.append(f"{_name(name + '#' + str(key))}: unknown {cls.__name__} field (known: {', '.join(known)}).")
            continue
        annotation = known[key].type if isinstance(known[key].type, str) else getattr(known[key].type, "__name__", "")
        try:
            out[key] = as_bool(v, f"{name}#{key}") if annotation == "bool" else v
        except OptionError as err:
            errors.append(str(err))
    if errors:
        raise OptionError("\n  ".join(errors))
    return out


def _pbtseg_params(value: Any, name: str) -> dict[str, Any]:
    return read_params(PBTSegParams, value, name)


# ---------------------------------------------------------------------------------------------- options objects


def option(reader: Reader, doc: str = "") -> Any:
    """A dataclass field read by ``reader`` when the options object is built (no default: configs pass all)."""
    return field(default=MISSING, metadata={"read": reader, "doc": doc})


@dataclass(frozen=True, kw_only=True)
class Options:
    """Base class: on construction every field is converted and checked by the reader in its metadata.

    Subclasses are frozen dataclasses whose fields are the options of one workflow; configs build them with
    ``{"_target_": "bundle.options.TrainOptions", "resume": "@resume", ...}`` and use the converted values as
    ``$@options.resume``.

    Raises:
        OptionError: listing every option with a bad value, by name.
    """

    workflow = "bundle"

    def __post_init__(self) -> None:
        errors: list[str] = []
        for f in fields(self):
            reader = f.metadata.get("read")
            if reader is None:
                continue
            try:
                object.__setattr__(self, f.name, reader(getattr(self, f.name), f.name))
            except OptionError as err:
                errors.append(str(err))
        if not errors:
            errors += self._cross_checks()
        if errors:
            raise OptionError(
                f"{self.workflow}: {len(errors)} option(s) with values the bundle cannot use, "
                "stopped before any work:\n  " + "\n  ".join(errors)
            )

    def _cross_checks(self) -> list[str]:
        """Checks that involve several options (after each was read); returns error lines."""
        errors = []
        if hasattr(self, "image_size") and hasattr(self, "network_strides"):
            try:
                check_image_size(self.image_size, self.network_strides)  # type: ignore[attr-defined]
            except ValueError as err:
                errors.append(f"--image_size: {err}")
        return errors

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def report(self) -> dict[str, Any]:
        """Log the options as read (``options: calibrate=False, ...``) and return them as a dict."""
        values = self.as_dict()
        logger.info("%s options as read: %s", self.workflow, ", ".join(f"{k}={v!r}" for k, v in values.items()))
        return values


_POSITIVE_INT = _integer(1)
_NON_NEGATIVE_INT = _integer(0)
_UNIT = _number(0.0, 1.0)
_OPTIONAL_UNIT = _optional(_UNIT)


@dataclass(frozen=True, kw_only=True)
class TrainOptions(Options):
    """Options of ``configs/train.json`` (and ``multi_gpu_train.json`` merged over it)."""

    workflow = "train.json"

    dataset_dir: str = option(_existing_path, "dataset folder, datalist JSON or CSV")
    image_size: int = option(_POSITIVE_INT, "side length; a multiple of the UNet's total stride")
    network_strides: Any = option(_strides, "the UNet's strides (from network_def), to check image_size")
    batch_size: int = option(_POSITIVE_INT, "healthy images per batch")
    val_batch_size: int = option(_POSITIVE_INT, "validation batch size")
    num_variants: tuple[int, int] = option(_variant_range, "synthetic variants per healthy image")
    include_healthy: bool = option(_boolean, "the healthy copy joins each image's variants in the batch")
    anomaly_prob: float = option(_UNIT, "probability that a variant carries an anomaly")
    synthesis: str = option(_choice("online", "offline"), "online synthesis or offline variants")
    learning_rate: float = option(_number(0.0, low_open=True), "AdamW learning rate")
    weight_decay: float = option(_number(0.0), "AdamW weight decay")
    use_ema: bool = option(_boolean, "validate and save an exponential moving average of the weights")
    ema_decay: float = option(_number(0.0, 1.0, high_open=True), "EMA decay per iteration")
    amp: bool = option(_boolean, "mixed precision (CUDA)")
    num_workers: int = option(_NON_NEGATIVE_INT, "DataLoader workers")
    cache_rate: float = option(_UNIT, "share of preprocessed training images cached")
    score_rule: str = option(_score_rule, "validation image score rule")
    rule_selection: str = option(
        _choice("published", "validation"),
        "after training, choose evaluate's score and mask rules on the validation monitor (models/threshold.json)",
    )
    resume: bool = option(_boolean, "continue from the newest training checkpoint")
    resume_ckpt: str | None = option(_optional(_existing_file), "continue from this training checkpoint")
    select_best_model: bool = option(_boolean, "models/model.pt = best validation weights instead of the final ones")

    def _cross_checks(self) -> list[str]:
        errors = super()._cross_checks()
        if self.num_variants[1] == 0 and not self.include_healthy:
            errors.append("--num_variants: 0 variants without --include_healthy true leaves nothing to train on.")
        return errors


@dataclass(frozen=True, kw_only=True)
class RuleOptions(Options):
    """The operating-point options shared by evaluation and inference (how scores and masks are made; defaults
    from ``models/threshold.json`` when it holds them, see :mod:`bundle.evaluation.operating_point`)."""

    score_rule: str = option(_score_rule, "image score rule")
    score_smoothing: float = option(
        _number(0.0, 0.5), "Gaussian sigma of the error map for the score, fraction of the size"
    )
    mask_threshold: float | None = option(_OPTIONAL_UNIT, "fixed mask threshold on |image - recon|")
    mask_relative: float = option(_UNIT, "relative factor of the per-image mask rule (published 0.2)")
    mask_floor: float = option(_UNIT, "lower bound of the per-image mask rule (published 0.03)")
    mask_polarity: str = option(
        _choice(*MASK_POLARITIES), "absolute: |image - recon| (published); brighter: only where image > recon"
    )
    mask_smoothing: float = option(
        _number(0.0, 0.5), "Gaussian sigma of |image - recon| for the mask, fraction of the size"
    )
    restrict_to_lungs: bool = option(_boolean, "mask only inside the dilated lungs")
    lung_dilation: float = option(_number(0.0), "lung dilation, fraction of the image size")
    fail_on_skipped: bool = option(_boolean, "exit status 2 when files were skipped")


@dataclass(frozen=True, kw_only=True)
class EvaluateOptions(RuleOptions):
    """Options of ``configs/evaluate.json`` (merged over train.json)."""

    workflow = "evaluate.json"

    dataset_dir: str = option(_existing_path, "dataset folder, datalist JSON or CSV")
    eval_split: str = option(_choice("test", "validation"), "split to evaluate")
    image_size: int = option(_POSITIVE_INT, "side length; a multiple of the UNet's total stride")
    network_strides: Any = option(_strides, "the UNet's strides (from network_def), to check image_size")
    val_batch_size: int = option(_POSITIVE_INT, "batch size")
    calibrate: bool = option(_boolean, "write the best-F1 / best-Dice operating point to threshold_path")
    eval_rules: str = option(
        _choice("from_file", "published"),
        "from_file: score/mask rules and thresholds from threshold_path when it exists; published: ignore that file",
    )


@dataclass(frozen=True, kw_only=True)
class InferenceOptions(RuleOptions):
    """Options of ``configs/inference.json``."""

    workflow = "inference.json"

    # no dataset_dir here: MONAI Label builds the post-processing (which reads these options) without one;
    # bundle.inference.inference_datalist reports a missing dataset_dir by itself.
    image_size: int = option(_POSITIVE_INT, "side length; a multiple of the UNet's total stride")
    network_strides: Any = option(_strides, "the UNet's strides (from network_def), to check image_size")
    batch_size: int = option(_POSITIVE_INT, "images per batch")
    num_workers: int = option(_NON_NEGATIVE_INT, "DataLoader workers")
    write_error_maps: bool = option(_boolean, "write <name>_error.tiff")
    write_overlays: bool = option(_boolean, "write <name>_overlay.png")
    score_threshold: float | None = option(_OPTIONAL_UNIT, "image label threshold on the score")
    lung_cache_dir: str | None = option(_optional(_text), "folder of cached lung maps")


@dataclass(frozen=True, kw_only=True)
class PreprocessOptions(Options):
    """Options of ``configs/preprocess.json`` (run ids ``lungs`` and ``synthesize``)."""

    workflow = "preprocess.json"

    dataset_dir: str = option(_existing_path, "dataset folder")
    include_test: bool = option(_boolean, "also the val/ and test/ images (lungs)")
    overwrite: bool = option(_boolean, "redo finished outputs")
    progress: bool = option(_boolean, "progress bar")
    num_workers: int | None = option(
        _optional(_NON_NEGATIVE_INT), "worker processes (None: one per core, 0: in-process)"
    )
    montage_size: int = option(_NON_NEGATIVE_INT, "images in the QA montage")
    num_variants: tuple[int, int] = option(_variant_range, "variants per image (synthesize)")
    synthesis_seed: int = option(_integer(), "seed of the offline variants")
    pbtseg: dict = option(_pbtseg_params, "PBTSeg parameters (bundle.lungs.pbtseg.PBTSegParams fields)")

    def _cross_checks(self) -> list[str]:
        errors = super()._cross_checks()
        if self.num_variants[1] == 0:
            errors.append("--num_variants: at least one variant per image is needed, got 0.")
        return errors
