"""The demo's scenes on disk as an image folder: one subfolder per class, files ``img000.png``, ``img001.png``..."""
from __future__ import annotations

from pathlib import Path

from sglrp_widgets import demo


def scene_folder(root: Path, n: int, seed: int):
    """Write ``n`` demo scenes under ``root/<class name>/``; returns ``(images, labels)`` in file-number order."""
    from PIL import Image

    images, labels, _ = demo.make_scenes(n, seed=seed)
    for i, (im, lab) in enumerate(zip(images, labels[:, 0])):
        folder = Path(root) / demo.class_names[lab]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(folder / f"img{i:03d}.png")
    return images, labels
