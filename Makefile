# Two commands for a new user:  `make lab` (set up + open JupyterLab), `make test` (all tests).
# Both create (or reuse) the virtual environment .venv and install the project into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup lab test unit notebooks course student grade gpu-dry results benchmark gpu-results clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

# (as root, e.g. in a container, JupyterLab refuses to start without --allow-root)
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

test: unit notebooks course gpu-dry

# The unit tests and the smoke pass run in TEST_WORKERS processes (pytest-xdist; a notebook's cells stay
# together in one kernel) of one torch thread each: most of their time is single-threaded Python, so on 2
# cores they take about 30% less than one process with 2 threads. The gpu-dry pass is ResNet convolutions,
# which two threads of one process already share: it stays in one process. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
PARALLEL := $(if $(filter 0,$(TEST_WORKERS)),,OMP_NUM_THREADS=1)
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadscope)

unit: $(STAMP)
	$(PARALLEL) $(BIN)/python -m pytest tests -q $(XDIST)

# Every notebook executed top to bottom under the small `smoke` budget; the same run writes the
# exercise checks' report, and every exercise of the teacher notebooks must pass.
REPORT := results/smoke/grade_report.jsonl
notebooks: $(STAMP)
	mkdir -p results/smoke && rm -f $(REPORT)
	$(PARALLEL) SSL_PROFILE=smoke SSL_GRADE_REPORT=$(CURDIR)/$(REPORT) $(BIN)/python -m pytest --nbval-lax notebooks/ -q -p no:cacheprovider $(XDIST)
	$(BIN)/python -m ssl_core.course grade --report $(REPORT) notebooks/[0-9][0-9]_*.ipynb

# The course kit (COURSE.md). Student copies: every solution replaced by a NotImplementedError stub,
# outputs cleared, written to student/ (git-ignored).
student: $(STAMP)
	$(BIN)/python -m ssl_core.course student --out student

# Run a notebook under smoke in a subprocess and print a table per exercise:  make grade NB=student/06_simclr_v1.ipynb
grade: $(STAMP)
	$(BIN)/python -m ssl_core.course grade $(NB)

# CI: the blank student copies. The unit tests check every copy's exercise cells ("not done") and that
# every solution region lies inside a function body, so a copy differs from its teacher notebook only
# there; one copy whose training loop runs on the student's functions (05) is executed to the end under
# smoke, every exercise "not done". All of them:  make course COURSE_RUN="student/[0-9][0-9]_*.ipynb"
COURSE_RUN ?= student/05_moco_v1.ipynb
course: student
	$(BIN)/python -m ssl_core.course grade --expect "not done" $(COURSE_RUN)

# Every notebook's gpu code path (ResNet-18, the papers' sizes and heads) for one small
# step per training loop, on the CPU: a typo in a gpu-only branch fails here, not on a reader's GPU.
gpu-dry: $(STAMP)
	SSL_PROFILE=gpu-dry $(BIN)/python -m pytest --nbval-lax notebooks/ -q -p no:cacheprovider

# A reader with a GPU: run notebooks under the gpu profile, capped in wall-clock time, and print
# a table (epochs, minutes, images/s, kNN, peak GPU memory). NOTEBOOKS="06_simclr_v1 09_byol" MINUTES=90
NOTEBOOKS ?= 06_simclr_v1 07_moco_v2
MINUTES ?= 60
gpu-results: $(STAMP)
	$(BIN)/python benchmarks/gpu_results.py $(NOTEBOOKS) --minutes $(MINUTES)

# Rebuild the README's results table from results/*.json.
results: $(STAMP)
	$(BIN)/python -m ssl_core.results

benchmark: $(STAMP)
	$(BIN)/python benchmarks/augment_throughput.py
	$(BIN)/python benchmarks/data_load.py --fresh

clean:
	rm -rf checkpoints results/smoke results/gpu-dry .pytest_cache student
