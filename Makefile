# itc: the two commands a new user runs are `make demo` and `make test`.
# Both create .venv from requirements.lock when it is missing (or older than the lock).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PRESET ?= tiny
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
export HF_HUB_OFFLINE ?= 1
# The browser check runs Playwright from its own small environment and drives Debian's Chromium.
BROWSER_VENV  := .venv-browser
BROWSER_STAMP := $(BROWSER_VENV)/.installed
CHROMIUM ?= /usr/lib/chromium/chromium
CHECK_WIDGETS := $(BROWSER_VENV)/bin/python tests/browser/check_widgets.py --jupyter $(VENV)/bin/jupyter --chromium $(CHROMIUM)

.PHONY: help env demo test test-browser lab lock bench bench-cli clean data-kodak reproduce retrain-lic bench-all

help:
	@echo "make demo   run the notebooks on the $(PRESET) preset into outputs/ (creates .venv if missing)"
	@echo "make test   run the offline test suite (creates .venv if missing)"
	@echo "make test-browser  drive every notebook widget in JupyterLab in headless Chromium (screenshots in outputs/browser/)"
	@echo "make lab    open JupyterLab on notebooks/ with the project's kernel"
	@echo "make bench  print the LIC round-trip benchmark"
	@echo "make bench-cli  print the command-line start-up and batch benchmark (minutes)"
	@echo "make bench-all  every benchmark behind RESULTS.md, logs in outputs/bench/ (hours on 2 cores)"
	@echo "make data-kodak  download the 24 Kodak images into data/kodak/ (SHA-256 checked, resumable; needs internet)"
	@echo "make reproduce  itc eval of PRESET: the tiny-world test split (tiny) or Kodak (PRESET=paper: GPU + internet)"
	@echo "make retrain-lic DEVICE=cuda  retrain the tiny LIC's ten rate points into data/tiny/lic/ (a GPU; or DEVICE=cpu JOBS=2 ZOO_FLAGS=\"--compile --threads 1\": 10 hours on 2 cores)"

env: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name itc --display-name "itc (.venv)" >/dev/null
	@touch $(STAMP)

demo: $(STAMP)
	@mkdir -p outputs
	@for nb in $(NOTEBOOKS); do \
	  name=$$(basename $$nb .ipynb); \
	  echo "== $$name"; \
	  $(PY) -m papermill $$nb outputs/$$name.ipynb -k itc -p PRESET $(PRESET) -p OUTPUT_DIR $(CURDIR)/outputs/$$name --cwd notebooks || exit 1; \
	done
	@echo "Executed notebooks and figures are in outputs/"

test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist worksteal

$(BROWSER_STAMP): tests/browser/requirements.txt
	@test -x $(BROWSER_VENV)/bin/python || $(PYTHON) -m venv $(BROWSER_VENV)
	$(BROWSER_VENV)/bin/python -m pip install --quiet -r tests/browser/requirements.txt
	@touch $(BROWSER_STAMP)

# The check, then its negative control (widget extension disabled: the check must fail).
test-browser: $(STAMP) $(BROWSER_STAMP)
	@tests/browser/ensure-chromium.sh $(CHROMIUM)
	$(CHECK_WIDGETS)
	$(CHECK_WIDGETS) --negative-control

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

data-kodak: $(STAMP)
	@$(PY) -m itc_core.data kodak

# The evaluation behind RESULTS.md's "Evaluation": PRESET=tiny runs offline on the tiny-world test split;
# a hub preset (PRESET=paper) runs on Kodak and downloads its models once, so the hub is put online.
EVAL_DATASET ?= $(if $(filter tiny,$(PRESET)),tiny,kodak)
EVAL_OUT ?= outputs/eval-$(PRESET)
reproduce: $(STAMP) $(if $(filter kodak,$(EVAL_DATASET)),data-kodak)
	HF_HUB_OFFLINE=$(if $(filter tiny,$(PRESET)),1,0) $(PY) -m itc_core.cli eval --preset $(PRESET) \
	  --dataset $(EVAL_DATASET) --out $(EVAL_OUT)

# The tiny LIC's rate points as docs/training.md ("LIC") describes: q1-q6 side by side (one log each
# in outputs/tiny-zoo/; JOBS at a time, all six by default), then q7-q10 one after another (each fine-tunes
# the point below). Rerun to resume after a kill. ZOO_FLAGS adds tiny-zoo options, e.g. "--steps 3 --out
# /tmp/zoo --workdir /tmp/zoo-work" for a dry run that leaves the real run's checkpoints alone. On 2 CPU
# cores: DEVICE=cpu JOBS=2 ZOO_FLAGS="--compile --threads 1" (about 2 h 15 min per pair of points, 10 hours in all).
DEVICE ?= auto
JOBS ?= 6
ZOO_FLAGS ?=
retrain-lic: $(STAMP)
	@mkdir -p outputs/tiny-zoo
	@test $(JOBS) -ge 1 2>/dev/null || { echo "JOBS must be a positive number, not '$(JOBS)'"; exit 2; }
	@pids=""; running=""; failed=0; trap 'kill $$pids 2>/dev/null; exit 130' INT TERM; \
	for q in 1 2 3 4 5 6; do \
	  set -- $$running; if [ $$# -ge $(JOBS) ]; then wait $$1 || failed=1; shift; running="$$*"; fi; \
	  $(PY) -m itc_core.cli tiny-zoo --only lic --qualities $$q --device $(DEVICE) $(ZOO_FLAGS) \
	    > outputs/tiny-zoo/lic-q$$q.log 2>&1 & pids="$$pids $$!"; running="$$running $$!"; \
	done; for p in $$running; do wait $$p || failed=1; done; \
	for q in 1 2 3 4 5 6; do grep "^q$$q:" outputs/tiny-zoo/lic-q$$q.log | tail -n1; done; \
	if [ $$failed = 1 ]; then echo "a rate point failed: see outputs/tiny-zoo/lic-q*.log"; exit 1; fi
	$(PY) -m itc_core.cli tiny-zoo --only lic --qualities 7 8 9 10 --device $(DEVICE) $(ZOO_FLAGS)

bench: $(STAMP)
	$(PY) benchmarks/lic_roundtrip.py

bench-cli: $(STAMP)
	$(PY) benchmarks/cli_latency.py

bench-all: $(STAMP)
	PY=$(PY) benchmarks/all.sh $(BENCH)

lock: $(STAMP)
	@{ head -3 requirements.lock; $(PY) -m pip freeze --exclude-editable | grep -vE '^(nvidia-|cuda-|triton==)'; } > requirements.lock.new
	@mv requirements.lock.new requirements.lock

clean:
	rm -rf outputs/*.ipynb outputs/0* .pytest_cache
