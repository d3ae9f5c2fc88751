# The README's two commands: `make demo` and `make test`. Both create .venv when it is missing
# and reinstall the package when pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) tools/demo.py

test: $(STAMP)
	$(PY) -m pytest -q --durations=15 tests

clean:
	rm -rf $(VENV) runs outputs

# Benchmark-only environment for the Ultralytics YOLO11n reference (issue #22,
# benchmarks/yolo_reference.py). Kept apart from .venv: ultralytics pins its own OpenCV and is no
# runtime dependency of the project. Same torch/torchvision as .venv, so both sides train on the same build.
YOLO_VENV := .venv-yolo
YOLO_STAMP := $(YOLO_VENV)/.installed

.PHONY: yolo-env

$(YOLO_STAMP):
	test -x $(YOLO_VENV)/bin/python || $(PYTHON) -m venv $(YOLO_VENV)
	$(YOLO_VENV)/bin/python -m pip install --upgrade pip >/dev/null
	$(YOLO_VENV)/bin/python -m pip install torch==2.14.1 torchvision==0.29.1 ultralytics==8.4.190
	touch $(YOLO_STAMP)

yolo-env: $(YOLO_STAMP)

# TensorFlow, for tools/tf_equivalence.py only (issue #31): runs TF Object Detection API frozen graphs
# so the conversion can be compared number by number. Never a dependency of the project.
TF_VENV := .venv-tf
TF_STAMP := $(TF_VENV)/.installed

.PHONY: tf-env

$(TF_STAMP):
	test -x $(TF_VENV)/bin/python || $(PYTHON) -m venv $(TF_VENV)
	$(TF_VENV)/bin/python -m pip install --upgrade pip >/dev/null
	$(TF_VENV)/bin/python -m pip install tensorflow-cpu==2.21.0
	touch $(TF_STAMP)

tf-env: $(TF_STAMP)

# TFLite's own interpreter (LiteRT), for tools/tflite_equivalence.py and benchmarks/classifier_latency.py
# only (issue #35): runs the zoo's .tflite ImageNet classifiers in integers, to prove the conversion
# against. Never a dependency of the project.
LITERT_VENV := .venv-litert
LITERT_STAMP := $(LITERT_VENV)/.installed

.PHONY: litert-env

$(LITERT_STAMP):
	test -x $(LITERT_VENV)/bin/python || $(PYTHON) -m venv $(LITERT_VENV)
	$(LITERT_VENV)/bin/python -m pip install --upgrade pip >/dev/null
	$(LITERT_VENV)/bin/python -m pip install ai-edge-litert==2.3.0 numpy
	touch $(LITERT_STAMP)

litert-env: $(LITERT_STAMP)
