"""Importers: public face-parsing datasets → the palsyseg dataset contract (shared/CONTRACT.md).

``import_dataset(format, src, out)`` reads a dataset *as its authors distribute it* and writes a
contract dataset: ``manifest.csv``, ``images/<source>/...`` and ``masks/<source>/...``, where
``<source>`` (also the manifest's extra ``source`` column, e.g. ``lapa/train``) keeps the
provenance. Every imported face is healthy (``diagnosis=healthy``, ``affected_side=none``,
``grade=1``): no pixel is ever FPP. The output is built in a temporary sibling and moved into
place only when *every* image converted cleanly (:func:`palsyseg.atomic.atomic_directory`);
otherwise a :class:`~palsyseg.errors.DatasetError` lists one line per broken file and nothing
is written.

Label mapping (every source value is listed; anything else in a mask is an error, never
relabelled silently): brows → eyebrow; eyes → eye; lips and inner mouth → mouth; hair → hair;
skin, nose and ears → skin; neck, cloth, hat, eyeglasses, earring, necklace and background →
background. The tables are 256-entry lookup arrays (``table[mask]``).

Layouts supported, and the sources followed:

``celebamask-hq`` — CelebAMask-HQ (Lee et al., CVPR 2020), github.com/switchablenorms/CelebAMask-HQ::

    SRC/CelebA-HQ-img/<id>.jpg                               1024×1024 photos, id 0..29999
    SRC/CelebAMask-HQ-mask-anno/<id // 2000>/<%05d id>_<part>.png   512×512 binary part masks
    SRC/CelebA-HQ-to-CelebA-mapping.txt   optional: "idx orig_idx orig_file" (ships with the data)
    SRC/list_eval_partition.txt           optional, from CelebA: "<orig_file> <0|1|2>"
    SRC/identity_CelebA.txt               optional, from CelebA (on request): "<orig_file> <identity>"
    SRC/CelebAMask-HQ-attribute-anno.txt  optional: CelebA attributes (ships with the data)

  Parts are merged exactly like the official ``face_parsing/Data_preprocessing/g_mask.py``
  (its ``label_list`` "list2"): parts are painted in the order of :data:`CELEBAMASK_PARTS`, the
  ``k``-th part taking value ``k`` (the label table of ``face_parsing/README.md``), so a later
  part overwrites an earlier one — hair over skin, hat over hair, neck over skin, and the eyes
  over the eyeglasses (``eye_g`` comes *before* ``l_eye``/``r_eye``). A part pixel is "on" when
  its value is 255 (white); the released part PNGs are black/white RGB, which g_mask reads as
  "channel 0 non-zero"; any value other than 0 or 255 is an error. The merged 19-class map is
  then mapped with :data:`CELEBAMASK_TO_LABEL`.
  Resolution: the mask keeps its annotated 512×512; a larger photo of the same aspect ratio is
  downscaled to the mask size with ``cv2.INTER_AREA`` (the anti-aliasing choice for shrinking)
  and re-encoded as JPEG (quality :data:`CELEBAMASK_JPEG_QUALITY`); a photo already at the mask
  size is copied byte for byte. Upsampling the mask instead would invent 4× the boundary pixels
  and quadruple storage for a model that trains at 250 px.
  patient_id: ``celeba-<identity>`` when both the HQ→CelebA mapping and CelebA's
  ``identity_CelebA.txt`` are present (CelebA holds several photos per person; grouping by
  identity keeps one person out of both train and test). Without them each image is its own
  patient (``celebamask-hq-<id>``) — a leakage risk the split cannot see, logged as a warning.
  source: ``celebamask-hq/<train|val|test>`` from CelebA's ``list_eval_partition.txt`` through
  the mapping (as FaRL's ``farl/datasets/celebamask_hq.py`` does; the official ``g_partition.py``
  thresholds ``orig_idx`` instead), else ``celebamask-hq``. ``glasses`` is true when an
  ``eye_g`` part exists; ``beard`` comes from the attribute file's ``No_Beard`` when present.

``lapa`` — LaPa (Liu et al., AAAI 2020), github.com/JDAI-CV/lapa-dataset (README, labelmap.txt);
file names as read by FaRL's ``farl/datasets/lapa.py``::

    SRC/{train,val,test}/images/<name>.jpg
    SRC/{train,val,test}/labels/<name>.png      8-bit class map, values 0..10 (:data:`ELEVEN_CLASSES`)
    SRC/{train,val,test}/landmarks/<name>.txt   106 points; not imported (no contract column)

  Every split present is imported (at least one is required); source ``lapa/<split>``;
  patient_id ``lapa-<name>`` (LaPa publishes no identities).

``helen`` — the relabelled HELEN* of Lin et al., "Face Parsing with RoI Tanh-Warping" (CVPR
2019), github.com/JPlin/Relabeled-HELEN-Dataset (README), the 11-class Helen used by face-parsing
repositories such as hhj1897/face_parsing::

    SRC/train/<name>_image.jpg, <name>_label.png, <name>_viz.jpg (visualisation, ignored)
    SRC/test/...          test set at original size (same annotations as original HELEN)
    SRC/test_resize/...   the same test faces resized; imported only when test/ is absent

  Labels 0..10 with the LaPa meanings. ``test_resize/`` holds the *same* faces as ``test/``;
  importing both would put each test face in the dataset twice, so one is taken. Source
  ``helen/<split>``; patient_id ``helen-<name>`` (no identities published).

In all formats the photo is decoded (to catch unreadable files and EXIF-rotated JPEGs whose
decoded size differs from the mask) and, unless resized, copied unchanged: JPEG stays JPEG.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from palsyseg.atomic import atomic_directory
from palsyseg.errors import ConfigError, DatasetError, Problem
from palsyseg.labels import LABEL_NAMES, NUM_CLASSES, Label

if TYPE_CHECKING:
    from rich.table import Table

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("celebamask-hq", "lapa", "helen")

_UNMAPPED = 255  # lookup-table value for a source value that has no mapping (→ error)

# ------------------------------------------------------------------------------------------
# Label maps

CELEBAMASK_PARTS: tuple[str, ...] = (
    "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)  # fmt: skip
"""Official merge order (g_mask.py "list2"); part ``k`` (1-based) takes merged value ``k``."""

_CELEBAMASK_PART_LABEL: dict[str, Label] = {
    "skin": Label.SKIN,
    "nose": Label.SKIN,
    "eye_g": Label.BACKGROUND,  # eyeglasses
    "l_eye": Label.EYE,
    "r_eye": Label.EYE,
    "l_brow": Label.EYEBROW,
    "r_brow": Label.EYEBROW,
    "l_ear": Label.SKIN,
    "r_ear": Label.SKIN,
    "mouth": Label.MOUTH,  # inner mouth
    "u_lip": Label.MOUTH,
    "l_lip": Label.MOUTH,
    "hair": Label.HAIR,
    "hat": Label.BACKGROUND,
    "ear_r": Label.BACKGROUND,  # earring
    "neck_l": Label.BACKGROUND,  # necklace
    "neck": Label.BACKGROUND,
    "cloth": Label.BACKGROUND,
}

ELEVEN_CLASSES: tuple[str, ...] = (
    "background", "skin", "left_eyebrow", "right_eyebrow", "left_eye", "right_eye",
    "nose", "upper_lip", "inner_mouth", "lower_lip", "hair",
)  # fmt: skip
"""LaPa ``labelmap.txt`` and HELEN* README: value ``i`` is ``ELEVEN_CLASSES[i]``."""

_ELEVEN_CLASS_LABEL: dict[str, Label] = {
    "background": Label.BACKGROUND,
    "skin": Label.SKIN,
    "left_eyebrow": Label.EYEBROW,
    "right_eyebrow": Label.EYEBROW,
    "left_eye": Label.EYE,
    "right_eye": Label.EYE,
    "nose": Label.SKIN,
    "upper_lip": Label.MOUTH,
    "inner_mouth": Label.MOUTH,
    "lower_lip": Label.MOUTH,
    "hair": Label.HAIR,
}


def _lookup_table(labels: Iterable[Label]) -> np.ndarray:
    """A 256-entry uint8 table: source value ``i`` → our label; unlisted values → ``_UNMAPPED``."""
    table = np.full(256, _UNMAPPED, dtype=np.uint8)
    for value, label in enumerate(labels):
        table[value] = label
    table.setflags(write=False)
    return table


CELEBAMASK_TO_LABEL = _lookup_table(
    [Label.BACKGROUND, *(_CELEBAMASK_PART_LABEL[p] for p in CELEBAMASK_PARTS)]
)
"""Merged CelebAMask-HQ value (0 background, 1..18 = :data:`CELEBAMASK_PARTS`) → our label."""
LAPA_TO_LABEL = _lookup_table(_ELEVEN_CLASS_LABEL[name] for name in ELEVEN_CLASSES)
"""LaPa value 0..10 → our label."""
HELEN_TO_LABEL = LAPA_TO_LABEL
"""HELEN* uses the LaPa values and meanings (0..10)."""

CELEBAMASK_JPEG_QUALITY = 95
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def map_labels(source: np.ndarray, table: np.ndarray, *, file: str, dataset: str) -> np.ndarray:
    """Map a source class map through ``table``; raise naming ``file`` and every unmapped value."""
    mapped = table[source]
    unmapped = mapped == _UNMAPPED
    if unmapped.any():
        values = ", ".join(str(v) for v in np.unique(source[unmapped]))
        known = int(np.count_nonzero(table != _UNMAPPED))
        raise DatasetError(
            Problem(
                file=file,
                rule=f"label value(s) {values} not in the {dataset} label map (0–{known - 1})",
            )
        )
    return mapped


def merge_celebamask_parts(parts: Mapping[str, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Merge boolean part masks into the official 19-class CelebAMask-HQ map (g_mask.py order).

    Parts are painted in :data:`CELEBAMASK_PARTS` order, later parts overwriting earlier ones;
    absent parts are skipped. Value 0 is background.
    """
    merged = np.zeros(shape, dtype=np.uint8)
    for value, part in enumerate(CELEBAMASK_PARTS, start=1):
        if part in parts:
            merged[parts[part]] = value
    return merged


