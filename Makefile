# Two entry points: `make demo` (set up, then the notebook workflow end to end) and
# `make test` (set up, then the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO ?= demo
MODEL := $(DEMO)/cnn_digit_recognition.safetensors

.PHONY: install demo test bench clean

install: $(STAMP)

# constraints.txt pins torch to the CPU wheel; an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,onnx,serve,robustness,keras,ray]'
	touch $@

demo: install
	mkdir -p $(DEMO)
	$(BIN)/digitrec data --download
	$(BIN)/digitrec samples --out $(DEMO)/samples.png
	$(BIN)/digitrec summary --diagram $(DEMO)/model.png
	$(BIN)/digitrec train --out $(MODEL)
	$(BIN)/digitrec evaluate --model $(MODEL) --confusion $(DEMO)/confusion.png --errors $(DEMO)/misclassified.png
	$(BIN)/digitrec predict --model $(MODEL) --random --show $(DEMO)/prediction.png

test: install
	$(BIN)/python -m pytest

# Speed against the notebook's Keras/TensorFlow stack (installs TensorFlow into .venv; ~10 min).
bench: install
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[bench]'
	$(BIN)/python bench/speed.py --fast-seeds 5

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
