"""The atomic writer every module uses: writers of the same file at once (sweep workers ending together) each
replace it whole, and a reader never sees half of it."""

from __future__ import annotations

import threading
from pathlib import Path

from preftune.run_files import write_text_atomic


def test_concurrent_writers_of_one_file_each_replace_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "best.yaml"
    texts = {k: f"writer {k}\n" * 2000 for k in range(4)}
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            for _ in range(150):
                write_text_atomic(path, texts[k])
        except BaseException as e:  # noqa: BLE001 - any failure of a writer fails the test
            errors.append(e)

    threads = [threading.Thread(target=write, args=(k,)) for k in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert path.read_text() in texts.values() and not list(tmp_path.glob(".*.tmp"))
