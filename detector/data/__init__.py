"""Data: image loading, COCO-format datasets, albumentations pipelines, converters and the synthetic
set. It knows no model. Import the modules themselves (``detector.data.coco``, ``.transforms``, ...):
this file imports nothing, so loading an image does not load albumentations or pycocotools."""
