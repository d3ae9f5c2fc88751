"""Named public datasets: where each comes from, how to check a copy, and how to prepare it.

Each dataset is pinned to one exact upstream commit and checked by a *tree digest* of the files this
project reads, not by the bytes of a downloaded archive (GitHub re-creates archives on demand, and
their compression bytes may change). The digest is the sha256 of ``sha256sum``'s output over those
files, sorted by path, and so can be reproduced with coreutils in the extracted folder::

    find images labels image_sets -type f | LC_ALL=C sort | xargs sha256sum | sha256sum

i.e. ``sha256("".join(f"{sha256(file)}  {relative/posix/path}\\n" for each file sorted by path))``.
Text files (``.xml``, ``.txt``) are hashed with CRLF read as LF, so that a clone made with Git's
``core.autocrlf`` verifies too; files whose names start with ``.`` (``.DS_Store``) are not counted.

CARLA (the only one so far): ``github.com/DanielHfnr/Carla-Object-Detection-Dataset``, MIT licence,
1,028 dashcam-view PNG frames of 640x380 rendered by the CARLA simulator (Towns 01-04 in ``train``,
Town05 in ``test``), one Pascal VOC XML per frame in ``labels/`` (generated from the simulator's
segmentation, so expect label noise and frames without boxes). The repository's own COCO JSON
(``annotations/``) is defective (duplicate image ids, file names without the town prefix) and is
not used: the VOC labels are the source. :func:`prepare_carla` writes::

    OUTPUT/images/train/Town01_001020.png ...   (upstream train/ folder: the train and val splits)
    OUTPUT/images/test/Town05_001920.png ...
    OUTPUT/train.json, val.json, test.json      (COCO; file_name relative to OUTPUT/images)
    OUTPUT/LICENSE                              (the dataset's licence)
    OUTPUT/SOURCE.json                          (repository, commit, digest, split rule, counts)

Splits: ``test`` is upstream's ``image_sets/test.txt`` (249 Town05 frames, a town unseen in
training). ``val`` is carved from upstream's 779 ``trainval`` frames by :func:`carve_split`:
``round(0.1 * 779) = 78`` frames, the ones first when sorted by ``sha256(f"{seed}:{stem}")``
(seed 0); ``train`` is the other 701. (Upstream also publishes a 623 / 156 train / val split; the
carved one keeps more frames for training.) The val frames come from the same towns and drives
as train, so val scores read higher than test scores on the unseen town. Frames without boxes
(142 of 1,028) are kept as negatives: the road scenes without a vehicle, light or sign in view
are real and teach the detector what background looks like.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import urllib.error
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from torch.hub import download_url_to_file

from detector.data.converters import ConversionReport, read_split_file, voc_to_coco
from detector.files import atomic_write_text

__all__ = ["CARLA", "DATASETS", "DatasetMismatchError", "DownloadError", "PreparedDataset", "PublicDataset",
           "SplitCounts", "carve_split", "download_archive", "extract_archive", "find_dataset_root", "get_dataset",
           "manifest_digest",
           "prepare_carla", "tree_manifest", "verify_tree"]

PathT = str | PathLike[str]
_TEXT_SUFFIXES = (".xml", ".txt")


@dataclass(frozen=True)
class PublicDataset:
    """A public dataset pinned to one commit of a GitHub repository.

    Attributes:
        name: the name tools take (``carla``).
        repository: ``owner/name`` on GitHub.
        commit: the 40-hex commit everything below was recorded from.
        licence: the data's licence (SPDX id); copied into the prepared folder.
        classes: category names in id order (COCO ids 1..K).
        folders: the folders the digest covers, relative to the repository root.
        tree_digest: sha256 over all of ``folders`` (the module docstring says how).
        folder_digests: the same digest per sub-folder, so a mismatch is narrowed to one folder.
        file_digests: sha256 of the small files named one by one in a mismatch (the split lists).
        expected_files: ``expected_files(root)``: the relative paths the folders must hold, read from
            the (already verified) ``file_digests`` files; names missing and unexpected files.
        preparer: ``preparer(source, output, dataset=self, **options) -> PreparedDataset``; call
            :meth:`prepare`.
    """

    name: str
    repository: str
    commit: str
    licence: str
    classes: tuple[str, ...]
    folders: tuple[str, ...]
    tree_digest: str
    folder_digests: dict[str, str]
    file_digests: dict[str, str]
    expected_files: Callable[[Path], set[str]]
    preparer: Callable[..., PreparedDataset]

    def prepare(self, source: PathT, output: PathT, **options: Any) -> PreparedDataset:
        """Verify ``source`` against this snapshot and write the project's layout to ``output``."""
        return self.preparer(source, output, dataset=self, **options)

    @property
    def archive_url(self) -> str:
        """GitHub's archive of exactly :attr:`commit` (a ``.tar.gz``, generated on request)."""
        return f"https://codeload.github.com/{self.repository}/tar.gz/{self.commit}"

    @property
    def clone_url(self) -> str:
        return f"https://github.com/{self.repository}.git"

    @property
    def archive_root(self) -> str:
        """The one top-level folder of :attr:`archive_url`'s archive."""
        return f"{self.repository.split('/')[1]}-{self.commit}"


