#!/usr/bin/env python3
"""Build the distributable bundle archive ``<name>_v<version>.zip``.

The archive holds exactly the bundle's own files under one top folder ``<name>/``: ``configs/``,
``bundle/``, ``models/``, ``docs/``, ``LICENSE`` and ``large_files.yml`` (no tests, scripts, caches or
data). ``<name>`` is the project name from ``pyproject.toml`` in snake case (the model-zoo folder name,
also the folder MONAI Label loads it from); ``<version>`` is ``configs/metadata.json``'s ``version``.
The copy of ``large_files.yml`` in the archive gets the md5 of each weight file it ships. Relative links in
the archive's Markdown files (the model card ``docs/README.md``) must point at files the archive holds.

Usage::

    python scripts/build_archive.py                       # -> dist/<name>_v<version>.zip
    python scripts/build_archive.py --output /tmp/out --bundle-root /path/to/bundle
    python scripts/build_archive.py --copy-to apps/monaibundle/model   # place it for MONAI Label
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

BUNDLE_DIRS = ("configs", "bundle", "models", "docs")
BUNDLE_FILES = ("LICENSE", "large_files.yml")
SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache", ".mypy_cache"}
SKIP_SUFFIXES = {".pyc", ".pyo", ".tmp"}
WEIGHTS = ("models/model.pt",)


def bundle_name(root: Path) -> str:
    """The bundle's folder name: ``[project] name`` of pyproject.toml with ``-`` replaced by ``_``."""
    text = (root / "pyproject.toml").read_text()
    match = re.search(r'^\s*name\s*=\s*"([^"]+)"', text.split("[project]", 1)[-1], flags=re.M)
    if not match:
        raise ValueError(f"{root / 'pyproject.toml'}: no [project] name")
    return match.group(1).replace("-", "_")


def bundle_version(root: Path) -> str:
    """``version`` of configs/metadata.json."""
    return str(json.loads((root / "configs" / "metadata.json").read_text())["version"])


def bundle_files(root: Path) -> list[str]:
    """Relative paths (posix) of every file that belongs in the archive, sorted."""
    missing = [p for p in (*BUNDLE_DIRS, *BUNDLE_FILES) if p != "models" and not (root / p).exists()]
    if missing:
        raise FileNotFoundError(f"{root}: bundle part(s) missing: {', '.join(missing)}")
    files = list(BUNDLE_FILES)
    for top in BUNDLE_DIRS:  # models/ may be absent: weights are not in git
        for dirpath, dirnames, filenames in os.walk(root / top):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info"))
            for f in sorted(filenames):
                if Path(f).suffix in SKIP_SUFFIXES or f.startswith("."):
                    continue
                files.append((Path(dirpath) / f).relative_to(root).as_posix())
    return sorted(files)


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def large_files_text(root: Path, files: list[str]) -> str:
    """large_files.yml for the archive: the repository's entries, with the md5 of shipped weights filled in."""
    import yaml

    spec = yaml.safe_load((root / "large_files.yml").read_text()) or {}
    entries = spec.get("large_files", [])
    for entry in entries:
        if entry.get("path") in files:
            entry["hash_val"] = md5sum(root / entry["path"])
            entry["hash_type"] = "md5"
    return yaml.safe_dump({"large_files": entries}, sort_keys=False)


_MD_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def broken_doc_links(root: Path, files: list[str]) -> list[str]:
    """``"<file>: <target>"`` for each relative Markdown link in the archive's ``.md`` files whose target
    is not in the archive (links with a scheme, ``mailto:`` and pure ``#anchors`` are not checked)."""
    inside = set(files)
    broken = []
    for rel in files:
        if not rel.endswith(".md"):
            continue
        for target in _MD_LINK.findall((root / rel).read_text(encoding="utf-8")):
            path = target.split("#", 1)[0]
            if not path or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", path):
                continue
            resolved = os.path.normpath((Path(rel).parent / path).as_posix()).replace(os.sep, "/")
            if resolved not in inside and not any(f.startswith(resolved.rstrip("/") + "/") for f in inside):
                broken.append(f"{rel}: {target}")
    return broken


def copy_bundle(root: str | os.PathLike = ".", dest: str | os.PathLike = "dist") -> Path:
    """Copy the bundle's files (the archive's content, weights as present) into ``<dest>/<name>/``.

    This is how the bundle is placed where MONAI Label loads it (``<app>/model/<name>/``).
    """
    root = Path(root).resolve()
    target = Path(dest) / bundle_name(root)
    for rel in bundle_files(root):
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target / rel)
    return target


def build_archive(
    root: str | os.PathLike = ".", output: str | os.PathLike = "dist", allow_missing_weights: bool = False
) -> Path:
    """Write ``<output>/<name>_v<version>.zip`` and return its path.

    Args:
        root: the bundle root (this repository).
        output: folder for the archive (created when missing).
        allow_missing_weights: build even when ``models/model.pt`` is absent (inference then needs the
            weights from ``large_files.yml``); by default that is an error.
    """
    root = Path(root).resolve()
    name, version = bundle_name(root), bundle_version(root)
    files = bundle_files(root)
    absent = [w for w in WEIGHTS if w not in files]
    if absent and not allow_missing_weights:
        raise FileNotFoundError(
            f"{root}: {', '.join(absent)} missing; train or fetch the weights first "
            "(or pass --allow-missing-weights to ship the bundle without them)"
        )
    broken = broken_doc_links(root, files)
    if broken:
        raise ValueError(f"{root}: links to files the archive does not contain: {'; '.join(broken)}")
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}_v{version}.zip"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=out_dir)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for rel in files:
                arcname = f"{name}/{rel}"
                if rel == "large_files.yml":
                    zf.writestr(arcname, large_files_text(root, files))
                else:
                    zf.write(root / rel, arcname)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bundle-root", default=str(Path(__file__).resolve().parents[1]), help="bundle root (default: this repository)"
    )
    parser.add_argument("--output", default="dist", help="output folder (default: dist)")
    parser.add_argument("--allow-missing-weights", action="store_true", help="build without models/model.pt")
    parser.add_argument(
        "--copy-to",
        metavar="DIR",
        help="instead of a zip, copy the bundle into DIR/<name>/ (e.g. a MONAI Label app's model/)",
    )
    args = parser.parse_args(argv)
    if args.copy_to:
        print(f"copied the bundle to {copy_bundle(args.bundle_root, args.copy_to)}")
        return 0
    try:
        target = build_archive(args.bundle_root, args.output, args.allow_missing_weights)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    with zipfile.ZipFile(target) as zf:
        count = len(zf.namelist())
    print(f"wrote {target} ({count} files, {target.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
