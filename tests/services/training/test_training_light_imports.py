"""What the daemon imports and calls from ``services.training``, and the training child's
reading of its dataset, never load torch, transformers or peft."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.services.training.training_helpers import REPO, header_only_model

PROBE = """
import json, sys
from pathlib import Path
import services.training
from services.training import base_model, command, config, dataset_reader, modelinfo, progress
from services.training.config import resolve_config

model = Path(sys.argv[1])
resolved = resolve_config(base_model=model, kind="lora", n_samples=10, mode="emulation",
                          preset="quick", job_args={}, etc_dir=Path(sys.argv[2]))
resolved.write(Path(sys.argv[3]))
dataset = Path(sys.argv[3]) / dataset_reader.DATASET_FILE
dataset.write_text('{"prompt": "p", "completion": "c", "mode": "emulation"}\\n')
records = dataset_reader.read_dataset(dataset)
modelinfo.probe(base_model.locate("embedded:smollm2"))
argv = command.build_command(run_dir=Path(sys.argv[3]), kind="lora", base="embedded:smollm2",
                             cache_dir=Path("/tmp"), progress_fd=3)
parser = progress.ProgressParser()
parser.feed(b'{"event": "start", "total_steps": 1}\\n')
heavy = sorted(m for m in ("torch", "transformers", "peft") if m in sys.modules)
print(json.dumps({"heavy": heavy, "argv": argv, "records": len(records)}))
"""


def test_daemon_side_modules_do_not_import_training_libraries(tmp_path: Path) -> None:
    model = header_only_model(tmp_path / "model", 1000)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(model), str(REPO / "etc"), str(tmp_path / "run")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["records"] == 1
    assert result["argv"][1:3] == ["-m", "services.training"]
    assert (tmp_path / "run" / "config.json").is_file()
