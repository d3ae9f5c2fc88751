"""LabelMap: contiguous labels <-> the user's category ids and names."""
import pytest

from detector.labels import LabelMap

COCO_LIKE = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]


def test_from_categories_sorts_by_id():
    labels = LabelMap.from_categories(COCO_LIKE)
    assert labels.category_ids == (1, 3, 90)
    assert labels.names == ("person", "car", "toothbrush")
    assert labels.num_classes == 4  # background included


def test_mapping_both_ways():
    labels = LabelMap.from_categories(COCO_LIKE)
    assert [labels.label_of_category(c) for c in (1, 3, 90)] == [1, 2, 3]
    assert [labels.category_of_label(i) for i in (1, 2, 3)] == [1, 3, 90]
    assert labels.name_of_label(3) == "toothbrush"
    assert labels.categories() == sorted(COCO_LIKE, key=lambda c: c["id"])
    with pytest.raises(KeyError, match="2"):
        labels.label_of_category(2)


def test_dict_round_trip():
    labels = LabelMap.from_categories(COCO_LIKE)
    data = labels.to_dict()
    assert data == {"category_ids": [1, 3, 90], "names": ["person", "car", "toothbrush"]}
    assert LabelMap.from_dict(data) == labels


def test_invalid():
    with pytest.raises(ValueError, match="duplicate"):
        LabelMap((1, 1), ("a", "b"))
    with pytest.raises(ValueError, match="length"):
        LabelMap((1, 2), ("a",))
