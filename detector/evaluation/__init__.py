"""COCO evaluation (pycocotools or faster-coco-eval), evaluating a model on a dataset, and plots."""
