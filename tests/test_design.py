"""Choosing the next grids (``inference.design``, issue 22): the CLI's output and errors, seeds, what each
strategy prefers, the pair predictive of new grids against the model's own, platform exports that import
back, and the collection app offering the most informative grid."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

from cen_bayes import CEN
from cen_bayes.app.__main__ import main as app_main
from cen_bayes.app.choose import MostInformative
from cen_bayes.app.grids import load_grids
from cen_bayes.app.store import AnswerStore
from cen_bayes.app.web import create_app
from cen_bayes.crowd import CrowdData
from cen_bayes.datasets import load_dataset
from cen_bayes.importers import image_set_grid_id, load_table
from cen_bayes.splits import Split
from inference import design as design_module
from inference.design import DesignError, design, grid_information, information_gain, main, write_design
from inference.predict import grid_pairs, new_grid_probability_draws
from inference.svi import main as svi_main

NEW_IMAGES = [f"new{k:02d}" for k in range(12)]  # shown only in a held-out grid: the fit knows nothing of them


@pytest.fixture(scope="module")
def tiny():
    return load_dataset("tiny", seed=0)


@pytest.fixture(scope="module")
def fitted(tiny):
    """A choice fit of tiny whose table also holds one held-out grid of 12 images no training grid showed."""
    unseen = pd.DataFrame({"worker_id": "w000", "grid_id": "unseen", "image_id": NEW_IMAGES,
                           "group": list("ABC") * 4})
    data = CrowdData.from_source(pd.concat([tiny.table, unseen], ignore_index=True))
    held = (data.hits.grid_id == "unseen").to_numpy()
    return CEN(K=3, variant="choice", steps=80, draws=24, progress=False).fit(data, Split(~held, held))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder of the CLI, as a user has it."""
    out = tmp_path_factory.mktemp("run") / "tiny"
    svi_main(["--dataset", "tiny", "--variant", "choice", "--K", "3", "--steps", "20", "--draws", "8",
              "--psis-draws", "0", "--no-progress", "--no-figures", "--out", str(out)])
    return out


def cli(capsys, *argv) -> str:
    main(list(map(str, argv)))
    return capsys.readouterr().out


def one_line_error(capsys, *argv) -> str:
    """Run the CLI expecting a refusal: exit status 1, one line, no traceback."""
    with pytest.raises(SystemExit) as stop:
        main(list(map(str, argv)))
    code = stop.value.code  # the message itself (SystemExit(message): status 1), or the parser's status
    if not isinstance(code, str):
        assert code == 1
    message = (code if isinstance(code, str) else capsys.readouterr().err).strip()
    assert message.startswith("error: ") and "\n" not in message and "Traceback" not in message, message
    return message


def test_cli_saves_the_model_and_designs_from_the_run_folder(run_dir, tmp_path, capsys):
    assert CEN.is_saved(run_dir / "model")
    out = tmp_path / "next.csv"
    printed = cli(capsys, "--run", run_dir, "--n", 6, "--grid-size", 10, "--candidates", 300, "--out", out)
    assert "chose 6 grids of 10 images by info for a new worker from the crowd from 300 candidates" in printed
    table = pd.read_csv(out, dtype=str)
    assert list(table.columns) == ["grid_id", "image_id"] and len(table) == 60
    grids = table.groupby("grid_id", sort=False).image_id.apply(list)
    assert len(grids) == 6 and all(len(set(images)) == 10 for images in grids)
    assert all(grid == image_set_grid_id(images) for grid, images in grids.items())
    assert set(table.image_id) <= set(load_dataset("tiny", seed=0).table.image_id)
    # the same seed gives the same file, another seed other grids; a CEN.save folder works as well
    again = tmp_path / "again.csv"
    cli(capsys, "--run", run_dir, "--n", 6, "--grid-size", 10, "--candidates", 300, "--out", again)
    assert again.read_text() == out.read_text()
    other = tmp_path / "other.csv"
    cli(capsys, "--run", run_dir / "model", "--n", 6, "--grid-size", 10, "--candidates", 300, "--seed", 1,
        "--out", other)
    assert set(pd.read_csv(other).grid_id) != set(grids.index)


