"""A stand-in training child that misbehaves on purpose (set FAKE_TRAINER).

Called as ``fake_trainer.py -m services.training --run-dir D ... --progress-fd N``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time


def main() -> int:
    argv = sys.argv[1:]
    fd = int(argv[argv.index("--progress-fd") + 1])
    run_dir = argv[argv.index("--run-dir") + 1]
    behaviour = os.environ.get("FAKE_TRAINER", "ok")
    gate = {"passed": True, "reason": "improved"}
    if behaviour == "ok-rejected":
        behaviour = "ok"
        gate = {"passed": False, "reason": "held-out loss did not improve by the margin"}
    out = os.fdopen(fd, "wb", buffering=0)

    def emit(obj: dict) -> None:
        out.write(json.dumps(obj).encode() + b"\n")
        with open(os.path.join(run_dir, "progress.jsonl"), "a") as f:  # as the real child
            f.write(json.dumps(obj) + "\n")

    with open(os.path.join(run_dir, "fake.pid"), "w") as f:
        f.write(str(os.getpid()))
    with open(os.path.join(run_dir, "argv.json"), "w") as f:
        json.dump(argv, f)
    emit({"event": "start", "total_steps": 4})
    if behaviour == "ok":
        out.write(b"garbage that is not json\n\x00\xff{\n")
        out.write(b'{"event": "step", "step": 1, "loss": ' + b"9" * 100_000 + b"}\n")
        for step in range(1, 5):
            time.sleep(float(os.environ.get("FAKE_TRAINER_STEP_S", "0")))  # a step's work
            emit(
                {
                    "event": "step",
                    "step": step,
                    "loss": 2.0 / step,
                    "lr": 1e-4,
                    "tokens_per_s": 100.0,
                    "eta_s": 4 - step,
                }
            )
        emit({"event": "eval", "step": 4, "eval_loss": 0.5})
        kind = argv[argv.index("--kind") + 1]
        artifact = os.path.join(run_dir, "model" if kind == "full" else "adapter")
        base = argv[argv.index("--base") + 1]
        if kind == "full" and os.path.isdir(base):
            shutil.copytree(base, artifact)  # stands in for the trained weights
            with open(os.path.join(artifact, "trained.json"), "w") as f:
                json.dump({"run": run_dir}, f)  # each run's model differs
        elif kind == "lora":
            os.makedirs(artifact)
            with open(os.path.join(artifact, "adapter_config.json"), "w") as f:
                json.dump({"peft_type": "LORA", "r": 4, "base_model_name_or_path": base}, f)
            with open(os.path.join(artifact, "adapter_model.safetensors"), "wb") as f:
                header = json.dumps({"__metadata__": {"stand-in": "adapter weights"}}).encode()
                f.write(len(header).to_bytes(8, "little") + header)  # no tensors
        metrics = {"eval_loss": 0.5, "steps": 4, "train_seconds": 0.4, "gate": gate}
        emit({"event": "done", "metrics": metrics, "artifact": artifact})
        return 0
    if behaviour == "crash":
        emit({"event": "error", "message": "CUDA error: device-side assert", "code": 1})
        print("Traceback: something broke", file=sys.stderr)
        return 1
    if behaviour == "crash-silent":
        print("Segmentation fault in libtorch", file=sys.stderr)
        os._exit(139)
    if behaviour == "oom":
        emit(
            {"event": "error", "message": "CUDA out of memory. Tried to allocate 2 GiB", "code": 4}
        )
        return 4
    if behaviour == "bad-input":
        emit({"event": "error", "message": "dataset is empty", "code": 3})
        return 3
    if behaviour == "hang":
        emit({"event": "step", "step": 1, "loss": 1.0, "lr": 1e-4, "tokens_per_s": 1, "eta_s": 9})
        while True:
            time.sleep(1)
    if behaviour == "grandchild":
        pid = os.fork()
        if pid == 0:  # holds the progress pipe open and lives on
            with open(os.path.join(run_dir, "grandchild.pid"), "w") as f:
                f.write(str(os.getpid()))
            while True:
                time.sleep(1)
        time.sleep(0.5)
        return 0
    if behaviour == "fill-disk":  # a checkpoint that meets a full disk
        checkpoint = os.path.join(run_dir, "checkpoints", "step-1")
        os.makedirs(checkpoint)
        try:
            with open(os.path.join(checkpoint, "model.safetensors"), "wb", buffering=0) as f:
                while True:
                    f.write(b"\0" * 65536)
        except OSError as exc:
            emit({"event": "error", "message": f"saving a checkpoint failed: {exc}", "code": 1})
            return 1
    if behaviour == "ignore-term":
        import signal

        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(1)
    raise SystemExit(f"unknown FAKE_TRAINER {behaviour!r}")


if __name__ == "__main__":
    sys.exit(main())