class DatasetMismatchError(ValueError):
    """A copy of a dataset that is not the recorded snapshot; the message lists what differs."""


class DownloadError(OSError):
    """A download that failed; the message says what to fetch by hand and how to pass it."""


@dataclass
class SplitCounts:
    """What one written split holds: images, frames without boxes, boxes per class name."""

    name: str
    file: Path
    images: int
    negatives: int
    boxes_per_class: dict[str, int]

    @property
    def boxes(self) -> int:
        return sum(self.boxes_per_class.values())


@dataclass
class PreparedDataset:
    """The result of a preparation: the folder, its splits, and the converter's reports.

    ``reports`` maps the converted upstream list (``trainval``, ``test``) to its
    :class:`~detector.data.converters.ConversionReport` (what was dropped and why).
    """

    output: Path
    tree_digest: str
    splits: list[SplitCounts]
    reports: dict[str, ConversionReport] = field(default_factory=dict)

    def table(self) -> list[str]:
        """Counts per class per split as aligned text lines (classes in category id order)."""
        classes = list(dict.fromkeys(c for s in self.splits for c in s.boxes_per_class))
        head = ["split", "images", "no boxes", *classes, "boxes"]
        rows = [[s.name, str(s.images), str(s.negatives), *(str(s.boxes_per_class.get(c, 0)) for c in classes),
                 str(s.boxes)] for s in self.splits]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        return ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
                for r in [head, *rows]]


# --- digests ---------------------------------------------------------------------------------------

