"""Export a quickstart workspace's pruned student to ExecuTorch (FP32 and INT8) for the real-faces report.

    python benchmarks/export_real_students.py --workspace pinlite-workspace [--real-data ../shared/data/real-av]

The quickstart itself exports ONNX FP32/INT8 only (ExecuTorch lowering takes minutes); this adds
``exports/pte/pinlite-student.pte`` and ``exports/pte-int8/pinlite-student.pte``. INT8 is calibrated exactly as the
quickstart calibrates its ONNX INT8 model: half synthetic clips, half un-augmented real mouth crops of the train split.
Existing artefacts are kept unless ``--force``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from pinlite_edge.errors import PinliteError  # noqa: E402
from pinlite_edge.quickstart import QuickstartConfig, _calibration, real_options, resolve_real_data  # noqa: E402
from pinlite_edge.workspace_layout import ARTEFACT_STEM, export_artifact_path  # noqa: E402

log = logging.getLogger("export_real_students")

#: (format, calibration clips or None)
FORMATS = (("pte", None), ("pte-int8", 64))


def export_students(workspace: Path, real_data: str | None, force: bool = False) -> list[Path]:
    from pinlite_edge.export.api import export_model

    checkpoint = workspace / "pruned" / "best.safetensors"
    if not checkpoint.is_file():
        raise PinliteError(f"{checkpoint} not found: run python -m pinlite_edge.quickstart --workspace {workspace}")
    real = resolve_real_data(real_data)
    options = real_options(QuickstartConfig(), real) if real is not None else {}
    written = []
    for fmt, calib in FORMATS:
        artefact = export_artifact_path(workspace, fmt)
        existing = [artefact] if artefact.is_file() else []
        if existing and not force:
            log.info("%s: keeping %s", fmt, existing[0])
            written.append(existing[0])
            continue
        extra = {}
        if calib is not None:
            extra = ({"calibration": _calibration(calib, real, options)} if real is not None
                     else {"calib_size": calib})
        log.info("exporting %s (minutes: ExecuTorch lowering)", fmt)
        written.append(export_model(checkpoint, fmt, artefact.parent, name=ARTEFACT_STEM, force=True,
                                    **extra).artifact)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workspace", type=Path, default=Path("pinlite-workspace"))
    p.add_argument("--real-data", default="auto", help="real clips for INT8 calibration ('auto', a folder, 'none')")
    p.add_argument("--force", action="store_true", help="re-export artefacts that exist")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        for path in export_students(args.workspace, args.real_data, args.force):
            print(path)
    except PinliteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
