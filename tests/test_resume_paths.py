"""A checkpoint never makes a resumed run delete or track files outside its checkpoint folder.

Lightning restores ModelCheckpoint's stored paths on resume and later deletes the "old" files
they name, recursively; ``local://``, ``file://`` and cache chains are not local paths to its
inside-the-folder check, and ``..`` is not resolved by it. Each stored path field, in every form
that maps onto the disk, must be refused; legitimate states are rebuilt from the run folder."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint

from vaelik.errors import CheckpointError
from vaelik.training.checkpointing import (
    ModelCheckpoint,
    check_resumable_states,
    resumable_state,
)

#: the fsspec protocols that reach the local disk, as URLs and as cache chains
DISK_FORMS = [
    "file://{victim}",
    "local://{victim}",
    "FILE://{victim}",
    "simplecache::file://{victim}",
    "filecache::file://{victim}",
    "blockcache::file://{victim}",
    "simplecache::{victim}",
    "dir::{victim}",
]
#: plain paths that name the victim from inside the folder's tree, relative or through a link
RELATIVE_FORMS = [
    "{victim}",
    "{folder}/../../victim",
    "{folder}/link/f",
    "../victim",
    "~/vaelik-victim-never-made",
]


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """``run/checkpoints`` (with ``best.ckpt``, ``last.ckpt`` and a link to the victim) and
    ``victim/`` holding a file, beside it; the working directory is the run folder."""
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "best.ckpt").write_bytes(b"best")
    (folder / "last.ckpt").write_bytes(b"last")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "f").write_text("keep me")
    (folder / "link").symlink_to(victim)
    monkeypatch.chdir(tmp_path / "run")
    return folder, victim


def genuine_state(folder) -> dict:
    """The state Lightning's ModelCheckpoint writes for ``folder`` (monitor max, top 1)."""
    best = str(folder / "best.ckpt")
    return {
        "monitor": "val/elbo",
        "best_model_score": torch.tensor(-90.0),
        "best_model_path": best,
        "current_score": torch.tensor(-91.0),
        "dirpath": str(folder),
        "best_k_models": {best: torch.tensor(-90.0)},
        "kth_best_model_path": best,
        "kth_value": torch.tensor(-90.0),
        "last_model_path": str(folder / "last.ckpt"),
    }


def planted(state: dict, field: str, value: object, keep_dirpath: bool) -> dict:
    """``state`` with ``value`` in path field ``field`` (a key of ``best_k_models`` for that
    field); without its ``dirpath`` unless ``keep_dirpath`` (Lightning then trusts it all)."""
    state = dict(state)
    if field == "best_k_models":
        state["best_k_models"] = {**state["best_k_models"], value: torch.tensor(-95.0)}
    else:
        state[field] = value
    if not keep_dirpath:
        del state["dirpath"]
    return state


PATH_FIELDS = ["best_model_path", "kth_best_model_path", "last_model_path", "best_k_models"]


@pytest.mark.parametrize("keep_dirpath", [True, False], ids=["with-dirpath", "without-dirpath"])
@pytest.mark.parametrize("form", DISK_FORMS + RELATIVE_FORMS)
@pytest.mark.parametrize("field", PATH_FIELDS)
def test_every_path_field_in_every_form_outside_the_folder_is_refused(
    folders, field, form, keep_dirpath
):
    folder, victim = folders
    value = form.format(victim=victim, folder=folder)
    state = planted(genuine_state(folder), field, value, keep_dirpath)
    with pytest.raises(CheckpointError) as error:
        resumable_state(state, str(folder), "x.ckpt")
    message = str(error.value)
    assert f"ModelCheckpoint {field}" in message and repr(value) in message
    assert "checkpoint x.ckpt" in message and "\n" not in message
    assert (victim / "f").read_text() == "keep me"


@pytest.mark.parametrize("form", DISK_FORMS)
def test_a_stored_folder_in_a_disk_form_is_refused(folders, form):
    folder, _ = folders
    state = {**genuine_state(folder), "dirpath": form.format(victim=folder, folder=folder)}
    with pytest.raises(CheckpointError, match="ModelCheckpoint dirpath"):
        resumable_state(state, str(folder), "x.ckpt")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("last_model_path", ["a"]),
        ("best_model_path", b"/x"),
        ("kth_best_model_path", 7),
        ("dirpath", {"a": 1}),
        ("best_model_score", "high"),
        ("kth_value", torch.ones(3)),
        ("current_score", [1.0]),
    ],
)
def test_values_of_the_wrong_type_are_refused_by_their_field(folders, field, value):
    folder, _ = folders
    with pytest.raises(CheckpointError, match=f"ModelCheckpoint {field}"):
        resumable_state({**genuine_state(folder), field: value}, str(folder), "x.ckpt")
    with pytest.raises(CheckpointError, match="not a mapping"):
        resumable_state([genuine_state(folder)], str(folder), "x.ckpt")
    with pytest.raises(CheckpointError, match="callback states of type list"):
        check_resumable_states([1], [], "x.ckpt")


