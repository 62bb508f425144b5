from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf

from pipeline.attributes import parse_attributes
from pipeline.dataset import load_faces
from pipeline.errors import PrepareError
from pipeline.prepare import CropSpec, decode_faces, person_disjoint_split, prepare
from tests.lfw_fixtures import ATTRIBUTE_NAMES, MARGIN_COLOUR, attributes_text


@pytest.fixture
def raw_dir(tmp_path: Path, lfw_source: dict) -> Path:
    raw = tmp_path / "raw"
    shutil.copytree(lfw_source["dir"], raw / "lfw-deepfunneled")
    return raw


def run(cfg: DictConfig, raw: Path, tmp_path: Path, **overrides: object) -> tuple[dict, dict]:
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"{k}={v}" for k, v in overrides.items()]))
    counts = prepare(cfg, raw, tmp_path / "prepared", tmp_path / "reports")
    with np.load(tmp_path / "prepared/faces.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    return counts, arrays


def test_prepared_file_shapes_counts_and_attribute_join(
    data_cfg: DictConfig, raw_dir: Path, tmp_path: Path, lfw_source: dict
) -> None:
    # drop two attribute rows: those images must be left out, as LFW's 90 unrated images are
    keys = lfw_source["keys"]
    attrs = tmp_path / "attrs.txt"
    attrs.write_text(attributes_text(keys[2:]), encoding="utf-8")
    counts, a = run(
        data_cfg, raw_dir, tmp_path, attributes_file=attrs, expected_attribute_rows=len(keys) - 2
    )
    n = len(keys) - 2
    assert a["images"].shape == (n, 64, 64, 3) and a["images"].dtype == np.uint8
    assert a["attributes"].shape == (n, 3) and a["attributes"].dtype == np.float32
    assert list(a["attribute_names"]) == ATTRIBUTE_NAMES
    assert a["imagenum"].dtype == np.int32
    assert set(zip(a["person"].tolist(), a["imagenum"].tolist(), strict=True)) == set(keys[2:])
    assert counts["images"] == n and counts["images_without_attributes"] == 2
    assert json.loads((tmp_path / "reports/prepare.json").read_text()) == counts
    assert (tmp_path / "prepared/samples.png").stat().st_size > 0


def test_attribute_scores_follow_their_image(
    data_cfg: DictConfig, raw_dir: Path, tmp_path: Path, lfw_source: dict
) -> None:
    parsed = parse_attributes(lfw_source["attributes"], expected_attributes=3)
    by_key = dict(zip(parsed.keys, parsed.scores, strict=True))
    _, a = run(data_cfg, raw_dir, tmp_path)
    for person, num, row in zip(a["person"], a["imagenum"], a["attributes"], strict=True):
        np.testing.assert_array_equal(row, by_key[(str(person), int(num))])


def test_attributes_disabled_keeps_every_image(
    data_cfg: DictConfig, raw_dir: Path, tmp_path: Path, lfw_source: dict
) -> None:
    counts, a = run(data_cfg, raw_dir, tmp_path, attributes=False, attributes_file="/nonexistent")
    assert counts["images"] == len(lfw_source["keys"])
    assert a["attributes"].shape == (len(lfw_source["keys"]), 0)


def test_crop_removes_the_margin(data_cfg: DictConfig, raw_dir: Path, tmp_path: Path) -> None:
    _, a = run(data_cfg, raw_dir, tmp_path)
    green = np.all(np.abs(a["images"].astype(int) - MARGIN_COLOUR) < 40, axis=-1)
    assert green.mean() < 0.001  # the fixture paints the 80-px margin green; none must survive
    _, b = run(data_cfg, raw_dir, tmp_path, **{"prepare.crop": 20})
    green = np.all(np.abs(b["images"].astype(int) - MARGIN_COLOUR) < 40, axis=-1)
    assert green.mean() > 0.2  # a smaller crop keeps margin: the crop setting really is applied


def test_splits_are_person_disjoint_and_deterministic(
    data_cfg: DictConfig, raw_dir: Path, tmp_path: Path
) -> None:
    _, a = run(data_cfg, raw_dir, tmp_path)
    people = {s: set(a["person"][a["split"] == s].tolist()) for s in ("train", "val", "test")}
    assert all(people[s] for s in people)
    assert not (
        people["train"] & people["val"]
        or people["train"] & people["test"]
        or people["val"] & people["test"]
    )
    _, again = run(data_cfg, raw_dir, tmp_path)
    np.testing.assert_array_equal(a["split"], again["split"])
    np.testing.assert_array_equal(a["images"], again["images"])
    _, other = run(data_cfg, raw_dir, tmp_path, **{"prepare.split.seed": 7})
    assert not np.array_equal(a["split"], other["split"])


def test_split_fractions_on_many_people() -> None:
    rng = np.random.default_rng(0)
    persons = np.repeat([f"p{i}" for i in range(2000)], rng.integers(1, 6, 2000))
    split = person_disjoint_split(persons, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    for name, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs((split == name).mean() - share) < 0.01
    shuffled = rng.permutation(len(persons))
    again = person_disjoint_split(
        persons[shuffled], {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0
    )
    np.testing.assert_array_equal(again, split[shuffled])  # independent of input order


def test_parallel_decoding_equals_serial(lfw_source: dict, tmp_path: Path) -> None:
    paths = sorted(lfw_source["dir"].rglob("*.jpg")) * 4
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    paths.insert(10, bad)  # inside the second of several uneven chunks
    serial, serial_ok = decode_faces(paths, CropSpec(), workers=1, bad_images="skip")
    parallel, ok = decode_faces(paths, CropSpec(), workers=2, bad_images="skip", chunk=7)
    np.testing.assert_array_equal(serial, parallel)
    assert np.flatnonzero(~ok).tolist() == np.flatnonzero(~serial_ok).tolist() == [10]
    assert parallel[11].any() and not parallel[10].any()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"is empty \(0 bytes\): the download was cut short"),
        (b"<html>not an image</html>", r"not an image file \(25 bytes of something else\)"),
        ("truncated", "unreadable"),
        ("png", "is PNG, not a JPEG"),
        ("small", "is 100x100, expected 250x250"),
        ("bomb", "claims an enormous image"),
    ],
)
def test_bad_image_fails_naming_the_file_and_writes_nothing(
    data_cfg: DictConfig, raw_dir: Path, tmp_path: Path, content: object, message: str
) -> None:
    from PIL import Image

    victim = sorted(raw_dir.rglob("*.jpg"))[3]
    if content == "truncated":
        victim.write_bytes(victim.read_bytes()[:200])
    elif content == "png":
        Image.new("RGB", (250, 250)).save(victim, format="PNG")
    elif content == "small":
        Image.new("RGB", (100, 100)).save(victim, format="JPEG")
    elif content == "bomb":  # a real JPEG whose frame header claims 15000x15000 pixels
        data = bytearray(victim.read_bytes())
        sof = data.index(b"\xff\xc0")
        data[sof + 5 : sof + 9] = (15000).to_bytes(2, "big") * 2
        victim.write_bytes(bytes(data))
    else:
        victim.write_bytes(content)
    with pytest.raises(PrepareError, match=message) as err:
        run(data_cfg, raw_dir, tmp_path)
    assert victim.name in str(err.value) and "bad_images=skip" in str(err.value)
    assert "BytesIO" not in str(err.value)  # the file, not Pillow's in-memory buffer
    assert not (tmp_path / "prepared/faces.npz").exists()
    prepared = tmp_path / "prepared"
    assert not prepared.exists() or list(prepared.iterdir()) == []  # no temp file left either