# ------------------------------------------------------------------------------------------
# Reading source files


def _open_png(path: Path) -> Any:
    """Open and fully decode a PNG with Pillow (mode kept), refusing non-PNG and oversize files."""
    from PIL import Image, UnidentifiedImageError

    from palsyseg.data.images import MAX_PIXELS

    try:
        image = Image.open(path)
        if image.format != "PNG":
            raise DatasetError(
                Problem(
                    file=str(path),
                    rule=f"is a {image.format} file, not a PNG (masks must be lossless)",
                )
            )
        if image.width * image.height > MAX_PIXELS:
            raise DatasetError(
                Problem(
                    file=str(path),
                    rule=f"{image.width}×{image.height} pixels exceeds the limit of {MAX_PIXELS}",
                )
            )
        image.load()
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as exc:
        raise DatasetError(
            Problem(file=str(path), rule=f"not a readable PNG ({type(exc).__name__})")
        ) from None
    return image


def _grey_from_rgb(rgb: np.ndarray, path: Path, what: str) -> np.ndarray:
    if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
        raise DatasetError(
            Problem(
                file=str(path),
                rule=f"{what} is a colour image (R, G, B differ); expected grey values",
            )
        )
    return np.ascontiguousarray(rgb[..., 0])


def read_class_map(path: Path) -> np.ndarray:
    """A class-index PNG (LaPa, HELEN*) as H×W uint8 values exactly as stored.

    Grey (``L``) and palette (``P``, the index is the class) are read as is; an RGB PNG is accepted
    only when its three channels are equal. Anything else (16-bit, colour) is an error.
    """
    image = _open_png(path)
    if image.mode in ("L", "P"):
        return np.asarray(image, dtype=np.uint8)
    if image.mode in ("RGB", "RGBA"):
        return _grey_from_rgb(np.asarray(image)[..., :3], path, "label map")
    raise DatasetError(
        Problem(file=str(path), rule=f"label map has PNG mode {image.mode} (expected 8-bit grey)")
    )


