# The two commands of the README. Both create .venv when it is missing and reuse it otherwise.
#
# TORCH_SPEC picks the PyTorch build. It is installed in the SAME pip command as the project, so
# that nnunetv2's own torch requirement cannot swap in another build. On this kind of CPU machine
# torch==2.13.0 comes from a local CPU wheel; on a GPU server PyPI's torch==2.13.0 is a CUDA build.
# For another CUDA version: make test TORCH_INDEX=https://download.pytorch.org/whl/cu126
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
DEMO_WORKSPACE ?= demo-workspace
DEMO_PROFILE ?= demo
# GPU-stage jobs at once during the demo: on a 2-core CPU machine the two fine-tunes then train side by
# side, one core each (bench/bench_demo.py uses the same value)
DEMO_SLOTS ?= 2
STAMP := $(VENV)/.installed

.PHONY: demo test install clean-demo example-db screenshots

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) "$(TORCH_SPEC)" -e ".[test]"
	touch $(STAMP)

# The whole pipeline on the synthetic cohort, then the result table (held-out score, AUCs, stage-1
# coverage, minutes per stage). demo: 200 series (51 held out), about 9 minutes on 2 idle cores.
# DEMO_PROFILE=tiny: the tests' toy sizes (40 series, a few minutes; it learns nothing).
demo: $(STAMP)
	RSNA_TUI_GPU_SLOTS=$(DEMO_SLOTS) $(VENV)/bin/rsna-tui --workspace $(DEMO_WORKSPACE) pipeline --dataset demo --profile $(DEMO_PROFILE) --follow
	$(VENV)/bin/rsna-tui --workspace $(DEMO_WORKSPACE) report

test: $(STAMP)
	$(PY) -m pytest -q

clean-demo:
	rm -rf $(DEMO_WORKSPACE)

# jobs.db.example: the job database of a demo run, so that a newcomer can browse jobs, curves and
# predictions without training (rsna-tui --db jobs.db.example jobs). Run after `make demo`.
example-db: $(STAMP)
	$(PY) -c "from rsna_tui.jobs.store import Store; Store('$(DEMO_WORKSPACE)/jobs.db').snapshot('jobs.db.example')"

# docs/jobs.svg and docs/job-detail.svg, the README's pictures of the app on jobs.db.example.
screenshots: $(STAMP)
	$(PY) docs/screenshots.py
