#!/usr/bin/env bash
# Build (once) and print the path of an isolated virtual environment for MONAI Label.
#
# monailabel 0.8.5 needs numpy<2 (through pydicom-seg) and its own pinned stack, so it cannot share the
# bundle's environment. The venv is cached under ${ARTASYN_MONAILABEL_CACHE:-${XDG_CACHE_HOME:-~/.cache}/artasyn-monailabel},
# in a folder keyed by the hash of this script's requirement lists and the Python version: a second run
# only checks a stamp file. Concurrent callers wait on a lock; a half-built venv (no stamp) is rebuilt.
#
# Usage: bash scripts/monailabel_env.sh            # prints the venv folder on the last stdout line
#        PYTHON=python3.11 bash scripts/monailabel_env.sh
# Then:  <venv>/bin/python -m monailabel.main apps --download --name monaibundle --output apps
#        <venv>/bin/python -m monailabel.main start_server --app apps/monaibundle --studies <dir> \
#            --conf models <bundle_name> --conf zoo_source github --host 127.0.0.1 --port 8000
set -euo pipefail

PYTHON="${PYTHON:-python3}"
CACHE_ROOT="${ARTASYN_MONAILABEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/artasyn-monailabel}"

# torch first and pinned: a plain requirement would pull the multi-GB CUDA build; 2.13.0 is the CPU wheel.
TORCH_REQ="torch==2.13.0"
# Installed without dependencies: monailabel's own requirement list pulls sam2, a CUDA torch and more.
NODEPS_REQS="monai==1.6.1 monailabel==0.8.5 itk==5.4.7"
# What monailabel imports to serve the monaibundle app, plus the bundle's own runtime imports
# (bundle/ is put on sys.path by MONAI Label: scipy, scikit-image, pydicom, nibabel, pillow, tqdm, ignite,
# tensorboard for training through MONAI Label).
# pydicom-seg (imported at server start) needs numpy<2 and pydicom<3 (pip takes 2.4); bundle/io.py reads DICOM
# with pydicom 2.4 and 3.x alike. SimpleITK: MONAI Label's DICOM-to-NIfTI conversion; dcmqi: its
# itkimage2segimage tool, which a DICOMweb datastore otherwise downloads at start-up (and fails offline).
# pytest, pytest-timeout, hypothesis: tests/workflows/test_monailabel.py runs tests/unit/test_io.py here, under pydicom 2.4.
DEPS_REQS="numpy<2 itk-core==5.4.7 itk-io==5.4.7 fastapi uvicorn pydantic pydantic-settings python-dotenv
python-multipart httpx schedule timeloop expiring_dict cachetools watchdog psutil pydicom>=2.4,<3 pydicom-seg SimpleITK dcmqi
dicomweb-client[gcp]>=0.59.1 pynrrd girder-client einops pyyaml filelock passlib pyjwt bcrypt shapely requests
requests-toolbelt scipy scikit-image nibabel pillow tqdm pytorch-ignite==0.5.5 tensorboard pylibjpeg pylibjpeg-libjpeg
pylibjpeg-openjpeg pylibjpeg-rle pytest pytest-timeout hypothesis"

# monailabel/transform/post.py imports torchvision.utils.{make_grid, save_image} at start-up, for debug
# image dumps only. The PyPI torchvision wheel does not load beside the CPU torch wheel
# ("operator torchvision::nms does not exist"), so the venv gets this two-function stand-in that says so
# when called, instead of a 6.7 GB CUDA torch + torchvision install.
read -r -d '' SHIM_UTILS <<'EOF' || true
"""Stand-in for torchvision.utils in the MONAI Label venv (scripts/monailabel_env.sh).

monailabel imports make_grid/save_image at start-up; they are only used by its debug image dumps
(DumpImagePrediction2Dd, DeepEdit TensorBoard handlers), which this bundle does not use.
"""


def _unavailable(name):
    raise NotImplementedError(
        f"torchvision.utils.{name} is not installed in this MONAI Label environment (a stand-in module "
        "from scripts/monailabel_env.sh); install torchvision matching torch to use MONAI Label's image dumps"
    )


def make_grid(*args, **kwargs):
    _unavailable("make_grid")


def save_image(*args, **kwargs):
    _unavailable("save_image")
EOF

py_tag="$("$PYTHON" -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')"
key="$(printf '%s\n' "$py_tag" "$TORCH_REQ" "$NODEPS_REQS" "$DEPS_REQS" "$SHIM_UTILS" | sha256sum | cut -c1-12)"
VENV="$CACHE_ROOT/venv-monailabel0.8.5-$py_tag-$key"
STAMP="$VENV/.artasyn-complete"

mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.lock-$key"
flock 9

if [[ ! -f "$STAMP" ]]; then
    start=$SECONDS
    echo "building MONAI Label venv in $VENV (takes a few minutes once)" >&2
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    pip_install() {  # quiet, the log shown on failure (pip notes monailabel's unmet optional requirements)
        if ! "$VENV/bin/python" -m pip install --disable-pip-version-check "$@" >>"$VENV/.pip.log" 2>&1; then
            tail -n 40 "$VENV/.pip.log" >&2
            exit 1
        fi
    }
    set -f  # word-split the requirement lists without globbing "[gcp]"
    # shellcheck disable=SC2086
    pip_install "$TORCH_REQ"
    pip_install --no-deps $NODEPS_REQS
    pip_install "$TORCH_REQ" $DEPS_REQS
    set +f
    site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    mkdir -p "$site/torchvision"
    printf '"""Stand-in package: only torchvision.utils, see utils.py."""\n' >"$site/torchvision/__init__.py"
    printf '%s\n' "$SHIM_UTILS" >"$site/torchvision/utils.py"
    "$VENV/bin/python" -c "import monailabel.app, monailabel.tasks.infer.bundle, monailabel.tasks.train.bundle, itk, scipy, skimage, pydicom, nibabel" >&2
    date -u +%FT%TZ >"$STAMP"
    echo "MONAI Label venv ready after $((SECONDS - start)) s" >&2
fi
echo "$VENV"