def read_part_mask(path: Path) -> np.ndarray:
    """A CelebAMask-HQ binary part PNG as a boolean H×W array (255 = part, 0 = not).

    Black/white RGB (as released), grey, palette and 1-bit PNGs are accepted; a value other than
    0 or 255 raises naming the file and the values.
    """
    image = _open_png(path)
    if image.mode == "1":
        values = np.asarray(image, dtype=np.uint8) * np.uint8(255)
    elif image.mode == "L":
        values = np.asarray(image, dtype=np.uint8)
    elif image.mode in ("RGB", "RGBA", "P", "LA"):
        values = _grey_from_rgb(np.asarray(image.convert("RGB")), path, "part mask")
    else:
        raise DatasetError(
            Problem(
                file=str(path),
                rule=f"part mask has PNG mode {image.mode} (expected 8-bit black/white)",
            )
        )
    stray = (values != 0) & (values != 255)
    if stray.any():
        found = ", ".join(str(v) for v in np.unique(values[stray])[:8])
        raise DatasetError(
            Problem(
                file=str(path),
                rule=f"part mask value(s) {found} (a part mask holds only 0 and 255)",
            )
        )
    return values == 255


# ------------------------------------------------------------------------------------------
# Indexing: which images exist, with which masks, and who they are


@dataclass(frozen=True)
class SourceImage:
    """One image of the source dataset and what the importer needs to convert it."""

    source: str  # provenance, e.g. "lapa/train"; also the output sub-folder
    name: str  # output file stem, unique within ``source``
    image: Path
    patient_id: str
    label: Path | None = None  # class-index PNG (LaPa, HELEN*)
    parts: Mapping[str, Path] = field(default_factory=dict)  # part name → PNG (CelebAMask-HQ)
    beard: bool | None = None

    @property
    def glasses(self) -> bool | None:
        return ("eye_g" in self.parts) if self.parts else None


