"""Demonstration files: exact round trips, a one-line DemoError per broken file, atomic saves."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from distributed_sac.config.data import Chunk
from distributed_sac.config.fields import EnvConfig
from distributed_sac.replay.demos import DemoError, demo_meta, load_demo, load_demos, save_episode

CFG = EnvConfig(image_size=32)
S = CFG.frame_stack


def episode(t: int = 6, size: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """Frame i is filled with the value 10 * seed + i, so any reordering or loss shows."""
    ids = (10 * seed + np.arange(t + S)).astype(np.uint8)
    rng = np.random.default_rng(seed)
    terminated = np.zeros(t, bool)
    terminated[-1] = True
    return {
        "frames": np.broadcast_to(ids[:, None, None], (t + S, size, size)).copy(),
        "action": rng.uniform(-1, 1, (t, 3)).astype(np.float32),
        "reward": rng.normal(size=t).astype(np.float32),
        "terminated": terminated,
        "truncated": np.zeros(t, bool),
    }


def save(path: Path, ep: dict[str, np.ndarray], cfg: EnvConfig = CFG, **meta) -> Path:
    args = (ep["frames"], ep["action"], ep["reward"], ep["terminated"], ep["truncated"])
    save_episode(path, *args, demo_meta("CarRacing", cfg, seed=3, **meta))
    return path


def write_raw(path: Path, meta_changes: dict | None = None, **changes) -> Path:
    """Write a file as save_episode would, then apply `changes` (None drops an array)."""
    meta = {**demo_meta("CarRacing", CFG), "format_version": 1, **(meta_changes or {})}
    arrays = {**episode(), "meta": np.array(json.dumps(meta)), **changes}
    np.savez_compressed(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.mark.parametrize("size", [32, 84])
def test_round_trip_is_exact(tmp_path: Path, size: int) -> None:
    cfg = EnvConfig(image_size=size)
    ep = episode(t=7, size=size, seed=2)
    path = save(tmp_path / "ep.npz", ep, cfg)
    chunk = load_demo(path, "CarRacing", cfg)
    assert isinstance(chunk, Chunk) and chunk.num_transitions == 7
    for name, want in ep.items():
        got = getattr(chunk, name)
        assert got.dtype == want.dtype and np.array_equal(got, want), name
    # obs[t] = frames[t : t + S] (the Chunk layout): the third observation starts at frame 2.
    assert np.all(chunk.frames[2 : 2 + S][:, 0, 0] == np.arange(20 + 2, 20 + 2 + S))
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted([*ep, "meta"])
        meta = json.loads(npz["meta"].item())
    assert meta == {
        "env": "CarRacing",
        "env_id": "CarRacing-v3",
        "obs_shape": [S, size, size],
        "image_size": size,
        "frame_stack": S,
        "action_repeat": 3,
        "seed": 3,
        "format_version": 1,
        "length": 7,
        "episode_return": pytest.approx(float(ep["reward"].astype(np.float64).sum())),
    }


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))


def _npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    return buffer.getvalue()


FILE_DAMAGE = {
    "truncated to half": lambda p: _truncate(p, 0.5),
    "truncated by a byte": lambda p: p.write_bytes(p.read_bytes()[:-1]),
    "empty": lambda p: p.write_bytes(b""),
    "corrupted byte": _flip_middle_byte,
    "random bytes": lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),
    "a bare .npy": lambda p: p.write_bytes(_npy_bytes()),
}


@pytest.mark.parametrize("damage", FILE_DAMAGE, ids=list(FILE_DAMAGE))
def test_damaged_file_raises_one_line_demo_error(tmp_path: Path, damage: str) -> None:
    path = save(tmp_path / "damaged.npz", episode())
    FILE_DAMAGE[damage](path)
    with pytest.raises(DemoError) as err:
        load_demo(path, "CarRacing", CFG)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert re.search(r"unreadable demonstration file \(.+\)$|not an \.npz archive$", message)


def _mid_episode_end() -> np.ndarray:
    ends = np.zeros(6, bool)
    ends[2] = True
    return ends


CONTENT_DAMAGE = {
    "missing array": ({}, {"reward": None}, "missing arrays reward"),
    "missing meta": ({}, {"meta": None}, "missing arrays meta"),
    "frames float32": ({}, {"frames": episode()["frames"].astype(np.float32)}, "chunk.frames"),
    "action float64": ({}, {"action": episode()["action"].astype(np.float64)}, "chunk.action"),
    "terminated int": ({}, {"terminated": episode()["terminated"].astype(np.int8)}, "terminated"),
    "frames 84 for a 32 config": ({}, {"frames": episode(size=84)["frames"]}, "chunk.frames"),
    "one frame short": ({}, {"frames": episode()["frames"][:-1]}, "chunk.frames"),
    "obs_shape of another config": ({"obs_shape": [S, 84, 84]}, {}, "obs_shape is [4, 84, 84]"),
    "action_repeat": ({"action_repeat": 2}, {}, "action_repeat is 2, expected 3"),
    "action above 1": ({}, {"action": np.full((6, 3), 1.5, np.float32)}, "[-1, 1]"),
    "action NaN": ({}, {"action": np.full((6, 3), np.nan, np.float32)}, "[-1, 1]"),
    "reward inf": ({}, {"reward": np.full(6, np.inf, np.float32)}, "finite"),
    "wrong env": ({"env": "VisualPendulum"}, {}, "env is 'VisualPendulum', expected 'CarRacing'"),
    "format version 2": ({"format_version": 2}, {}, "format_version is 2, expected 1"),
    "format version null": ({"format_version": None}, {}, "format_version is None"),
    "end mid-episode": ({}, {"truncated": _mid_episode_end()}, "only its last transition"),
    "meta not JSON": ({}, {"meta": np.array("{not json")}, "not valid JSON"),
    "meta a list": ({}, {"meta": np.array("[1, 2]")}, "JSON object"),
    "meta bytes": ({}, {"meta": np.array(b"{}")}, "JSON string scalar"),
    "pickled object": ({}, {"meta": np.array([{"env": "CarRacing"}], dtype=object)}, "pickle"),
}


@pytest.mark.parametrize("case", CONTENT_DAMAGE, ids=list(CONTENT_DAMAGE))
def test_invalid_content_raises_one_line_demo_error(tmp_path: Path, case: str) -> None:
    meta_changes, changes, expected = CONTENT_DAMAGE[case]
    path = write_raw(tmp_path / "bad.npz", meta_changes, **changes)
    with pytest.raises(DemoError) as err:
        load_demo(path, "CarRacing", CFG)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert expected in message


def test_unmodified_raw_file_loads(tmp_path: Path) -> None:
    chunk = load_demo(write_raw(tmp_path / "ok.npz"), "CarRacing", CFG)
    assert np.array_equal(chunk.action, episode()["action"])


def test_folders_load_sorted_and_skip_other_files(tmp_path: Path) -> None:
    folder = tmp_path / "demos"
    folder.mkdir()
    for name, seed in [("b.npz", 2), ("a.npz", 1), ("c.npz", 3)]:
        save(folder / name, episode(seed=seed))
    (folder / "notes.txt").write_text("not a demo")
    (folder / ".c.npz.123.tmp").write_bytes(b"left by a crash")
    extra = save(tmp_path / "extra.npz", episode(seed=9))
    chunks = load_demos([str(folder), extra], "CarRacing", CFG)
    assert [int(c.frames[0, 0, 0]) for c in chunks] == [10, 20, 30, 90]


def test_load_demos_rejects_everything_for_one_bad_file(tmp_path: Path) -> None:
    save(tmp_path / "a.npz", episode())
    bad = write_raw(tmp_path / "b.npz", {"env": "VisualPendulum"})
    with pytest.raises(DemoError, match=f"^{re.escape(str(bad))}: env is"):
        load_demos([tmp_path], "CarRacing", CFG)


@pytest.mark.parametrize("make", ["empty folder", "missing path", "no paths"])
def test_load_demos_without_files(tmp_path: Path, make: str) -> None:
    paths = {"empty folder": [tmp_path], "missing path": [tmp_path / "nope"], "no paths": []}
    with pytest.raises(DemoError, match="no demonstration files found|no such"):
        load_demos(paths[make], "CarRacing", CFG)


def test_failed_save_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    target = save(tmp_path / "ep.npz", episode(seed=1))
    before = target.read_bytes()

    def write_half_then_fail(file, **arrays) -> None:
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save(target, episode(seed=2))
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path / "new.npz", episode(seed=3))
    assert [p.name for p in tmp_path.iterdir()] == ["ep.npz"]
    assert target.read_bytes() == before


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("action", np.full((6, 3), -1.25, np.float32), r"\[-1, 1\]"),
        ("frames", np.zeros((6 + S - 1, 32, 32), np.uint8), "chunk.frames"),
        ("reward", np.zeros(6, np.float64), "chunk.reward"),
    ],
)
def test_save_rejects_invalid_episode(tmp_path: Path, field: str, value, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        save(tmp_path / "ep.npz", {**episode(), field: value})
    assert list(tmp_path.iterdir()) == []


def test_save_needs_env_meta(tmp_path: Path) -> None:
    ep = episode()
    args = (ep["frames"], ep["action"], ep["reward"], ep["terminated"], ep["truncated"])
    with pytest.raises(ValueError, match="meta lacks action_repeat, env, frame_stack, obs_shape"):
        save_episode(tmp_path / "ep.npz", *args, {"seed": 1})


RGB = EnvConfig(image_size=32, frame_stack=3, grayscale=False)


def rgb_episode(t: int = 5) -> dict[str, np.ndarray]:
    """An episode of 3-channel frames: channel c of frame i holds 10 * i + c."""
    ep = episode(t)
    values = 10 * np.arange(t + RGB.frame_stack)[:, None] + np.arange(3)
    ep["frames"] = np.broadcast_to(values[..., None, None], (t + 3, 3, 32, 32)).astype(np.uint8)
    return ep


def test_rgb_round_trip_is_exact_and_records_the_channels(tmp_path: Path) -> None:
    ep = rgb_episode()
    path = save(tmp_path / "rgb.npz", ep, RGB)
    chunk = load_demo(path, "CarRacing", RGB)
    for name, want in ep.items():
        got = getattr(chunk, name)
        assert got.dtype == want.dtype and np.array_equal(got, want), name
    assert chunk.frames.shape == (5 + 3, *RGB.frame_shape)
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(npz["meta"].item())
    assert meta["channels"] == 3 and meta["obs_shape"] == [9, 32, 32]
    assert "channels" not in demo_meta("CarRacing", CFG)  # grayscale files are unchanged


GRAY_3 = EnvConfig(image_size=32, frame_stack=3)
GRAY_9 = EnvConfig(image_size=32, frame_stack=9)
RGB_1 = EnvConfig(image_size=32, frame_stack=1, grayscale=False)


@pytest.mark.parametrize(
    ("recorded", "run", "message"),
    [  # each pair has the same obs_shape: only the channels tell them apart
        (RGB, GRAY_9, "3 channels per frame, this run observes 1 (grayscale)"),
        (GRAY_3, RGB_1, "1 channels per frame, this run observes 3 (RGB)"),
    ],
    ids=["rgb-file-gray-run", "gray-file-rgb-run"],
)
def test_a_file_of_other_channels_is_a_clear_error(tmp_path, recorded, run, message) -> None:
    assert recorded.obs_shape == run.obs_shape
    if recorded is RGB:
        ep = rgb_episode()
    else:
        ep = episode(t=6)
        ep["frames"] = ep["frames"][: 6 + GRAY_3.frame_stack]
    path = save(tmp_path / "ep.npz", ep, recorded)
    with pytest.raises(DemoError, match=re.escape(message)):
        load_demo(path, "CarRacing", run)


def test_saving_grayscale_frames_as_rgb_fails(tmp_path: Path) -> None:
    ep = rgb_episode()
    ep["frames"] = ep["frames"][:, 0]
    with pytest.raises(ValueError, match="chunk.frames"):
        save(tmp_path / "ep.npz", ep, RGB)
