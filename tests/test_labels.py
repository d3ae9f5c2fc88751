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


def test_match_categories_by_name_case_and_underscores() -> None:
    from detector.labels import match_categories

    model = LabelMap((1, 2, 3, 10), ("car", "Traffic_Light", "bus", "kite"))
    file_categories = [{"id": 7, "name": "traffic light"}, {"id": 1, "name": "car"}, {"id": 5, "name": "person"}]
    match = match_categories(model, file_categories, "val.json")
    assert match.category_ids == (1, 7, -1, -1)
    assert match.evaluated_ids == (1, 7)
    assert match.missing == ("bus", "kite") and match.unmatched == ("person",)
    assert match.renumbered == ("Traffic_Light 2 -> 7",)
    assert "bus, kite" in match.describe() and "person" in match.describe()
    labels = match.dataset_label_map()
    assert labels.category_ids == (1, 7, -3, -4) and labels.names == model.names


def test_match_categories_class_map_merges_and_nothing_shared_is_an_error() -> None:
    from detector.labels import match_categories

    model = LabelMap((3, 6, 8), ("car", "bus", "truck"))
    match = match_categories(model, [{"id": 1, "name": "vehicle"}], "kitti.json",
                             {"car": "vehicle", "bus": "vehicle", "truck": "vehicle"})
    assert match.category_ids == (1, 1, 1) and match.evaluated_ids == (1,) and match.unmatched == ()
    with pytest.raises(ValueError, match="several classes map to one category"):
        match.dataset_label_map()
    with pytest.raises(ValueError, match="none of the model's classes"):
        match_categories(model, [{"id": 1, "name": "dog"}], "dogs.json")
    with pytest.raises(ValueError, match="not classes of the model"):
        match_categories(model, [{"id": 1, "name": "vehicle"}], "kitti.json", {"lorry": "vehicle"})
