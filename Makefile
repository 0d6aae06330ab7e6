# ssl-hpc developer and CI entry points. `make help` lists the targets.
SHELL := /bin/bash
# Every recipe line fails on any error, unset variable or failing pipe stage.
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/python -m pip
# On machines without an NVIDIA GPU the CPU torch wheel is installed first, so that
# pyproject's plain `torch>=2.3` is already satisfied and pip does not fetch the multi-GB
# CUDA build. Where the CPU wheel is not on a local find-links, add e.g.
#   TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_CPU ?= torch==2.13.0
TORCH_PIP_ARGS ?=
SLURM_DIR := $(or $(SSL_HPC_SLURM_DIR),/tmp/ssl-hpc-slurm)
DEMO_DIR ?= runs/demo
DEMO_N ?= 4096
MMU_DIR ?= runs/demo-mmu
PYTEST_ARGS ?=
# Three pytest workers on two cores, each taking whole test files (module fixtures are built
# once): most of the suite's wall time is Ray, Slurm and interpreter start-up, not CPU (two
# workers kept the cores 39% busy). The tests that relaunch Ray run one at a time on one
# worker (tests/conftest.py). 0 runs serially.
PYTEST_WORKERS ?= 3

.PHONY: help venv services services-stop test demo demo-mmu anomaly-check ablation efficiency lint clean

help:
	@echo "make venv           create $(VENV) (CPU torch unless nvidia-smi exists) + pip install -e .[dev,mpich]"
	@echo "make services       install Slurm+munge (root, apt) and start the local Slurm ($(SLURM_DIR))"
	@echo "make services-stop  stop the local Slurm"
	@echo "make test           venv + services, then pytest (CI=true: missing services fail tests)"
	@echo "make demo           synthetic survey -> pretrain (Ray) -> embed (MPI) -> report, in $(DEMO_DIR)"
	@echo "make demo-mmu       the pipeline on a Multimodal Universe tree: ingest -> pretrain -> embed -> report -> export, in $(MMU_DIR)"
	@echo "make anomaly-check  the demo encoder's anomaly detection on a 16k-object survey with 3% injected anomalies (~5 min)"
	@echo "make ablation       the augmentation ablation sweep (Ray Tune) on the demo survey (~40 min)"
	@echo "make efficiency     label efficiency (linear / fine-tuned / supervised; photo-z and morphology) on the demo run"
	@echo "make lint           ruff check + ruff format --check"
	@echo "make clean          remove runs/"

venv: $(VENV)/.installed

# The stamp re-runs the install only when pyproject.toml changed or the venv is new.
# pip byte-compiles one file at a time; compileall afterwards uses every core (2 cores:
# 75 s for the whole install against 87). Files that do not compile (other Pythons' test
# fixtures inside some packages) are skipped, as pip skips them.
$(VENV)/.installed: pyproject.toml
	if [[ ! -x "$(VENV)/bin/python" ]]; then $(PYTHON) -m venv "$(VENV)"; fi
	if command -v nvidia-smi >/dev/null 2>&1; then \
	    echo "venv: nvidia-smi found: leaving torch to pip (CUDA build)"; \
	else \
	    echo "venv: no NVIDIA GPU: installing $(TORCH_CPU) first (CPU build)"; \
	    $(PIP) install --no-compile $(TORCH_PIP_ARGS) "$(TORCH_CPU)"; \
	fi
	$(PIP) install --no-compile -e ".[dev,mpich]"
	$(VENV)/bin/python -m compileall -qq -j 0 \
	    "$$($(VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || true
	touch "$@"

# Best effort: without root or apt the services tests skip (or fail under CI=true).
services:
	@if ! cluster/install_services.sh; then \
	    echo "WARNING: could not install Slurm/munge; Slurm tests will skip (fail with CI=true)" >&2; \
	elif ! cluster/slurm_local.sh start; then \
	    echo "WARNING: could not start the local Slurm; Slurm tests will skip (fail with CI=true)" >&2; \
	fi

services-stop:
	cluster/slurm_local.sh stop

test: venv services
	if [[ -f "$(SLURM_DIR)/env.sh" ]]; then source "$(SLURM_DIR)/env.sh"; fi; \
	if [[ "$${CI:-}" == "true" || "$${CI:-}" == "1" ]]; then export SSL_HPC_REQUIRE_SERVICES=1; fi; \
	$(VENV)/bin/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS) || { rc=$$?; \
	    echo "pytest exited with $$rc$$( ((rc == 5)) && echo ' (no tests collected)')" >&2; exit $$rc; }

demo: venv
	$(VENV)/bin/ssl-hpc synth --out "$(DEMO_DIR)/survey" --config jobs/configs/synth.yaml n_objects=$(DEMO_N)
	$(VENV)/bin/ssl-hpc info "$(DEMO_DIR)/survey"
	$(VENV)/bin/ssl-hpc show "$(DEMO_DIR)/survey" --out "$(DEMO_DIR)/survey.png"
	$(VENV)/bin/ssl-hpc show "$(DEMO_DIR)/survey" --out "$(DEMO_DIR)/augment.png" \
	    --augment RR,JC,GN,GR,PS --select labelled --n 6
	$(VENV)/bin/ssl-hpc pretrain --data "$(DEMO_DIR)/survey" --out "$(DEMO_DIR)/pretrain" \
	    --config jobs/configs/pretrain-demo.yaml
	$(VENV)/bin/mpiexec -n 2 $(VENV)/bin/ssl-hpc embed --checkpoint "$(DEMO_DIR)/pretrain" \
	    --data "$(DEMO_DIR)/survey" --out "$(DEMO_DIR)/embeddings" --pca 32
	$(VENV)/bin/ssl-hpc report --embeddings "$(DEMO_DIR)/embeddings" --data "$(DEMO_DIR)/survey" \
	    --out "$(DEMO_DIR)/report"

