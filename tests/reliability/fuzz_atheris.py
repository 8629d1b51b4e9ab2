"""Coverage-guided fuzzing of ``parse_bytes`` with atheris (libFuzzer).

    python tests/reliability/fuzz_atheris.py --make-corpus CORPUS
    python tests/reliability/fuzz_atheris.py -atheris_runs=100000 CORPUS

The first input byte picks the file extension, the rest is the file. ``--make-corpus``
seeds a corpus directory with the MetaHuman fixtures and files from the Hypothesis
strategies (records of every format), which the fuzzer then mutates. An input that
breaks a promise of ``parse_bytes`` (see ``check_parse``) raises, and libFuzzer writes
it to ``crash-<sha1>`` in the working directory. atheris is not a dependency of the
project: install it (``pip install atheris``) to run this.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import atheris  # noqa: E402

# Coverage is traced in the parsers only (not in Hypothesis and the test helpers).
with atheris.instrument_imports(include=["services.memories"]):
    from services.memories import SUPPORTED_EXTENSIONS

from tests.reliability.fuzz import check_parse, sample_files  # noqa: E402
from tests.reliability.fuzz_inputs import UNSUPPORTED_EXTENSIONS  # noqa: E402

EXTENSIONS = (*SUPPORTED_EXTENSIONS, *UNSUPPORTED_EXTENSIONS)


class BrokenPromise(AssertionError):
    """parse_bytes raised, crashed inside, or gave an answer it promises never to give."""


def test_one_input(data: bytes) -> None:
    if not data:
        return
    name = "fuzzed" + EXTENSIONS[data[0] % len(EXTENSIONS)]
    check = check_parse(name, data[1:])
    if check.violations:
        raise BrokenPromise(f"{name}: {'; '.join(check.violations)}")


def make_corpus(directory: Path, samples: int = 300) -> int:
    """Write seed inputs (extension byte + file) into ``directory``; how many."""
    directory.mkdir(parents=True, exist_ok=True)
    fixtures = REPO / "tests" / "fixtures" / "metahuman"
    files = [(p.name, p.read_bytes()) for p in sorted(fixtures.glob("*.json"))]
    files += sample_files(samples, seed=0)
    written = 0
    for number, (name, data) in enumerate(files):
        extension = Path(name).suffix.lower()
        if extension in EXTENSIONS:
            (directory / f"seed-{number:04d}").write_bytes(
                bytes([EXTENSIONS.index(extension)]) + data
            )
            written += 1
    return written


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--make-corpus":
        print(f"{make_corpus(Path(sys.argv[2]))} seeds written to {sys.argv[2]}")
        return
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