def test_random_grids_are_seeded_and_distinct(fitted):
    first = design(fitted, 8, "random", grid_size=12, seed=3)
    assert np.array_equal(first.grids, design(fitted, 8, "random", grid_size=12, seed=3).grids)
    assert not np.array_equal(first.grids, design(fitted, 8, "random", grid_size=12, seed=4).grids)
    assert all(len(set(row)) == 12 for row in first.grids) and np.isnan(first.scores).all()


def test_info_ranks_a_grid_of_unknown_images_above_one_the_model_is_sure_of(fitted):
    """Twelve images the fit never trained on (each draw gives them other embeddings) against the twelve
    trained images whose embeddings it is surest of: the first grid is worth several times the second."""
    codes = pd.Index(fitted.data_.images.astype(str))
    unknown = codes.get_indexer(NEW_IMAGES)
    sure = np.argsort(fitted.embedding_sd_.sum(1))[:12]
    assert not set(sure) & set(unknown)
    gain = information_gain(fitted, torch.as_tensor(np.stack([unknown, sure])))
    assert gain[1] >= 0 and gain[0] > 3 * gain[1], gain
    # the chosen grids are drawn to the unknown images, but spread over more images than the top candidates
    chosen = design(fitted, 6, "info", grid_size=12, candidates=400, seed=0)
    assert np.mean(np.isin(chosen.grids, NEW_IMAGES)) > 2 * len(NEW_IMAGES) / fitted.data_.n_images
    assert chosen.scores[0] == chosen.candidate_scores.max()
    top = np.argsort(-chosen.candidate_scores)[:6]
    candidates = design_module.uniform_grids(fitted.data_.n_images, 400, 12, torch.Generator().manual_seed(0))
    assert len(set(chosen.grids.ravel())) > len(set(candidates[top].numpy().ravel()))


def test_info_for_a_trained_worker_differs_from_a_new_one_and_reproduces(fitted):
    worker = str(fitted.data_.workers[0])
    mine = design(fitted, 3, "info", grid_size=12, candidates=200, seed=5, worker=worker)
    again = design(fitted, 3, "info", grid_size=12, candidates=200, seed=5, worker=worker)
    crowd = design(fitted, 3, "info", grid_size=12, candidates=200, seed=5)
    assert np.array_equal(mine.grids, again.grids) and np.array_equal(mine.scores, again.scores)
    assert not np.allclose(mine.candidate_scores, crowd.candidate_scores)


def test_attribute_grids_spread_their_dim_and_keep_the_others_alike(fitted):
    embedding = fitted.embedding_
    images = pd.Index(fitted.data_.images.astype(str))
    for k in range(fitted.K_):
        chosen = design(fitted, 5, "attribute", attribute=k, grid_size=12, candidates=2000, seed=0)
        sd = embedding[images.get_indexer(chosen.grids.ravel().astype(str))].reshape(5, 12, -1).std(1)
        others = np.delete(sd, k, axis=1)
        random = design(fitted, 50, "random", grid_size=12, seed=0)
        random_sd = embedding[images.get_indexer(random.grids.ravel().astype(str))].reshape(50, 12, -1).std(1)
        assert (sd[:, k] > others.max(1)).all() and sd[:, k].mean() > 1.3 * others.max(1).mean(), (k, sd)
        assert sd[:, k].mean() > random_sd[:, k].mean() and others.mean() < 0.7 * np.delete(random_sd, k, 1).mean()


