"""The machine a result was made on, for the result files (imported by the scripts in this folder, and run by CI).

`python benchmarks/machine.py` prints the line CI compares with `results/recorded_on.txt`, the machine that made the
committed `dvc.lock`: float rounding differs between CPU models and library versions, so the default `dvc repro`
reproduces that record byte for byte only on the same kind of machine."""

import platform
from pathlib import Path


def cpu_model() -> str:
    "The CPU's model name from /proc/cpuinfo, else what `platform` knows."
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_note(load: list) -> str:
    "What the 1-minute load average `load[0]` (taken before a measurement) says about the machine, for a result file."
    if load[0] < 0.5:
        return "a quiet machine: 1-minute load average under 0.5 before measuring"
    return "a shared machine: other processes ran beside (see the load averages)"


def machine_line() -> str:
    "CPU model, machine type and the versions of the libraries that compute: what a byte-exact record depends on."
    import numpy, torch

    return f"{cpu_model()} | {platform.machine()} | torch {torch.__version__} | numpy {numpy.__version__}"


if __name__ == "__main__":
    print(machine_line())
