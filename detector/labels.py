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
