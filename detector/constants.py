"""What every layer of the package shares. A leaf: it imports nothing."""

# torchvision's ImageNet normalisation (RGB, 0..1): the backbone's weights expect it, and the data
# pipelines, exporters and predictors normalise with it unless a model says otherwise.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
