"""Ship a training output as the package's tiny weights, per task (tiny/trust.py), without retraining.

    python -m pytest_glmv.tiny.train.ship DIR --arch moe [--log TRAIN.LOG] [--command "the training command"]

DIR is what `python -m pytest_glmv.tiny.train` wrote (OUT, or OUT.rejected from before the per-task rule).
Its weights must be bf16 safetensors made for today's files.py (config.json's sha256, and every other model
file byte-identical); its training.json's measured accuracies are taken as they are (checked against the
training log's table when given) and judged by trust.verdicts. Weights where no gated task passes are
refused (exit 1, nothing written). Writes pytest_glmv/tiny/weights/<arch>/: model.safetensors and
training.json (the original record, `tasks` with each verdict, and how it was shipped).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

from .. import WEIGHTS_ROOT, files, trust


class ShipError(ValueError):
    pass


def bf16_only(path: Path) -> None:
    """Every tensor of a safetensors file is bf16 (its JSON header says; nothing is loaded)."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    if dtypes != {"BF16"}:
        raise ShipError(f"{path}: tensors of dtype {sorted(dtypes)}, not only BF16")


def logged_accuracy(log: str) -> dict[str, float]:
    """The training log's table (evaluate.table): task -> accuracy as printed, in percent."""
    return {m[1]: float(m[2]) for m in re.finditer(r"^(\w+)\s+([\d.]+)%\s+\(n=\d+, threshold", log, re.M)}


def record_for(src: Path, arch: str, log: str | None) -> dict[str, Any]:
    record = json.loads((src / "training.json").read_text())
    contents, _ = files.files(arch)
    want = hashlib.sha256(contents["config.json"]).hexdigest()
    if record.get("arch") != arch or record.get("config_sha256") != want:
        raise ShipError(f"{src}: trained for arch {record.get('arch')!r}, config sha256 "
                        f"{str(record.get('config_sha256'))[:12]}; today's {arch} config is {want[:12]}")
    differ = [n for n, b in contents.items() if (src / n).is_file() and (src / n).read_bytes() != b]
    if differ:
        raise ShipError(f"{src}: {', '.join(differ)} differ from today's files.py (another tokenizer or template)")
    if "tasks" in record:  # written by today's train.py: measured n per task
        accuracy = {t: r["accuracy"] for t, r in record["tasks"].items()}
        n: dict[str, int] | int = {t: r["n"] for t, r in record["tasks"].items()}
    else:  # before the per-task rule: accuracy per task, one eval_n for all
        accuracy, n = record["accuracy"], int(record["eval_n"])
        old = record.get("thresholds") or {}
        moved = {t: (old[t], trust.THRESHOLDS[t]) for t in old if old[t] != trust.THRESHOLDS.get(t)}
        if moved:
            raise ShipError(f"{src}: thresholds changed since this training: {moved} (recorded, today's)")
    if log is not None:
        printed = logged_accuracy(log)
        off = {t: (printed.get(t), round(100 * a, 1)) for t, a in accuracy.items()
               if printed.get(t) != round(100 * a, 1)}
        if off:
            raise ShipError(f"training.json disagrees with the log's table: {off} (log %, training.json %)")
    tasks = trust.verdicts(accuracy, n, record.get("ungated", trust.UNGATED))
    kept = {k: v for k, v in record.items() if k not in ("accuracy", "thresholds", "passed", "tasks")}
    return {**kept, "tasks": tasks, "all_passed": all(r["passed"] for r in tasks.values() if r["gated"])}


def reevaluate(record: dict[str, Any], evaluations: list[Path], note: str | None) -> None:
    """Replace tasks' accuracies with a later greedy evaluation of the same weights (train.evaluate --json), e.g.
    after a judge was made stricter: trust follows today's reading. The training's own numbers stay on record."""
    if evaluations and not note:
        raise ShipError("--reevaluated needs --reevaluation-note: the command and the judges' commit that measured it")
    for path in evaluations:
        try:
            result = json.loads(path.read_text())
        except ValueError:
            result = None
        if not isinstance(result, dict) or not all(isinstance(r, dict) and {"accuracy", "n"} <= r.keys()
                                                     for r in result.values()):
            raise ShipError(f"{path}: not a python -m pytest_glmv.tiny.train.evaluate --json result")
        # a task defined since the training (e.g. one split in two) may be measured now; an unknown name may not
        unknown = [t for t in result if t not in record["tasks"] and t not in trust.THRESHOLDS]
        if unknown:
            raise ShipError(f"{path}: tasks {unknown} were not measured in training and are no task of today's")
        old = {t: record["tasks"][t]["accuracy"] if t in record["tasks"] else None for t in result}
        merged = {**record["tasks"], **result}
        accuracy, n = {t: r["accuracy"] for t, r in merged.items()}, {t: r["n"] for t, r in merged.items()}
        record["tasks"] = trust.verdicts(accuracy, n, record.get("ungated", trust.UNGATED))
        record.setdefault("reevaluated", []).append({"file": path.name, "note": note, "training_measured": old})
    record["all_passed"] = all(r["passed"] for r in record["tasks"].values() if r["gated"])


