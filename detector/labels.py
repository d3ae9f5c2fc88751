"""The explicit map between contiguous training labels and the user's category ids and names."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LabelMap:
    """Label ``i`` (1..K) is ``category_ids[i - 1]`` named ``names[i - 1]``; label 0 is background.

    Built from a COCO ``categories`` list sorted by id, saved in every checkpoint and ONNX file,
    so predictions come back with the user's own category ids and names.
    """

    category_ids: tuple[int, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.category_ids) != len(self.names):
            raise ValueError("category_ids and names differ in length")
        if len(set(self.category_ids)) != len(self.category_ids):
            raise ValueError(f"duplicate category ids in {list(self.category_ids)}")

    @classmethod
    def from_categories(cls, categories: Iterable[dict[str, Any]]) -> "LabelMap":
        """From COCO ``categories`` entries (``{"id": int, "name": str}``), sorted by id."""
        cats = sorted(categories, key=lambda c: int(c["id"]))
        return cls(tuple(int(c["id"]) for c in cats), tuple(str(c["name"]) for c in cats))

    @classmethod
    def from_dict(cls, data: dict[str, Sequence[Any]]) -> "LabelMap":
        return cls(tuple(int(i) for i in data["category_ids"]), tuple(str(n) for n in data["names"]))

    def to_dict(self) -> dict[str, list[Any]]:
        return {"category_ids": list(self.category_ids), "names": list(self.names)}

    @property
    def num_classes(self) -> int:
        """Classes the model predicts, background included (torchvision's convention)."""
        return len(self.category_ids) + 1

    def label_of_category(self, category_id: int) -> int:
        try:
            return self.category_ids.index(int(category_id)) + 1
        except ValueError:
            raise KeyError(f"category id {category_id} is not in the label map {list(self.category_ids)}") from None

    def category_of_label(self, label: int) -> int:
        return self.category_ids[int(label) - 1]

    def name_of_label(self, label: int) -> str:
        return self.names[int(label) - 1]

    def categories(self) -> list[dict[str, Any]]:
        """COCO ``categories`` entries."""
        return [{"id": i, "name": n} for i, n in zip(self.category_ids, self.names)]


def _name_key(name: str) -> str:
    """A name as matching sees it: case, underscores and repeated spaces ignored ("Traffic_Light" is
    "traffic light")."""
    return " ".join(str(name).replace("_", " ").split()).casefold()


@dataclass(frozen=True)
class CategoryMatch:
    """A model's classes matched **by name** to a COCO file's categories (ids are the file's own).

    ``category_ids[i - 1]`` is the file's category id for the model's label ``i``, or ``-1`` when the file
    has no category of that name (detections of that class are then left out of the evaluation). The
    evaluation scores ``evaluated_ids``: the file's categories that some class maps to; the file's other
    categories (``unmatched``) are left out, as when a COCO model is scored on a driving set's classes.
    Built by :func:`match_categories`.
    """

    names: tuple[str, ...]
    category_ids: tuple[int, ...]
    source: str
    missing: tuple[str, ...] = ()        # the model's classes the file lacks
    unmatched: tuple[str, ...] = ()      # the file's categories no class maps to
    renumbered: tuple[str, ...] = ()     # matched names whose id differs from the model's
    renamed: tuple[str, ...] = ()        # "model name -> file name" pairs of the class map

    @property
    def evaluated_ids(self) -> tuple[int, ...]:
        return tuple(sorted({i for i in self.category_ids if i >= 0}))

    @property
    def exact(self) -> bool:
        """Every class found under its own name and id, and nothing of the file left out."""
        return not (self.missing or self.unmatched or self.renumbered or self.renamed)

    def describe(self) -> str:
        """What differs from an exact match, in one line (empty when nothing does)."""
        parts = []
        if self.renumbered:
            parts.append(f"matched by name with other ids than the model's: {', '.join(self.renumbered)}")
        if self.renamed:
            parts.append(f"mapped: {', '.join(self.renamed)}")
        if self.missing:
            parts.append(f"the model's classes {', '.join(self.missing)} are not categories of it (their detections "
                         "are left out)")
        if self.unmatched:
            parts.append(f"its categories {', '.join(self.unmatched)} are not classes of the model (left out of the "
                         "evaluation)")
        return f"{self.source}: " + "; ".join(parts) if parts else ""

    def dataset_label_map(self) -> LabelMap:
        """The model's labels with the file's ids, for reading the file's boxes as the model's labels; a
        class the file lacks gets a negative id no annotation has."""
        ids = [i if i >= 0 else -(k + 1) for k, i in enumerate(self.category_ids)]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{self.source}: several classes map to one category ({', '.join(self.renamed)}); "
                             "such a map is for evaluation only")
        return LabelMap(tuple(ids), self.names)


def match_categories(
    label_map: LabelMap,
    categories: Iterable[dict[str, Any]],
    source: str,
    class_map: dict[str, str] | None = None,
) -> CategoryMatch:
    """Match ``label_map``'s class names to a COCO ``categories`` list.

    A name matches exactly, else ignoring case, underscores and repeated spaces (when that is unique). ``class_map`` renames model classes
    first (``{"car": "vehicle", "truck": "vehicle"}``: several may map to one category).

    Raises:
        ValueError: no class matches any category (the message lists both sides), or ``class_map``
            names a class the model does not have.
    """
    categories = list(categories)
    class_map = dict(class_map or {})
    unknown = sorted(set(class_map) - set(label_map.names))
    if unknown:
        raise ValueError(f"the class map names {unknown}, which are not classes of the model {list(label_map.names)}")
    exact = {str(c["name"]): int(c["id"]) for c in categories}
    loose: dict[str, list[int]] = {}
    for c in categories:
        loose.setdefault(_name_key(c["name"]), []).append(int(c["id"]))
    ids, missing, renumbered, renamed = [], [], [], []
    for own_id, name in zip(label_map.category_ids, label_map.names):
        target = class_map.get(name, name)
        found = exact.get(target)
        if found is None and len(loose.get(_name_key(target), [])) == 1:
            found = loose[_name_key(target)][0]
        if found is None:
            missing.append(name)
            ids.append(-1)
            continue
        ids.append(found)
        if target != name:
            renamed.append(f"{name} -> {target}")
        elif found != own_id:
            renumbered.append(f"{name} {own_id} -> {found}")
    if not any(i >= 0 for i in ids):
        raise ValueError(
            f"{source}: none of the model's classes {list(label_map.names)[:20]} is one of its categories "
            f"{[str(c['name']) for c in categories][:20]}; categories are matched by name (map differing names "
            "with a class map)"
        )
    used = set(ids)
    unmatched = [f"{c['name']}" for c in categories if int(c["id"]) not in used]
    return CategoryMatch(tuple(label_map.names), tuple(ids), str(source), tuple(missing), tuple(unmatched),
                         tuple(renumbered), tuple(renamed))
