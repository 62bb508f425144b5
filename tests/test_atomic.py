from pathlib import Path

import pytest

from pipeline.atomic import atomic_dir, atomic_path, write_text_atomic


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    write_text_atomic(target, "good")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_written_file_gets_normal_permissions(tmp_path: Path) -> None:
    write_text_atomic(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o044  # readable by others, unlike mkstemp's 0600


def test_directory_is_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    final = tmp_path / "ckpt"
    with atomic_dir(final) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "a").write_text("2")
        raise RuntimeError("killed")
    assert (final / "a").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


# a writer of `final` that dies (os._exit: no finally blocks, like SIGKILL) at its k-th rename or
# delete inside atomic_dir; k past the last step lets the write finish
KILLED_WRITER = """
import os, shutil, sys
from pathlib import Path
from pipeline import atomic
final, k = Path(sys.argv[1]), int(sys.argv[2])
calls = 0
def dying(real):
    def step(*args, **kwargs):
        global calls
        calls += 1
        if calls == k:
            os._exit(9)
        return real(*args, **kwargs)
    return step
atomic.os.replace = dying(os.replace)
atomic.shutil.rmtree = dying(shutil.rmtree)
with atomic.atomic_dir(final) as tmp:
    (tmp / "a").write_text("new")
    (tmp / "b").write_text("new")
"""


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_a_writer_killed_between_any_two_steps_leaves_a_whole_folder(
    tmp_path: Path, k: int
) -> None:
    import subprocess
    import sys

    from pipeline.atomic import recover_dir

    final = tmp_path / "ckpt"
    with atomic_dir(final) as tmp:
        (tmp / "a").write_text("old")
        (tmp / "b").write_text("old")
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(final), str(k)])
    assert done.returncode == (9 if k <= 3 else 0)  # three steps: aside, rename in, delete
    recover_dir(final)
    contents = {p.name: p.read_text() for p in final.iterdir()}
    # the old folder or the new one, never a mixture, never none
    assert contents in ({"a": "old", "b": "old"}, {"a": "new", "b": "new"})
    if k >= 3:  # the new folder had taken the name before the kill
        assert contents == {"a": "new", "b": "new"}
    with atomic_dir(final) as tmp:  # the next write cleans up whatever the dead one left
        (tmp / "a").write_text("next")
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    assert {p.name: p.read_text() for p in final.iterdir()} == {"a": "next"}