def _file_sha256(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix.lower() in _TEXT_SUFFIXES:
        data = data.replace(b"\r\n", b"\n")  # a Windows autocrlf clone verifies like the archive
    return hashlib.sha256(data).hexdigest()


def tree_manifest(root: PathT, folders: Iterable[str]) -> dict[str, str]:
    """``{relative/posix/path: sha256 hex}`` of every file under ``root/<folder>`` for each folder.

    Names starting with ``.`` are skipped (file managers' litter); a missing folder adds nothing.
    """
    root = Path(root)
    manifest: dict[str, str] = {}
    for folder in folders:
        base = root / folder
        if not base.is_dir():
            continue
        for path in base.rglob("*"):
            rel = path.relative_to(root)
            if path.is_file() and not any(part.startswith(".") for part in rel.parts):
                manifest[rel.as_posix()] = _file_sha256(path)
    return manifest


def manifest_digest(manifest: dict[str, str], prefix: str = "") -> str:
    """sha256 of ``sha256sum``-style lines (``"<hex>  <path>\\n"``, sorted by path) of the entries
    whose path starts with ``prefix`` (all by default)."""
    lines = "".join(f"{manifest[p]}  {p}\n" for p in sorted(manifest) if p.startswith(prefix))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def _expected_carla_files(root: Path) -> set[str]:
    """The files the CARLA layout must hold, from its split lists."""
    expected = {f"image_sets/{n}" for n in _CARLA_SPLIT_LISTS}
    for folder, listing in (("train", "trainval.txt"), ("test", "test.txt")):
        for stem in read_split_file(root / "image_sets" / listing):
            expected |= {f"images/{folder}/{stem}.png", f"labels/{folder}/{stem}.xml"}
    return expected


def verify_tree(root: PathT, dataset: PublicDataset | None = None) -> str:
    """Check that ``root`` holds exactly the recorded snapshot of ``dataset`` (CARLA by default).

    Returns:
        the tree digest (equal to ``dataset.tree_digest``).

    Raises:
        DatasetMismatchError: naming the split lists that differ, the files missing or unexpected,
            and the folders whose content differs (the digest cannot say which file within one).
    """
    dataset = dataset or CARLA
    root = Path(root)
    manifest = tree_manifest(root, dataset.folders)
    digest = manifest_digest(manifest)
    if digest == dataset.tree_digest:
        return digest
    problems: list[str] = []
    changed_lists = [p for p, h in dataset.file_digests.items() if manifest.get(p, h) != h]
    problems += [f"{p} differs from the recorded file (sha256 {manifest[p]}, expected {dataset.file_digests[p]})"
                 for p in changed_lists]
    lists_missing = [p for p in dataset.file_digests if p not in manifest]
    if not changed_lists and not lists_missing:
        expected = dataset.expected_files(root)
        missing = sorted(expected - manifest.keys())
        unexpected = sorted(manifest.keys() - expected)
        if missing:
            problems.append(f"{len(missing)} file(s) missing: {_preview(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected file(s): {_preview(unexpected)}")
    else:
        problems += [f"{p} is missing" for p in lists_missing]
    for folder, want in dataset.folder_digests.items():
        count = sum(p.startswith(folder + "/") for p in manifest)
        if manifest_digest(manifest, folder + "/") != want:
            problems.append(f"the content of {folder}/ differs from the recorded snapshot ({count} files; "
                            "a file modified, re-encoded, added or removed)")
    raise DatasetMismatchError(
        f"{root} is not {dataset.repository} at commit {dataset.commit}: tree digest {digest}, "
        f"expected {dataset.tree_digest}.\n  " + "\n  ".join(problems or ["(no folder named; see the digest)"])
        + f"\nRe-extract the archive ({dataset.archive_url}) or check out that commit of {dataset.clone_url}.")


def _preview(items: Sequence[str], limit: int = 10) -> str:
    return ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


# --- the split rule ---------------------------------------------------------------------------------

def carve_split(stems: Sequence[str], fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split ``stems`` into ``(train, val)`` by a seeded, order-independent rule.

    ``val`` is the ``max(1, round(fraction * n))`` stems that come first when sorted by
    ``sha256(f"{seed}:{stem}")`` (hex); both lists keep the input order. The same stems give the
    same split whatever their order, on any machine and Python version (no RNG involved).

    Raises:
        ValueError: ``fraction`` outside (0, 1), repeated stems, or too few stems to leave a train split.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the val fraction must be in (0, 1), got {fraction}")
    if len(set(stems)) != len(stems):
        raise ValueError("repeated stems in the list to split")
    n_val = max(1, round(fraction * len(stems)))
    if n_val >= len(stems):
        raise ValueError(f"{len(stems)} frame(s) are too few to carve a val split of {fraction:.0%} "
                         "and keep a train split")
    ranked = sorted(stems, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    val = set(ranked[:n_val])
    return [s for s in stems if s not in val], [s for s in stems if s in val]


# --- download and extraction ------------------------------------------------------------------------

def download_archive(dataset: PublicDataset, download_dir: PathT, progress: bool = True) -> Path:
    """Download ``dataset.archive_url`` to ``download_dir/<archive_root>.tar.gz`` (kept for re-runs;
    an existing file is reused).

    Raises:
        DownloadError: no network or an HTTP error; the message gives the URL to fetch by hand and
            the ``--from`` route.
    """
    target = Path(download_dir) / f"{dataset.archive_root}.tar.gz"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_url_to_file(dataset.archive_url, str(target), progress=progress)  # writes a temp, then renames
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(
            f"could not download {dataset.archive_url} ({reason}).\n"
            f"Fetch it where there is network access, either the archive:\n"
            f"  curl -L -o {dataset.name}.tar.gz {dataset.archive_url} && tar -xzf {dataset.name}.tar.gz\n"
            f"or a clone:\n"
            f"  git clone {dataset.clone_url} && git -C {dataset.repository.split('/')[1]} checkout {dataset.commit}\n"
            f"then pass the extracted folder (or the clone) with --from DIR."
        ) from err
    return target


def extract_archive(archive: PathT, destination: PathT, dataset: PublicDataset | None = None) -> Path:
    """Extract the digest's folders and the licence of ``archive`` (a ``.tar.gz``) into ``destination``.

    Returns:
        the extracted dataset root (``destination/<archive_root>``).

    Raises:
        ValueError: the file is not a readable tar.gz, or a member would land outside ``destination``.
    """
    dataset = dataset or CARLA
    destination = Path(destination).resolve()
    wanted = tuple(f"{dataset.archive_root}/{f}/" for f in dataset.folders) + (f"{dataset.archive_root}/LICENSE",)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers() if (m.isfile() or m.isdir()) and m.name.startswith(wanted)]
            for member in members:  # the names are checked before anything is written
                if not (destination / member.name).resolve().is_relative_to(destination):
                    raise ValueError(f"{archive}: member {member.name!r} would be written outside {destination}")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(destination, members=members, filter="data")
            else:  # Python < 3.10.12 / 3.11.4: names and types were checked above
                tar.extractall(destination, members=members)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ValueError(f"{archive}: not a readable .tar.gz ({err}); delete it and download again") from err
    return destination / dataset.archive_root


def find_dataset_root(folder: PathT, dataset: PublicDataset | None = None) -> Path:
    """``folder`` itself if it holds the dataset's folders, else its one sub-folder that does (an
    archive extracted into ``folder``).

    Raises:
        FileNotFoundError: neither holds them.
    """
    dataset = dataset or CARLA
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")

    def holds(d: Path) -> bool:
        return all((d / f).is_dir() for f in dataset.folders)

    if holds(folder):
        return folder
    inside = [d for d in sorted(folder.iterdir()) if d.is_dir() and holds(d)]
    if len(inside) == 1:
        return inside[0]
    raise FileNotFoundError(f"{folder} holds no {dataset.name} dataset: expected the folders "
                            f"{', '.join(dataset.folders)} in it (or in one folder inside it)")


# --- CARLA -------------------------------------------------------------------------------------------

_CARLA_SPLIT_LISTS = ("test.txt", "train.txt", "trainval.txt", "val.txt")


def _copy_images(coco: dict[str, Any], source_images: Path, output_images: Path) -> None:
    for image in coco["images"]:
        target = output_images / image["file_name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source_images / image["file_name"], target)


def _subset(coco: dict[str, Any], stems: Iterable[str]) -> dict[str, Any]:
    """The images of ``coco`` whose file stems are in ``stems``, with their annotations (ids kept)."""
    keep = set(stems)
    images = [im for im in coco["images"] if Path(im["file_name"]).stem in keep]
    ids = {im["id"] for im in images}
    return {"images": images, "annotations": [a for a in coco["annotations"] if a["image_id"] in ids],
            "categories": coco["categories"]}


def _counts(name: str, file: Path, coco: dict[str, Any]) -> SplitCounts:
    names = {c["id"]: c["name"] for c in coco["categories"]}
    per_class = Counter(names[a["category_id"]] for a in coco["annotations"])
    with_boxes = {a["image_id"] for a in coco["annotations"]}
    return SplitCounts(name=name, file=file, images=len(coco["images"]),
                       negatives=sum(im["id"] not in with_boxes for im in coco["images"]),
                       boxes_per_class={c: per_class.get(c, 0) for c in names.values()})


def prepare_carla(
    source: PathT,
    output: PathT,
    val_fraction: float = 0.1,
    seed: int = 0,
    dataset: PublicDataset | None = None,
) -> PreparedDataset:
    """Verify a CARLA snapshot and write the project's layout (see the module docstring).

    Args:
        source: an extract of the archive or a clone at :data:`CARLA`'s commit (the folder holding
            ``images/``, ``labels/``, ``image_sets/``, or its parent).
        output: the folder to write (created; files already there are overwritten).
        val_fraction, seed: the val split carved from upstream ``trainval`` (:func:`carve_split`).
        dataset: the recorded snapshot to verify against (:data:`CARLA`; tests pass a fake one).

    Returns:
        counts per split and the converter's reports (boxes dropped and why).

    Raises:
        DatasetMismatchError: ``source`` is not the recorded snapshot.
        ValueError: ``output`` is ``source`` or lies inside it (the copy would read its own output).
    """
    dataset = dataset or CARLA
    root = find_dataset_root(source, dataset).resolve()
    out = Path(output).resolve()
    if out == root or out.is_relative_to(root) and out.relative_to(root).parts[0] in dataset.folders:
        raise ValueError(f"the output {out} must not be the source folder {root} or one of its data folders")
    digest = verify_tree(root, dataset)

    reports: dict[str, ConversionReport] = {}
    converted: dict[str, dict[str, Any]] = {}
    for listing, folder in (("trainval", "train"), ("test", "test")):
        coco, report = voc_to_coco(root / "labels" / folder, root / "images" / folder,
                                   split_file=root / "image_sets" / f"{listing}.txt", class_names=dataset.classes)
        for image in coco["images"]:  # relative to OUTPUT/images, which keeps upstream's two folders
            image["file_name"] = f"{folder}/{image['file_name']}"
        reports[listing], converted[listing] = report, coco

    stems = [Path(im["file_name"]).stem for im in converted["trainval"]["images"]]
    train_stems, val_stems = carve_split(stems, val_fraction, seed)
    splits = {"train": _subset(converted["trainval"], train_stems),
              "val": _subset(converted["trainval"], val_stems),
              "test": converted["test"]}

    for coco in (converted["trainval"], converted["test"]):
        _copy_images(coco, root / "images", out / "images")
    counts = []
    for name, coco in splits.items():
        atomic_write_text(out / f"{name}.json", json.dumps(coco))
        counts.append(_counts(name, out / f"{name}.json", coco))
    if (root / "LICENSE").is_file():
        shutil.copyfile(root / "LICENSE", out / "LICENSE")
    source_info = {
        "dataset": dataset.name, "repository": f"https://github.com/{dataset.repository}", "commit": dataset.commit,
        "licence": dataset.licence, "tree_digest": digest,
        "labels": "Pascal VOC XML in labels/ (the repository's COCO JSON is defective and not used)",
        "splits": {"train": f"image_sets/trainval.txt minus val ({len(train_stems)} frames)",
                   "val": f"carve_split(trainval, fraction={val_fraction}, seed={seed}): the {len(val_stems)} frames "
                          f"first by sha256(f'{{seed}}:{{stem}}')",
                   "test": "image_sets/test.txt"},
        "counts": {c.name: {"images": c.images, "without_boxes": c.negatives, "boxes": c.boxes_per_class}
                   for c in counts},
    }
    atomic_write_text(out / "SOURCE.json", json.dumps(source_info, indent=2))
    return PreparedDataset(output=out, tree_digest=digest, splits=counts, reports=reports)


CARLA = PublicDataset(
    name="carla",
    repository="DanielHfnr/Carla-Object-Detection-Dataset",
    commit="2a10f67a1ad64695390d09bf260a999006b670b6",
    licence="MIT",
    classes=("vehicle", "bike", "motobike", "traffic_light", "traffic_sign"),  # upstream labels.txt order
    folders=("images", "labels", "image_sets"),
    # Computed from the snapshot at the commit (2,060 files) with tree_manifest / manifest_digest,
    # and matching coreutils' `find images labels image_sets -type f | LC_ALL=C sort | xargs sha256sum | sha256sum`.
    tree_digest="dc4302f4fa61dc01c208eddd89728f2012a13df03fb111440c15a1797474d5e6",
    folder_digests={
        "image_sets": "f9fc157cc154164d061082ae00979a11116d0bba6ff0f2a508ece42495fd1cab",
        "images/test": "d0ca25fbeefcc051cb1bb3babfbdb0e61b9ecbe49c0be6c5ad4a37497df2fb52",
        "images/train": "e9ce625bfcf253214a9368efd7132d2637b2b0a3e2f6ab50df3b74c7151ab715",
        "labels/test": "f7d699b5ea04a560f84dbe02a3ce5bc1957cd1471c803163f7a1e942a1bc983b",
        "labels/train": "848a6f289ef83350e3d7b0296dc3707574d3c3f6b97780d8bfa20c784184a6b6",
    },
    file_digests={
        "image_sets/test.txt": "efa1e2d4da8eb5d403102999a7cc8a79f794973c0fedcadb1bdeacd32043fc77",
        "image_sets/train.txt": "206711f634ce42e9342065cbffd7317fad041d328289588d1fb06cd4491aa1ac",
        "image_sets/trainval.txt": "8ae90a95c57691688b2aff509192176914d74bb85ae72f973bb4d92129640f65",
        "image_sets/val.txt": "ddd2d097ddf84cb5c1c51e71630701ecb27e27c6f833e1f25f4a06c5872c9a84",
    },
    expected_files=_expected_carla_files,
    preparer=prepare_carla,
)

DATASETS: dict[str, PublicDataset] = {CARLA.name: CARLA}


def get_dataset(name: str) -> PublicDataset:
    """The dataset called ``name``; ``KeyError`` lists the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None
