"""What every layer of the package shares. A leaf: it imports nothing."""

# torchvision's ImageNet normalisation (RGB, 0..1): the backbone's weights expect it, and the data
# pipelines, exporters and predictors normalise with it unless a model says otherwise.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# How an image becomes the network input (detector.deploy.preprocess.ImagePreprocessor; a model's "resize"):
# cv2 INTER_LINEAR on uint8 (training's pipeline), or TF1's bilinear on float pixels (TF-converted models).
RESIZES = ("opencv", "tf_bilinear")