def test_bad_image_skipped_with_a_count(
    data_cfg: DictConfig, raw_dir: Path, tmp_path: Path, lfw_source: dict
) -> None:
    sorted(raw_dir.rglob("*.jpg"))[3].write_bytes(b"junk")
    counts, a = run(data_cfg, raw_dir, tmp_path, **{"prepare.bad_images": "skip"})
    assert counts["bad_images_skipped"] == 1
    assert len(a["images"]) == len(lfw_source["keys"]) - 1


def test_every_image_bad_is_an_error_even_when_skipping(
    data_cfg: DictConfig, raw_dir: Path, tmp_path: Path
) -> None:
    for path in raw_dir.rglob("*.jpg"):
        path.write_bytes(b"junk")
    with pytest.raises(PrepareError, match=r"every one of the \d+ images .* is bad"):
        run(data_cfg, raw_dir, tmp_path, **{"prepare.bad_images": "skip"})
    assert not (tmp_path / "prepared/faces.npz").exists()


def test_failed_rerun_keeps_the_previous_good_file(
    data_cfg: DictConfig, raw_dir: Path, tmp_path: Path
) -> None:
    run(data_cfg, raw_dir, tmp_path)
    good = (tmp_path / "prepared/faces.npz").read_bytes()
    sorted(raw_dir.rglob("*.jpg"))[0].write_bytes(b"junk")
    with pytest.raises(PrepareError):
        run(data_cfg, raw_dir, tmp_path)
    assert (tmp_path / "prepared/faces.npz").read_bytes() == good
    assert sorted(p.name for p in (tmp_path / "prepared").iterdir()) == ["faces.npz", "samples.png"]


def test_attribute_row_without_image(
    data_cfg: DictConfig, raw_dir: Path, tmp_path: Path, lfw_source: dict
) -> None:
    attrs = tmp_path / "attrs.txt"
    attrs.write_text(attributes_text([*lfw_source["keys"], ("Nobody_Here", 1)]), encoding="utf-8")
    with pytest.raises(PrepareError, match=r"1 rows have no image .*Nobody_Here #1"):
        run(data_cfg, raw_dir, tmp_path, attributes_file=attrs, expected_attribute_rows="null")


def test_a_split_left_empty_is_refused_and_the_previous_file_kept(
    data_cfg: DictConfig, raw_dir: Path, tmp_path: Path
) -> None:
    """Too few people for the split (a subset, most attributes rows missing): one clear error, not
    a prepared file without training faces that fails an hour later."""
    run(data_cfg, raw_dir, tmp_path)
    good = (tmp_path / "prepared/faces.npz").read_bytes()
    with pytest.raises(PrepareError, match=r"the train split is empty: .*change the split"):
        run(
            data_cfg,
            raw_dir,
            tmp_path,
            **{"prepare.split.train": 0.001, "prepare.split.val": 0.5, "prepare.split.test": 0.5},
        )
    assert (tmp_path / "prepared/faces.npz").read_bytes() == good


def test_the_download_source_travels_into_the_prepared_file(
    data_cfg: DictConfig, raw_dir: Path, tmp_path: Path
) -> None:
    _, a = run(data_cfg, raw_dir, tmp_path)
    assert str(a["source"]).startswith("unknown")  # images placed by hand: said, not guessed
    (raw_dir / "download.json").write_text(json.dumps({"source": "https://mirror/lfw.tgz"}))
    _, a = run(data_cfg, raw_dir, tmp_path)
    assert str(a["source"]) == "https://mirror/lfw.tgz"
    faces = load_faces(tmp_path / "prepared/faces.npz")
    assert faces.source == faces.subset("train").source == "https://mirror/lfw.tgz"