def check_inputs(path: Path) -> dict[str, Any]:
    """A train.check_inputs --json result, checked: each entry names a check of trust.CHECK_TASKS."""
    try:
        result = json.loads(path.read_text())
    except ValueError:
        result = None
    checks = result.get("checks") if isinstance(result, dict) else None
    if not isinstance(checks, dict) or not all(k in trust.CHECK_TASKS and isinstance(r, dict)
                                               and {"examples", "passed"} <= r.keys() for k, r in checks.items()):
        raise ShipError(f"{path}: not a python -m pytest_glmv.tiny.train.check_inputs --json result")
    return {"file": path.name, "hypothesis": result.get("hypothesis"), "checks": checks,
            "command": "python -m pytest_glmv.tiny.train.check_inputs --model DIR --json " + path.name}


def ship(src: Path, arch: str, log_path: Path | None, command: str | None, dest_root: Path = WEIGHTS_ROOT,
         evaluations: list[Path] | None = None, note: str | None = None, inputs: Path | None = None) -> Path:
    weights = sorted(src.glob("*.safetensors"))
    if [w.name for w in weights] != ["model.safetensors"]:
        raise ShipError(f"{src}: expected one model.safetensors, found {[w.name for w in weights]}")
    bf16_only(weights[0])
    log = log_path.read_text() if log_path else None
    record = record_for(src, arch, log)
    reevaluate(record, evaluations or [], note)
    if inputs is not None:
        record["check_inputs"] = check_inputs(inputs)
    refused = trust.refusal(record)
    if refused:
        raise ShipError(f"{src}: not shipped: {refused}")
    if "shipped" in record:  # re-shipping shipped weights (e.g. re-evaluated): their first provenance stays
        record["shipped_before"] = record.pop("shipped")
    record["shipped"] = {
        "from": f"{src.name}/training.json: measured accuracies as recorded (cross-checked with "
                f"{log_path.name if log_path else 'no log'}), verdicts by pytest_glmv/tiny/trust.py",
        "command": command or record.get("command") or "not recorded",
        "model_sha256": hashlib.sha256(weights[0].read_bytes()).hexdigest(),
    }
    dest = dest_root / arch
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights[0], dest / "model.safetensors")
    (dest / "training.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pytest_glmv.tiny.train.ship", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="a training output dir")
    ap.add_argument("--arch", choices=tuple(files.ARCHS), default="moe")
    ap.add_argument("--log", type=Path, help="the training's log, whose table must agree with training.json")
    ap.add_argument("--command", help="the training command, recorded as given")
    ap.add_argument("--reevaluated", type=Path, action="append", default=[],
                    help="a later evaluation of the same weights (train.evaluate --json) whose accuracies replace the "
                         "training's for its tasks; repeatable")
    ap.add_argument("--reevaluation-note", help="how the --reevaluated files were measured (command, judges' commit)")
    ap.add_argument("--check-inputs", type=Path, help="the picture checks' own examples run on these weights "
                    "(train.check_inputs --json): a check that fails any of them on the model does not run on it")
    a = ap.parse_args(argv)
    try:
        dest = ship(a.src, a.arch, a.log, a.command, evaluations=a.reevaluated, note=a.reevaluation_note,
                    inputs=a.check_inputs)
    except (ShipError, OSError, ValueError, KeyError) as e:
        print(f"glmv: {e}", file=sys.stderr)
        return 1
    record = json.loads((dest / "training.json").read_text())
    t = trust.Trust(record, "training.json")
    print(f"shipped {dest}: trusted for {', '.join(t.trusted())}; not for "
          f"{', '.join(k for k in record['tasks'] if k not in t.trusted())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