def test_a_state_of_the_same_folder_is_kept_with_resolved_paths(folders):
    folder, _ = folders
    state = genuine_state(folder)
    state["last_model_path"] = f"{folder}/../checkpoints/last.ckpt"  # inside, not normalised
    kept = resumable_state(state, str(folder), "x.ckpt")
    assert kept is not None
    assert kept["best_model_path"] == kept["kth_best_model_path"] == str(folder / "best.ckpt")
    assert kept["last_model_path"] == str(folder / "last.ckpt")
    assert list(kept["best_k_models"]) == [str(folder / "best.ckpt")]
    assert float(kept["best_model_score"]) == -90.0


def test_tracked_files_that_are_gone_are_dropped_with_their_scores(folders):
    folder, _ = folders
    (folder / "best.ckpt").unlink()
    kept = resumable_state(genuine_state(folder), str(folder), "x.ckpt")
    assert kept is not None
    assert kept["best_k_models"] == {}
    assert kept["best_model_path"] == kept["kth_best_model_path"] == ""
    assert kept["best_model_score"] is None and "kth_value" not in kept
    assert kept["last_model_path"] == str(folder / "last.ckpt")


def test_a_copied_run_tracks_its_own_copies_and_a_new_folder_tracks_nothing(folders, tmp_path):
    folder, _ = folders
    copy = tmp_path / "copy" / "checkpoints"
    copy.mkdir(parents=True)
    (copy / "best.ckpt").write_bytes(b"best")
    (copy / "last.ckpt").write_bytes(b"last")
    kept = resumable_state(genuine_state(folder), str(copy), "x.ckpt")
    assert kept is not None and kept["dirpath"] == str(copy)
    assert list(kept["best_k_models"]) == [str(copy / "best.ckpt")]
    assert kept["last_model_path"] == str(copy / "last.ckpt")
    fresh = tmp_path / "fresh" / "checkpoints"
    kept = resumable_state(genuine_state(folder), str(fresh), "x.ckpt")
    assert kept is not None and kept["best_k_models"] == {} and kept["last_model_path"] == ""
    # the checks run before the folder is known too, and then restore nothing
    assert resumable_state(genuine_state(folder), None, "x.ckpt") is None


@pytest.fixture
def trainer(tmp_path):
    return pl.Trainer(
        default_root_dir=tmp_path, logger=False, enable_progress_bar=False, accelerator="cpu"
    )


@pytest.mark.parametrize("form", ["local://{victim}", "{folder}/../../victim", "{folder}/link"])
def test_vaelik_s_callback_deletes_only_its_own_files(folders, trainer, form):
    folder, victim = folders
    value = form.format(victim=victim, folder=folder)
    ModelCheckpoint(dirpath=folder)._remove_checkpoint(trainer, value)
    assert (victim / "f").read_text() == "keep me" and (folder / "link").is_symlink()
    ModelCheckpoint(dirpath=folder)._remove_checkpoint(trainer, str(folder / "best.ckpt"))
    assert not (folder / "best.ckpt").exists()


@pytest.mark.parametrize("form", ["local://{victim}", "{folder}/../../victim"])
def test_the_hazard_is_real_lightning_s_own_callback_deletes_the_folder(folders, trainer, form):
    """What the checks above prevent: Lightning's callback, given such a stored path as its
    previous ``last.ckpt``, deletes the whole folder it names."""
    folder, victim = folders
    value = form.format(victim=victim, folder=folder)
    theirs = LightningModelCheckpoint(dirpath=folder)
    assert theirs._should_remove_checkpoint(trainer, value, str(folder / "last.ckpt"))
    theirs._remove_checkpoint(trainer, value)
    assert not victim.exists()


def test_loading_a_refused_state_into_the_callback_raises_and_restores_nothing(folders):
    folder, victim = folders
    callback = ModelCheckpoint(dirpath=folder, monitor="val/elbo", mode="max")
    state = planted(genuine_state(folder), "last_model_path", f"local://{victim}", False)
    with pytest.raises(CheckpointError, match="ModelCheckpoint last_model_path"):
        callback.load_state_dict(state)
    assert callback.last_model_path == ""
    callback.load_state_dict(genuine_state(folder))
    assert callback.best_model_path == str(folder / "best.ckpt")


@pytest.mark.parametrize("value", ["{folder}/best.ckpt", torch.zeros(3), [1, 2]])
def test_tracked_checkpoints_that_are_not_a_mapping_are_refused(folders, value):
    folder, _ = folders
    if isinstance(value, str):
        value = value.format(folder=folder)
    state = {**genuine_state(folder), "best_k_models": value}
    with pytest.raises(CheckpointError, match="ModelCheckpoint best_k_models"):
        resumable_state(state, str(folder), "x.ckpt")


def test_a_state_without_its_best_score_is_kept_with_none(folders):
    folder, _ = folders
    state = genuine_state(folder)
    del state["best_model_score"]
    kept = resumable_state(state, str(folder), "x.ckpt")
    assert kept is not None and kept["best_model_score"] is None


def test_resuming_with_lightning_s_own_checkpoint_class_is_refused(folders):
    folder, _ = folders
    theirs = LightningModelCheckpoint(dirpath=folder, monitor="val/elbo", mode="max")
    states = {theirs.state_key: genuine_state(folder)}
    with pytest.raises(CheckpointError, match="vaelik.training.checkpointing.ModelCheckpoint"):
        check_resumable_states(states, [theirs], "x.ckpt")
    ours = ModelCheckpoint(dirpath=folder, monitor="val/elbo", mode="max")
    check_resumable_states({ours.state_key: genuine_state(folder)}, [ours], "x.ckpt")