# The whole pipeline on a survey in Multimodal Universe layout (HEALPix nside-16 HDF5 files,
# gzip, masks and ivar, string ids), made from the synthetic survey over a 20x20 deg patch;
# ingested into HEALPix order-2 shards, exported as Parquet and HATS. A rerun resumes.
demo-mmu: venv
	$(VENV)/bin/ssl-hpc synth --out "$(MMU_DIR)/synth" --config jobs/configs/synth.yaml \
	    n_objects=$(DEMO_N) footprint=150,170,0,20
	test -f "$(MMU_DIR)/mmu.done" || { $(VENV)/bin/python -m ssl_hpc.data.synth.mmu_tree \
	    --survey "$(MMU_DIR)/synth" --out "$(MMU_DIR)/mmu" --overwrite && touch "$(MMU_DIR)/mmu.done"; }
	$(VENV)/bin/ssl-hpc ingest --images "$(MMU_DIR)/mmu" --out "$(MMU_DIR)/survey" \
	    --healpix-order 2 --on-error skip --workers 2 --survey-name demo-mmu --flux-unit nanomaggy
	$(VENV)/bin/ssl-hpc info "$(MMU_DIR)/survey"
	$(VENV)/bin/ssl-hpc pretrain --data "$(MMU_DIR)/survey" --out "$(MMU_DIR)/pretrain" \
	    --config jobs/configs/pretrain-demo.yaml
	$(VENV)/bin/mpiexec -n 2 $(VENV)/bin/ssl-hpc embed --checkpoint "$(MMU_DIR)/pretrain" \
	    --data "$(MMU_DIR)/survey" --out "$(MMU_DIR)/embeddings" --pca 32
	$(VENV)/bin/ssl-hpc report --embeddings "$(MMU_DIR)/embeddings" --data "$(MMU_DIR)/survey" \
	    --out "$(MMU_DIR)/report"
	$(VENV)/bin/ssl-hpc probe --embeddings "$(MMU_DIR)/embeddings" --data "$(MMU_DIR)/survey" \
	    --out "$(MMU_DIR)/probe"
	$(VENV)/bin/ssl-hpc export --embeddings "$(MMU_DIR)/embeddings" --report "$(MMU_DIR)/report" \
	    --probe "$(MMU_DIR)/probe" --out "$(MMU_DIR)/catalogue.parquet" --format parquet --overwrite
	$(VENV)/bin/ssl-hpc export --embeddings "$(MMU_DIR)/embeddings" --report "$(MMU_DIR)/report" \
	    --probe "$(MMU_DIR)/probe" --out "$(MMU_DIR)/catalogue-hats" --format hats --overwrite

# The demo survey holds 5 lensed arcs and 11 rings: too few to measure a detector. This
# embeds an independent survey (seed 1) of 16,384 objects with 3% injected anomalies
# (~120 of each kind, 492 in all) with the demo encoder and reports per-kind ROC AUC. Needs `make demo`.
anomaly-check: venv
	$(VENV)/bin/ssl-hpc synth --out "$(DEMO_DIR)/anomaly-check/survey" --config jobs/configs/synth.yaml \
	    n_objects=16384 anomaly_fraction=0.03 seed=1
	$(VENV)/bin/mpiexec -n 2 $(VENV)/bin/ssl-hpc embed --checkpoint "$(DEMO_DIR)/pretrain" \
	    --data "$(DEMO_DIR)/anomaly-check/survey" --out "$(DEMO_DIR)/anomaly-check/embeddings"
	$(VENV)/bin/ssl-hpc report --embeddings "$(DEMO_DIR)/anomaly-check/embeddings" \
	    --data "$(DEMO_DIR)/anomaly-check/survey" --out "$(DEMO_DIR)/anomaly-check/report"

# Needs the survey `make demo` builds first; a rerun resumes the sweep.
ablation: venv
	$(VENV)/bin/ssl-hpc tune --data "$(DEMO_DIR)/survey" --out "$(DEMO_DIR)/ablation" \
	    --config jobs/configs/tune-ablation.yaml

# 4 label fractions x 3 repeats x (fine-tuned, supervised) per task: 48 Ray Train runs of
# 300 steps; a rerun resumes. The report takes both: --efficiency DIR/photoz --efficiency ...
efficiency: venv
	for task in photoz smooth_or_featured; do \
	    $(VENV)/bin/ssl-hpc finetune --checkpoint "$(DEMO_DIR)/pretrain" --data "$(DEMO_DIR)/survey" \
	        --out "$(DEMO_DIR)/efficiency/$$task" --config jobs/configs/finetune-demo.yaml \
	        --task $$task --fractions 0.05,0.1,0.2,1 --repeats 3 || exit 1; \
	done

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf runs/