@pytest.mark.parametrize("variant", ["choice", "kind"])
def test_new_grid_probabilities_are_the_models_own_on_its_own_grids(tiny, variant):
    """A fitted grid scored as a new grid, for a trained worker: the same P(same) per draw as the model's
    pair predictive for that worker on that grid (the new grid's context comes from the same network)."""
    cen = CEN(K=3, variant=variant, steps=10, draws=3, progress=False).fit(tiny.table)
    data, model = cen.data_, cen.model_
    grid = 0
    codes = data.grid_image[data.grid_ptr[grid]: data.grid_ptr[grid + 1]]
    first, second = grid_pairs(len(codes))
    worker = int(data.hits.worker[0])
    got = new_grid_probability_draws(model, cen.draws_, codes.unsqueeze(0), worker=worker)[:, 0]
    pairs = data.pairs.subset(slice(0, len(first)))  # any Pairs; its image and id columns are replaced
    pairs.i, pairs.j = codes[first], codes[second]
    pairs.worker = torch.full_like(pairs.i, worker)
    pairs.grid = torch.full_like(pairs.i, grid)
    local = torch.zeros_like(pairs.i)
    for row, draw in enumerate(cen.draws_):
        want = model.pair_same_probability(draw.x, draw.a_w, draw.a_g, draw.beta, draw.rho, draw.eps, pairs, local,
                                           pairs.worker[:1], pairs.grid[:1])
        torch.testing.assert_close(got[row], want, rtol=1e-5, atol=1e-6)


def test_bad_requests_are_one_line_errors(run_dir, fitted, tiny, tmp_path, capsys):
    assert "no such folder" in one_line_error(capsys, "--run", tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "not a fit" in one_line_error(capsys, "--run", empty)
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    (baseline / "run.json").write_text(json.dumps({"method": "bcc"}))
    assert "--method bcc" in one_line_error(capsys, "--run", baseline)
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "run.json").write_text(json.dumps({"method": "cen"}))
    assert "model/ is missing" in one_line_error(capsys, "--run", stopped)
    assert "dims 0 to 2" in one_line_error(capsys, "--run", run_dir, "--strategy", "attribute", "--attribute", 3)
    assert "goes with --strategy attribute" in one_line_error(capsys, "--run", run_dir, "--attribute", 1)
    assert "at least one grid" in one_line_error(capsys, "--run", run_dir, "--n", 0)
    assert "more than --candidates 5" in one_line_error(capsys, "--run", run_dir, "--n", 6, "--candidates", 5)
    assert "--n" in one_line_error(capsys, "--run", run_dir, "--n", "many")
    assert "no such worker" in one_line_error(capsys, "--run", run_dir, "--worker", "nobody")
    assert "--grid-size 1" in one_line_error(capsys, "--run", run_dir, "--grid-size", 1)
    # a worker seen only in held-out grids taught the fit nothing
    with pytest.raises(DesignError, match="no training HIT"):
        design_module.worker_code(_held_out_worker_fit(tiny), "held-out worker")
    with pytest.raises(DesignError, match="only 1 distinct grids"):
        design(fitted, 2, "random", grid_size=fitted.data_.n_images)
    point = CEN(K=2, variant="mixture", map_mode=True, steps=5, progress=False).fit(tiny.table)
    with pytest.raises(DesignError, match="MAP fit"):
        design(point, 2, "info", grid_size=12, candidates=50)
    assert len(design(point, 2, "attribute", attribute=0, grid_size=12, candidates=50).grids) == 2


def _held_out_worker_fit(tiny) -> CEN:
    extra = tiny.table[tiny.table.grid_id == tiny.table.grid_id.iloc[0]].assign(worker_id="held-out worker")
    data = CrowdData.from_source(pd.concat([tiny.table, extra], ignore_index=True))
    held = (data.hits.worker_id == "held-out worker").to_numpy()
    return CEN(K=2, variant="choice", steps=3, draws=2, progress=False).fit(data, Split(~held, held))


