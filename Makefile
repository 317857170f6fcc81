# The two commands of the README:
#   make train   install into .venv and train the default agent (Vadam-DDPG) on HalfCheetah-v5
#   make test    install into .venv (with dev tools) and run the test suite
#   make tensorboard   TensorBoard on the runs folder
#   make bench   training speed vs Stable-Baselines3 and the compute bound (BENCH_ARGS=--short)
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# Where torch comes from: empty is the default index (PyPI: on Linux x86_64 the CUDA build,
# with its CUDA packages); e.g. https://download.pytorch.org/whl/cpu for PyTorch's CPU-only wheels.
TORCH_INDEX ?=
AGENT ?= ddpg-vadam
ENV ?= HalfCheetah-v5
STEPS ?= 100000
SEED ?= 0
LOGDIR ?= runs
PYTEST_ARGS ?=
# MuJoCo's offscreen rendering (videos) needs EGL here; .ci/run and make test agree on it.
export MUJOCO_GL ?= egl
BENCH_ARGS ?=

BIN := $(VENV)/bin

.PHONY: train tensorboard test install lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Torch goes in first, pinned, so the package's unpinned `torch>=2.3` finds it satisfied.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)") "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# The run directory `vadam-rl train` names by default: run again after Ctrl-C and it continues.
RUN_DIR := $(LOGDIR)/$(AGENT)_$(subst :,-,$(subst /,-,$(ENV)))_s$(SEED)
# What continues a stopped `make train`: this command, with the variables given on its command
# line. vadam-rl names it (VADAM_RL_CONTINUE) where it would say `vadam-rl train --resume`.
CONTINUE := $(strip make train $(foreach v,AGENT ENV STEPS SEED LOGDIR,$(if $(filter command,$(origin $(v))),$(v)=$($(v)))))
NEXT := "next: source $(VENV)/bin/activate puts vadam-rl and tensorboard on your PATH; \
	make tensorboard shows the runs"

train: install
	@if [ -f "$(RUN_DIR)/checkpoint.pt" ] && [ ! -f "$(RUN_DIR)/summary.json" ]; then \
		echo "continuing the interrupted run $(RUN_DIR) (delete it to start afresh)"; \
		VADAM_RL_CONTINUE='$(CONTINUE)' $(BIN)/vadam-rl train --resume $(RUN_DIR) --total-steps $(STEPS); \
	else \
		VADAM_RL_CONTINUE='$(CONTINUE)' $(BIN)/vadam-rl train --agent $(AGENT) --env $(ENV) --seed $(SEED) \
			--total-steps $(STEPS) --log-dir $(LOGDIR); \
	fi; status=$$?; echo $(NEXT); exit $$status

tensorboard: install
	$(BIN)/tensorboard --logdir $(LOGDIR)

# Two workers (pytest-xdist): most tests run one torch thread or wait on a subprocess. Each
# worker holds at most two tests at a time, the expensive ones first (tests/conftest.py), so
# neither is left alone with a long test at the end.
test: install
	$(BIN)/python -m pytest -q -n 2 --maxschedchunk 1 $(PYTEST_ARGS)

# Writes bench/results/result.json and result.md; e.g. BENCH_ARGS="--short" or "--device cuda".
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check vadam_rl tests bench scripts
	$(BIN)/ruff format --check vadam_rl tests bench scripts

format: install
	$(BIN)/ruff format vadam_rl tests bench scripts
	$(BIN)/ruff check --fix vadam_rl tests bench scripts

clean:
	rm -rf $(VENV) build *.egg-info
