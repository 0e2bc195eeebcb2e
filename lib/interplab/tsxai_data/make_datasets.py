"""Make ``gunpoint.npz`` and ``basicmotions.npz`` (and ``MANIFEST.json``) once, from aeon's bundled copies.

Why files and not aeon at run time: no aeon release fits the InterpLab stack (pandas 3.1.1, numpy
2.4.6). Checked: aeon 1.6.0 pins ``pandas<3.1`` and ``numba<0.64`` (numba 0.63 needs ``numpy<2.4``);
1.3-1.5 pin ``pandas<2.4``; 1.0-1.2 pin ``numpy<2.3`` or older. So aeon cannot live in the course environment; instead this script
runs once, in a throwaway virtual environment, and the two small datasets ship as npz files:

    python3 -m venv /tmp/aeon-venv && /tmp/aeon-venv/bin/pip install aeon==1.6.0
    /tmp/aeon-venv/bin/python lib/interplab/tsxai_data/make_datasets.py

``aeon.datasets.load_gunpoint`` and ``load_basic_motions`` read files that ship inside the aeon
wheel (``aeon/datasets/data/<Name>/<Name>_{TRAIN,TEST}.ts``). The script proves that no download
happens: it disables sockets before loading, so any network access would raise, and it records the
sha256 of the bundled source files it read.

Each npz holds ``X_train``/``X_test`` (float32, shape ``(n_cases, n_channels, n_timepoints)``),
``y_train``/``y_test`` (int64 class indices) and ``class_labels`` (aeon's label strings, sorted;
class ``i`` is ``class_labels[i]``). Values are aeon's, cast from float64 to float32.
"""
from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATASETS = {"gunpoint": ("GunPoint", "load_gunpoint"), "basicmotions": ("BasicMotions", "load_basic_motions")}
CLASS_NAMES = {
    "gunpoint": {"1": "Gun", "2": "Point"},
    "basicmotions": {"badminton": "Badminton", "running": "Running", "standing": "Standing", "walking": "Walking"},
}


def _no_network(*args, **kwargs):
    raise RuntimeError("make_datasets.py: a network access was attempted; aeon should read its bundled files")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    import aeon
    import aeon.datasets

    socket.socket.connect = _no_network  # type: ignore[method-assign]
    socket.socket.connect_ex = _no_network  # type: ignore[method-assign]
    socket.create_connection = _no_network  # type: ignore[assignment]
    socket.getaddrinfo = _no_network  # type: ignore[assignment]

    bundled = Path(aeon.datasets.__file__).parent / "data"
    manifest = {"aeon_version": aeon.__version__, "network": "sockets disabled while loading", "datasets": {}}
    for slug, (problem, loader_name) in DATASETS.items():
        loader = getattr(aeon.datasets, loader_name)
        X_train, y_train = loader(split="train")
        X_test, y_test = loader(split="test")
        labels = sorted(set(y_train) | set(y_test))
        index = {label: i for i, label in enumerate(labels)}
        arrays = {
            "X_train": np.ascontiguousarray(X_train, dtype=np.float32),
            "y_train": np.array([index[v] for v in y_train], dtype=np.int64),
            "X_test": np.ascontiguousarray(X_test, dtype=np.float32),
            "y_test": np.array([index[v] for v in y_test], dtype=np.int64),
            "class_labels": np.array(labels, dtype=np.str_),
            "class_names": np.array([CLASS_NAMES[slug][v] for v in labels], dtype=np.str_),
        }
        out = HERE / f"{slug}.npz"
        np.savez_compressed(out, **arrays)
        sources = sorted((bundled / problem).glob(f"{problem}_*.ts"))
        manifest["datasets"][slug] = {
            "aeon_loader": f"aeon.datasets.{loader_name}",
            "sources": {f"aeon/datasets/data/{problem}/{p.name}": _sha256(p) for p in sources},
            "shapes": {k: list(v.shape) for k, v in arrays.items()},
            "class_labels": labels,
            "class_names": [CLASS_NAMES[slug][v] for v in labels],
            "npz_sha256": _sha256(out),
        }
        print(f"{slug}: train {X_train.shape}, test {X_test.shape}, classes {labels} -> {out.name}")
    (HERE / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
