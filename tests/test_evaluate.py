from __future__ import annotations

from pathlib import Path


def test_evaluate_refuses_a_model_whose_run_is_not_in_the_store(
    trained_tiny: dict, tmp_path: Path
) -> None:
    """Checked before any work: the outputs never say success for a stage that failed."""
    import subprocess
    import sys

    from tests.conftest import tiny_overrides

    root = trained_tiny["root"]
    overrides = [
        o for o in tiny_overrides(root) if not o.startswith(("tracking.", "paths.reports"))
    ]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.evaluate",
            *overrides,
            f"tracking.tracking_uri=sqlite:///{tmp_path}/other/mlflow.db",
            f"tracking.artifact_location={tmp_path}/other/artifacts",
            f"paths.reports={tmp_path}/reports",
            f"hydra.run.dir={tmp_path}/hydra",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1
    assert "named in models/vae.json" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "reports").exists()