def test_platform_task_files_import_back_as_the_designed_grids(fitted, tmp_path):
    """design -> task file -> the platform's answers (made by hand, as each platform exports them) ->
    ``load_table`` -> the designed grids' images; Toloka without task ids even gives back their grid ids."""
    chosen = design(fitted, 3, "random", grid_size=12, seed=0)
    designed = {grid: set(images) for grid, images in zip(chosen.grid_ids, chosen.grids)}

    tasks = write_design(chosen, tmp_path / "tasks.tsv", "toloka")
    task_rows = tasks.read_text().splitlines()
    assert task_rows[0] == "INPUT:images" and len(task_rows) == 4
    lines = ["ASSIGNMENT:worker_id\tASSIGNMENT:assignment_id\tINPUT:images\tOUTPUT:result"]
    for k, images in enumerate(task_rows[1:]):
        groups = json.dumps(["a" if n % 2 else "b" for n in range(len(json.loads(images)))])
        lines += [f"ann\tA{k}\t{images}\t{groups}", f"bob\tB{k}\t{images}\t{groups}"]
    (tmp_path / "assignments.tsv").write_text("\n".join(lines) + "\n")
    table = load_table(tmp_path / "assignments.tsv", "toloka").table
    assert table.groupby("grid_id").image_id.apply(set).to_dict() == designed
    assert set(table.worker_id) == {"ann", "bob"} and len(table) == 2 * 3 * 12

    batch = write_design(chosen, tmp_path / "batch.csv", "mturk")
    inputs = pd.read_csv(batch, dtype=str)
    assert list(inputs.columns) == ["images"] and len(inputs) == 3
    results = pd.DataFrame({"HITId": [f"H{k}" for k in range(3)], "WorkerId": "W1", "AssignmentId": ["A", "B", "C"],
                            "AssignmentStatus": "Submitted", "Input.images": inputs["images"],
                            "Answer.groups": [json.dumps({i: str(n % 3) for n, i in enumerate(json.loads(cell))})
                                              for cell in inputs["images"]]})
    results.to_csv(tmp_path / "results.csv", index=False)
    table = load_table(tmp_path / "results.csv", "mturk").table
    assert sorted(map(frozenset, table.groupby("grid_id").image_id.apply(set))) == \
        sorted(map(frozenset, designed.values()))


def test_the_app_offers_the_most_informative_unanswered_grid(fitted, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    sure = [str(i) for i in np.asarray(fitted.data_.images)[np.argsort(fitted.embedding_sd_.sum(1))[:12]]]
    for image in sure + NEW_IMAGES + ["never-fitted"]:
        (images / f"{image}.png").write_bytes(b"png")
    rows = [("sure", i) for i in sure] + [("unknown", i) for i in NEW_IMAGES] + \
        [("mixed", i) for i in sure[:6] + ["never-fitted"]]
    pd.DataFrame(rows, columns=["grid_id", "image_id"]).to_csv(tmp_path / "grids.csv", index=False)
    grids = load_grids(tmp_path / "grids.csv", images)
    chooser = MostInformative(fitted, grids)
    crowd = chooser.scores("someone new")
    assert crowd["unknown"] > crowd["sure"] and set(crowd) == {"sure", "unknown", "mixed"}
    assert crowd == pytest.approx(grid_information(fitted, grids.images))
    store = AnswerStore(tmp_path / "crowd.sqlite")
    with TestClient(create_app(grids, store, chooser)) as client:
        def next_for(worker):
            return client.get("/api/next", params={"worker_id": worker}).json()["grid_id"]

        assert next_for("someone new") == "unknown"
        answer = {"worker_id": "ann", "grid_id": "unknown", "groups": {i: "1" for i in NEW_IMAGES}}
        assert client.post("/api/answer", json=answer).status_code == 200
        assert next_for("ann") != "unknown"  # never a grid they answered
        trained = str(fitted.data_.workers[1])
        assert next_for(trained) in grids.images
        assert len(chooser._scores) == 2  # a trained worker's own scores, computed once and kept
        next_for(trained)
        assert len(chooser._scores) == 2
    store.close()


def test_app_serve_with_a_bad_run_is_one_line(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a", "b"):
        (images / f"{name}.png").write_bytes(b"png")
    (tmp_path / "grids.csv").write_text("grid_id,image_id\ng,a\ng,b\n")
    with pytest.raises(SystemExit) as stop:
        app_main(["serve", "--grids", str(tmp_path / "grids.csv"), "--images", str(images), "--db",
                  str(tmp_path / "db.sqlite"), "--port", "0", "--run", str(tmp_path / "nowhere")])
    assert str(stop.value.code).startswith("error: --run") and "no such folder" in str(stop.value.code)