def _visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _index_lapa(src: Path) -> tuple[list[SourceImage], list[Problem]]:
    samples: list[SourceImage] = []
    problems: list[Problem] = []
    splits = [s for s in ("train", "val", "test") if (src / s / "images").is_dir()]
    if not splits:
        return [], [
            Problem(
                file=str(src),
                rule="no LaPa split found (expected train/images, val/images or test/images)",
            )
        ]
    for split in splits:
        images, labels = src / split / "images", src / split / "labels"
        by_stem: dict[str, Path] = {}
        for path in _visible_files(images):
            if path.suffix.lower() not in _IMAGE_SUFFIXES:
                logger.info("skipping %s (not a JPEG or PNG image)", path)
                continue
            if path.stem in by_stem:
                problems.append(
                    Problem(
                        file=str(path),
                        rule=f"two images named {path.stem!r} (also {by_stem[path.stem].name})",
                    )
                )
                continue
            by_stem[path.stem] = path
        label_files = (
            {p.stem: p for p in _visible_files(labels) if p.suffix == ".png"}
            if labels.is_dir()
            else {}
        )
        for stem, path in by_stem.items():
            label = label_files.get(stem)
            if label is None:
                problems.append(
                    Problem(
                        file=str(path),
                        rule=f"no label map {split}/labels/{stem}.png for this image",
                    )
                )
                continue
            samples.append(SourceImage(f"lapa/{split}", stem, path, f"lapa-{stem}", label=label))
        problems += [
            Problem(file=str(label), rule=f"label map without an image in {split}/images/")
            for stem, label in label_files.items()
            if stem not in by_stem
        ]
    return samples, problems


_HELEN_FILE = re.compile(
    r"^(?P<name>.+)_(?P<kind>image|label|viz)\.(?P<ext>jpg|jpeg|png)$", re.IGNORECASE
)


def _index_helen(src: Path) -> tuple[list[SourceImage], list[Problem]]:
    samples: list[SourceImage] = []
    problems: list[Problem] = []
    splits = ["train"] if (src / "train").is_dir() else []
    if (src / "test").is_dir():
        splits.append("test")
    elif (src / "test_resize").is_dir():
        splits.append("test_resize")
    if not splits:
        return [], [
            Problem(
                file=str(src), rule="no HELEN* split found (expected train/, test/ or test_resize/)"
            )
        ]
    for split in splits:
        images: dict[str, Path] = {}
        labels: dict[str, Path] = {}
        for path in _visible_files(src / split):
            match = _HELEN_FILE.match(path.name)
            if match is None or match["kind"].lower() == "viz":
                continue
            kind, name = match["kind"].lower(), match["name"]
            if kind == "label" and path.suffix.lower() != ".png":
                problems.append(
                    Problem(file=str(path), rule="label map is not a PNG (labels must be lossless)")
                )
                continue
            found = images if kind == "image" else labels
            if name in found:
                problems.append(
                    Problem(
                        file=str(path),
                        rule=f"two {kind} files for {name!r} (also {found[name].name})",
                    )
                )
                continue
            found[name] = path
        for name, path in images.items():
            if name not in labels:
                problems.append(
                    Problem(file=str(path), rule=f"no label map {name}_label.png for this image")
                )
                continue
            samples.append(
                SourceImage(f"helen/{split}", name, path, f"helen-{name}", label=labels[name])
            )
        problems += [
            Problem(file=str(path), rule=f"label map without an image {name}_image.jpg")
            for name, path in labels.items()
            if name not in images
        ]
    return samples, problems


