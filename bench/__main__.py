"""Run the pytest-benchmark suites in bench/ and print one table of ratios.

    python -m bench                 # every suite
    python -m bench -k xcorr        # extra arguments go to pytest
    python -m bench --markdown FILE # also write the table as markdown

Each benchmark names its group and implementation; one implementation per group is
the baseline users have today (pysot's grouped F.conv2d, numpy post-processing...).
The table gives every implementation's median time and its speed-up over that
baseline, all measured in this one run.
"""

import argparse
import datetime
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

BENCH_DIR = Path(__file__).resolve().parent


def machine_description():
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [f"{cpu}, {torch.get_num_threads()} threads"]
    if torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name())
    parts.append(f"torch {torch.__version__}")
    return "; ".join(parts)


def _format_time(seconds):
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def rows_from_report(report):
    """(group, impl, median seconds, speed-up over the group's baseline or None) per benchmark."""
    groups = {}
    for bench in report["benchmarks"]:
        groups.setdefault(bench["group"] or bench["name"], []).append(bench)
    rows = []
    for group, benches in groups.items():
        baselines = [b for b in benches if b["extra_info"].get("baseline")]
        baseline = baselines[0]["stats"]["median"] if baselines else None
        for bench in sorted(benches, key=lambda b: b["stats"]["median"]):
            median = bench["stats"]["median"]
            impl = bench["extra_info"].get("impl", bench["name"])
            if bench["extra_info"].get("baseline"):
                impl += " (baseline)"
            rows.append((group, impl, median, baseline / median if baseline else None))
    return rows


def markdown_table(rows):
    lines = ["| case | implementation | median | speed-up vs baseline |", "|---|---|---:|---:|"]
    previous_group = None
    for group, impl, median, speedup in rows:
        shown_group = group if group != previous_group else ""
        previous_group = group
        ratio = f"{speedup:.2f}x" if speedup is not None else "-"
        lines.append(f"| {shown_group} | {impl} | {_format_time(median)} | {ratio} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", type=Path, help="also write the table (with machine and date) to this file")
    args, pytest_args = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        command = [
            sys.executable, "-m", "pytest", str(BENCH_DIR), "-q", "-p", "no:cacheprovider", "-o", "python_files=bench_*.py",
            "--benchmark-only", "--benchmark-disable-gc", f"--benchmark-json={report_path}", *pytest_args,
        ]
        status = subprocess.call(command)
        if not report_path.exists():
            return status or 1
        report = json.loads(report_path.read_text())
    header = f"Machine: {machine_description()}\nDate: {datetime.date.today().isoformat()}\nCommand: python -m bench {' '.join(argv or sys.argv[1:])}".rstrip()
    table = markdown_table(rows_from_report(report))
    print(f"\n{header}\n\n{table}")
    if args.markdown:
        args.markdown.write_text(f"{header}\n\n{table}\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
