# Two commands: `make tutorial` (run every notebook headless, write build/) and `make test`;
# `make student` writes the exercise notebooks without their solutions to build/student/.
# Both create .venv on first use and reuse it afterwards (reinstall only when pyproject changes).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# On this project's build machines torch/torchvision come from local disk at these versions;
# elsewhere override, e.g. `make test TORCH_SPEC=` to keep an already installed torch.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
export MPLBACKEND := Agg

.PHONY: tutorial test install lint bench reproduce student clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(strip $(TORCH_SPEC)),$(BIN)/python -m pip install --quiet $(TORCH_SPEC))
	$(BIN)/python -m pip install --quiet -e ".[notebooks,dev]"
	@touch $@

tutorial: $(STAMP)
	@mkdir -p build/notebooks build/html
	@for nb in $(NOTEBOOKS); do \
	  echo "== executing $$nb"; \
	  $(BIN)/jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=1200 \
	    --output-dir build/notebooks "$$nb" || exit 1; \
	  $(BIN)/jupyter nbconvert --to html --output-dir build/html \
	    "build/notebooks/$$(basename $$nb)" || exit 1; \
	done
	@echo "Executed notebooks: $(CURDIR)/build/notebooks"
	@echo "HTML:               $(CURDIR)/build/html"

# Unit tests plus nbval over notebooks/ in one pytest run; exit 5 ("no tests collected")
# is not a failure of the code.
test: $(STAMP)
	@$(BIN)/python -m pytest -q --nbval-lax --nbval-current-env tests $(NOTEBOOKS); \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

# Student versions of the notebooks: solutions (### BEGIN/END SOLUTION) replaced by
# `raise NotImplementedError()`, outputs cleared, written to build/student/.
student: $(STAMP)
	$(BIN)/python tools/make_student.py $(NOTEBOOKS) --out build/student

lint: $(STAMP)
	$(BIN)/ruff check mixquant_lite tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/search_speed.py
	$(BIN)/python benchmarks/brecq_speed.py

reproduce: $(STAMP)
	$(BIN)/mixquant-lite reproduce --quick

clean:
	rm -rf build