_CELEBAMASK_PART_FILE = re.compile(r"^(?P<id>\d{5})_(?P<part>[a-z_]+)\.png$")


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(
            Problem(file=str(path), rule=f"not a readable text file ({type(exc).__name__})")
        ) from None


def _read_table(path: Path, columns: int, *, skip: int = 0) -> list[tuple[int, list[str]]]:
    """Whitespace-separated rows of a text file as (1-based line, fields); wrong width → error."""
    lines = _read_lines(path)
    problems = []
    rows = []
    for number, line in enumerate(lines[skip:], start=skip + 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != columns:
            problems.append(
                Problem(
                    file=str(path),
                    row=number,
                    rule=f"expected {columns} fields, found {len(fields)}",
                )
            )
        else:
            rows.append((number, fields))
    if problems:
        raise DatasetError(problems)
    return rows


def _celebamask_metadata(
    src: Path,
) -> tuple[dict[int, str], dict[str, str], dict[str, str], dict[int, bool]]:
    """HQ id → CelebA file; CelebA file → split; CelebA file → identity; HQ id → beard."""
    mapping_file = src / "CelebA-HQ-to-CelebA-mapping.txt"
    partition_file = src / "list_eval_partition.txt"
    identity_file = src / "identity_CelebA.txt"
    attribute_file = src / "CelebAMask-HQ-attribute-anno.txt"
    hq_to_celeba: dict[int, str] = {}
    if mapping_file.is_file():
        for number, (idx, _orig_idx, orig_file) in _read_table(mapping_file, 3, skip=1):
            if not idx.isdigit():
                raise DatasetError(
                    Problem(
                        file=str(mapping_file), row=number, rule=f"idx {idx!r} is not an integer"
                    )
                )
            hq_to_celeba[int(idx)] = orig_file
    elif identity_file.is_file() or partition_file.is_file():
        raise DatasetError(
            Problem(
                file=str(mapping_file),
                rule="missing: identity_CelebA.txt / list_eval_partition.txt name CelebA files and need this mapping to reach CelebA-HQ ids",
            )
        )
    names = {"0": "train", "1": "val", "2": "test"}
    split_of: dict[str, str] = {}
    if partition_file.is_file():
        for number, (orig_file, group) in _read_table(partition_file, 2):
            if group not in names:
                raise DatasetError(
                    Problem(
                        file=str(partition_file),
                        row=number,
                        rule=f"partition {group!r} is not 0, 1 or 2",
                    )
                )
            split_of[orig_file] = names[group]
    identity_of = (
        {orig: ident for _, (orig, ident) in _read_table(identity_file, 2)}
        if identity_file.is_file()
        else {}
    )
    beard_of: dict[int, bool] = {}
    if attribute_file.is_file():
        header = _read_lines(attribute_file)[1:2]
        attributes = header[0].split() if header else []
        if "No_Beard" not in attributes:
            raise DatasetError(
                Problem(
                    file=str(attribute_file), row=2, rule="attribute header has no No_Beard column"
                )
            )
        column = attributes.index("No_Beard") + 1
        for number, fields in _read_table(attribute_file, len(attributes) + 1, skip=2):
            stem, value = Path(fields[0]).stem, fields[column]
            if not stem.isdigit() or value not in ("1", "-1"):
                raise DatasetError(
                    Problem(
                        file=str(attribute_file),
                        row=number,
                        rule=f"expected '<id>.jpg' and ±1 values, found {fields[0]!r}, No_Beard={value!r}",
                    )
                )
            beard_of[int(stem)] = value == "-1"
    return hq_to_celeba, split_of, identity_of, beard_of


def _index_celebamask_hq(src: Path) -> tuple[list[SourceImage], list[Problem]]:
    image_dir, anno_dir = src / "CelebA-HQ-img", src / "CelebAMask-HQ-mask-anno"
    missing = [
        Problem(file=str(d), rule="missing (CelebAMask-HQ layout)")
        for d in (image_dir, anno_dir)
        if not d.is_dir()
    ]
    if missing:
        return [], missing
    problems: list[Problem] = []
    images: dict[int, Path] = {}
    for path in _visible_files(image_dir):
        if path.suffix.lower() != ".jpg" or not path.stem.isdigit():
            problems.append(Problem(file=str(path), rule="not a CelebA-HQ image name (<id>.jpg)"))
        else:
            images[int(path.stem)] = path
    parts: dict[int, dict[str, Path]] = {}
    for path in sorted(
        p for p in anno_dir.rglob("*") if p.is_file() and not p.name.startswith(".")
    ):
        match = _CELEBAMASK_PART_FILE.match(path.name)
        if match is None or match["part"] not in _CELEBAMASK_PART_LABEL:
            problems.append(
                Problem(
                    file=str(path),
                    rule=f"not a CelebAMask-HQ part mask name (<%05d id>_<part>.png, part one of {', '.join(CELEBAMASK_PARTS)})",
                )
            )
            continue
        hq_id = int(match["id"])
        if path.parent != anno_dir / str(hq_id // 2000):
            problems.append(
                Problem(
                    file=str(path),
                    rule=f"part mask of image {hq_id} must be in folder {hq_id // 2000}/",
                )
            )
            continue
        parts.setdefault(hq_id, {})[match["part"]] = path
    hq_to_celeba, split_of, identity_of, beard_of = _celebamask_metadata(src)
    if not identity_of:
        logger.warning(
            "CelebAMask-HQ: no identity_CelebA.txt; each image is its own patient (identity leakage across splits is possible)"
        )
    samples: list[SourceImage] = []
    for hq_id, path in sorted(images.items()):
        if hq_id not in parts:
            problems.append(
                Problem(
                    file=str(path),
                    rule=f"no part masks {anno_dir.name}/{hq_id // 2000}/{hq_id:05d}_<part>.png for this image",
                )
            )
            continue
        source, patient = "celebamask-hq", f"celebamask-hq-{hq_id}"
        if hq_to_celeba:
            celeba_file = hq_to_celeba.get(hq_id)
            if celeba_file is None:
                problems.append(
                    Problem(
                        file=str(path),
                        rule=f"image id {hq_id} is not in CelebA-HQ-to-CelebA-mapping.txt",
                    )
                )
                continue
            if split_of:
                if celeba_file not in split_of:
                    problems.append(
                        Problem(
                            file=str(path),
                            rule=f"CelebA file {celeba_file} is not in list_eval_partition.txt",
                        )
                    )
                    continue
                source = f"celebamask-hq/{split_of[celeba_file]}"
            if identity_of:
                if celeba_file not in identity_of:
                    problems.append(
                        Problem(
                            file=str(path),
                            rule=f"CelebA file {celeba_file} is not in identity_CelebA.txt",
                        )
                    )
                    continue
                patient = f"celeba-{identity_of[celeba_file]}"
        if beard_of and hq_id not in beard_of:
            problems.append(
                Problem(
                    file=str(path),
                    rule=f"image id {hq_id} is not in CelebAMask-HQ-attribute-anno.txt",
                )
            )
            continue
        samples.append(
            SourceImage(
                source, str(hq_id), path, patient, parts=parts[hq_id], beard=beard_of.get(hq_id)
            )
        )
    problems += [
        Problem(
            file=str(next(iter(found.values()))),
            rule=f"part masks of image {hq_id} but no {image_dir.name}/{hq_id}.jpg",
        )
        for hq_id, found in sorted(parts.items())
        if hq_id not in images
    ]
    return samples, problems


# ------------------------------------------------------------------------------------------
# Converting one image


def _celebamask_labels(sample: SourceImage) -> np.ndarray:
    """Read every part of one image, check they agree in size, merge and map them."""
    masks: dict[str, np.ndarray] = {}
    problems: list[Problem] = []
    for part, path in sample.parts.items():
        try:
            masks[part] = read_part_mask(path)
        except DatasetError as exc:
            problems += exc.problems
    if problems:
        raise DatasetError(problems)
    (first_part, first), *others = masks.items()
    for part, mask in others:
        if mask.shape != first.shape:
            problems.append(
                Problem(
                    file=str(sample.parts[part]),
                    rule=f"part mask is {mask.shape[1]}×{mask.shape[0]}, but "
                    f"{sample.parts[first_part].name} is {first.shape[1]}×{first.shape[0]}",
                )
            )
    if problems:
        raise DatasetError(problems)
    merged = merge_celebamask_parts(masks, first.shape)
    return map_labels(
        merged, CELEBAMASK_TO_LABEL, file=str(sample.parts[first_part]), dataset="CelebAMask-HQ"
    )


def _eleven_class_labels(dataset: str, table: np.ndarray) -> Callable[[SourceImage], np.ndarray]:
    def load(sample: SourceImage) -> np.ndarray:
        assert sample.label is not None
        return map_labels(
            read_class_map(sample.label), table, file=str(sample.label), dataset=dataset
        )

    return load


@dataclass(frozen=True)
class _Format:
    index: Callable[[Path], tuple[list[SourceImage], list[Problem]]]
    labels: Callable[[SourceImage], np.ndarray]
    downscale_image: bool  # photo may be larger than the mask (same aspect) → INTER_AREA


_FORMATS: dict[str, _Format] = {
    "celebamask-hq": _Format(_index_celebamask_hq, _celebamask_labels, downscale_image=True),
    "lapa": _Format(
        _index_lapa, _eleven_class_labels("LaPa", LAPA_TO_LABEL), downscale_image=False
    ),
    "helen": _Format(
        _index_helen, _eleven_class_labels("HELEN*", HELEN_TO_LABEL), downscale_image=False
    ),
}
assert tuple(_FORMATS) == FORMATS


def _convert(sample: SourceImage, fmt: _Format, root: Path) -> tuple[str, str, np.ndarray, bool]:
    """Write one image and its mask below ``root``; return (image rel, mask rel, mask, resized)."""
    import cv2

    from palsyseg.data.images import read_rgb, write_jpeg, write_png

    problems: list[Problem] = []
    labels: np.ndarray | None = None
    rgb: np.ndarray | None = None
    try:
        labels = fmt.labels(sample)
    except DatasetError as exc:
        problems += exc.problems
    try:
        rgb = read_rgb(sample.image)
    except DatasetError as exc:
        problems += exc.problems
    if problems:
        raise DatasetError(problems)
    assert labels is not None and rgb is not None
    (height, width), (mask_h, mask_w) = rgb.shape[:2], labels.shape
    resized = False
    if (height, width) != (mask_h, mask_w):
        same_aspect = height * mask_w == width * mask_h
        if not (fmt.downscale_image and same_aspect and height > mask_h):
            label_file = sample.label or next(iter(sample.parts.values()))
            raise DatasetError(
                Problem(
                    file=str(sample.image),
                    rule=f"image is {width}×{height} (decoded), but its mask {label_file.name} is {mask_w}×{mask_h}",
                )
            )
        rgb = cv2.resize(rgb, (mask_w, mask_h), interpolation=cv2.INTER_AREA)
        resized = True

    suffix = ".jpg" if resized else sample.image.suffix.lower()
    image_rel = f"images/{sample.source}/{sample.name}{suffix}"
    mask_rel = f"masks/{sample.source}/{sample.name}.png"
    destination = root / image_rel
    destination.parent.mkdir(parents=True, exist_ok=True)
    if resized:
        write_jpeg(destination, rgb, quality=CELEBAMASK_JPEG_QUALITY)
    else:
        shutil.copyfile(sample.image, destination)
    write_png(root / mask_rel, labels)
    return image_rel, mask_rel, labels, resized


# ------------------------------------------------------------------------------------------
# The step


@dataclass
class ImportSummary:
    """What an import wrote: images per source, patients, label pixel totals."""

    format: str
    src: Path
    out: Path
    images_per_source: dict[str, int]
    patients_per_source: dict[str, int]
    label_pixels: dict[str, int]
    resized_images: int
    seconds: float

    @property
    def images(self) -> int:
        return sum(self.images_per_source.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "src": str(self.src),
            "out": str(self.out),
            "images": self.images,
            "images_per_source": dict(self.images_per_source),
            "patients_per_source": dict(self.patients_per_source),
            "label_pixels": dict(self.label_pixels),
            "resized_images": self.resized_images,
            "seconds": round(self.seconds, 3),
        }

    def table(self) -> Table:
        from rich.table import Table

        table = Table(title=f"Imported {self.format} → {self.out}")
        table.add_column("source")
        table.add_column("images", justify="right")
        table.add_column("patients", justify="right")
        for source, count in self.images_per_source.items():
            table.add_row(source, str(count), str(self.patients_per_source[source]))
        table.add_row("total", str(self.images), "", style="bold")
        total_pixels = max(1, sum(self.label_pixels.values()))
        shares = ", ".join(
            f"{name} {100 * n / total_pixels:.1f}%" for name, n in self.label_pixels.items()
        )
        resized = (
            f"; {self.resized_images} photos downscaled to their mask size"
            if self.resized_images
            else ""
        )
        table.caption = f"label pixels: {shares}{resized}"
        return table


def import_dataset(format: str, src: Path, out: Path, *, force: bool = False) -> ImportSummary:
    """Convert the public dataset at ``src`` (layout ``format``) into a contract dataset at ``out``.

    Promises: ``out`` appears complete — manifest (``diagnosis=healthy``, ``affected_side=none``,
    ``grade=1``, ``source``), images, masks with values 0–5 — and passes
    :func:`~palsyseg.data.manifest.read_manifest`; or, on any problem, nothing is written and a
    :class:`DatasetError` names every broken file (missing or orphan mask, unknown label value,
    size mismatch, unreadable file). An unknown ``format`` raises :class:`ConfigError` listing
    the valid ones. A non-empty ``out`` is replaced only with ``force``. See the module
    docstring for the layouts and the label mapping.
    """
    from palsyseg.data.manifest import ManifestRow, read_manifest, write_manifest
    from palsyseg.progress import track

    key = format.strip().lower()
    if key not in _FORMATS:
        raise ConfigError(f"unknown dataset format {format!r}; valid formats: {', '.join(FORMATS)}")
    fmt = _FORMATS[key]
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DatasetError(Problem(file=str(src), rule="source dataset directory does not exist"))
    if src.resolve() == out.resolve() or src.resolve().is_relative_to(out.resolve()):
        raise ConfigError(f"{out}: the output directory must not be (or contain) the source {src}")

    started = time.perf_counter()
    samples, problems = fmt.index(src)
    if problems:
        raise DatasetError(problems)
    if not samples:
        raise DatasetError(Problem(file=str(src), rule=f"no images found in the {key} layout"))
    logger.info("importing %d %s images from %s", len(samples), key, src)

    rows: list[ManifestRow] = []
    images_per_source: Counter[str] = Counter()
    patients: dict[str, set[str]] = {}
    pixels = np.zeros(NUM_CLASSES, dtype=np.int64)
    resized_images = 0
    with atomic_directory(out, force=force) as staging:
        for sample in track(samples, f"import {key}"):
            try:
                image_rel, mask_rel, labels, resized = _convert(sample, fmt, staging)
            except DatasetError as exc:
                problems += exc.problems
                continue
            pixels += np.bincount(labels.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
            resized_images += resized
            images_per_source[sample.source] += 1
            patients.setdefault(sample.source, set()).add(sample.patient_id)
            rows.append(
                ManifestRow(
                    image=image_rel,
                    mask=mask_rel,
                    patient_id=sample.patient_id,
                    diagnosis="healthy",
                    affected_side="none",
                    grade=1,
                    beard=sample.beard,
                    glasses=sample.glasses,
                    extras={"source": sample.source},
                )
            )
        if problems:
            raise DatasetError(problems)
        write_manifest(staging, rows)
        read_manifest(staging)  # the contract check; a failure here discards the staging dir

    summary = ImportSummary(
        format=key,
        src=src,
        out=out,
        images_per_source=dict(sorted(images_per_source.items())),
        patients_per_source={s: len(p) for s, p in sorted(patients.items())},
        label_pixels={LABEL_NAMES[i]: int(n) for i, n in enumerate(pixels)},
        resized_images=resized_images,
        seconds=time.perf_counter() - started,
    )
    logger.info("imported %d images into %s in %.1f s", summary.images, out, summary.seconds)
    return summary
