"""``cen_bayes.CEN``: fits on all of a table, answers in DataFrames, predicts any pairs the same way
whichever interface asks, keeps its parameters to itself, and reloads to the same predictions."""

import numpy as np
import pandas as pd
import pyro
import pytest

from cen_bayes import CEN
from cen_bayes.crowd import CrowdData
from cen_bayes.datasets import load_dataset
from inference.evaluate import evaluate_method
from inference.methods import make_method

FAST = dict(steps=20, draws=4, progress=False)


@pytest.fixture(scope="module")
def table():
    return load_dataset("tiny", seed=0).table


@pytest.fixture(scope="module")
def fitted(table):
    return CEN(K=3, variant="choice", **FAST).fit(table, holdout=0.2)


def query(table: pd.DataFrame) -> pd.DataFrame:
    """Pairs naming known and unknown images, workers and grids, and pairs with no worker or grid."""
    first = table.groupby("grid_id").head(2)
    pairs = pd.DataFrame({"image_i": first.image_id.to_numpy()[0::2], "image_j": first.image_id.to_numpy()[1::2],
                          "worker_id": first.worker_id.to_numpy()[0::2], "grid_id": first.grid_id.to_numpy()[0::2]})
    pairs = pairs.head(12).copy()
    pairs.loc[0, "image_i"] = "an image nobody sorted"
    pairs.loc[1, "worker_id"] = "a new worker"
    pairs.loc[2, "grid_id"] = "a new grid"
    pairs.loc[3, ["worker_id", "grid_id"]] = None
    return pairs


def test_fit_on_all_of_a_table_and_its_dataframes(table):
    cen = CEN(K=3, variant="kind", **FAST).fit(table)
    data = cen.data_
    assert cen.split_.train_hits.all() and not cen.split_.test_hits.any()
    emb = cen.embeddings()
    assert emb.index.name == "image_id" and len(emb) == data.n_images
    assert list(emb.columns) == ["mean_0", "sd_0", "mean_1", "sd_1", "mean_2", "sd_2"]
    assert (emb.filter(like="sd_") > 0).all().all()
    hits = cen.hits()
    assert len(hits) == data.n_hits and set(hits.split) == {"train"}
    p = hits[[f"p_attr_{k}" for k in range(3)] + ["p_overall", "p_noise"]].to_numpy()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    workers = cen.workers()
    assert len(workers) == data.n_workers
    for k in range(3):
        share, low, high = (workers[f"share_{k}{s}"] for s in ("", "_low", "_high"))
        assert ((low <= share + 1e-9) & (share <= high + 1e-9)).all()
    np.testing.assert_allclose(workers[[f"share_{k}" for k in range(3)]].sum(axis=1), 1.0, atol=1e-6)


def test_dataframe_pairs_predict_as_the_fitted_pairs_do(fitted):
    """The same held-out pairs, as codes of the fitted data or as a DataFrame of ids: the same P(same)."""
    data = fitted.data_
    test = data.pairs.subset(fitted.split_.pair_masks(data)[1])
    frame = pd.DataFrame({"image_i": data.images[test.i.numpy()], "image_j": data.images[test.j.numpy()],
                          "worker_id": data.workers[test.worker.numpy()], "grid_id": data.grids[test.grid.numpy()]})
    np.testing.assert_allclose(fitted.predict_proba(frame), fitted.predict_proba(data, test), rtol=0, atol=1e-12)


def test_new_ids_get_probabilities_and_a_missing_image_is_an_error(fitted, table):
    p = fitted.predict_proba(query(table))
    assert p.shape == (12,) and np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    bad = query(table)
    bad.loc[5, "image_j"] = None
    with pytest.raises(ValueError, match="row 5"):
        fitted.predict_proba(bad)
    with pytest.raises(ValueError, match="image_j"):
        fitted.predict_proba(bad.drop(columns="image_j"))


def test_two_models_coexist_and_leave_the_global_store_alone(table):
    pyro.clear_param_store()
    a = CEN(K=3, variant="choice", **FAST).fit(table, holdout=0.2)
    before = a.predict_proba(query(table))
    b = CEN(K=2, variant="kind", seed=1, **FAST).fit(table, holdout=0.2)
    assert len(pyro.get_param_store().keys()) == 0  # each fit kept its parameters in its own scope
    a._summarise()  # draws afresh from a's guide
    np.testing.assert_array_equal(a.predict_proba(query(table)), before)
    assert b.predict_proba(query(table)).shape == before.shape


def test_a_saved_model_reloads_to_the_same_predictions(fitted, table, tmp_path):
    fitted.save(tmp_path / "fit")
    loaded = CEN.load(tmp_path / "fit")
    assert (loaded.variant_, loaded.K_) == (fitted.variant_, fitted.K_)
    np.testing.assert_array_equal(loaded.predict_proba(query(table)), fitted.predict_proba(query(table)))
    pd.testing.assert_frame_equal(loaded.embeddings(), fitted.embeddings())
    pd.testing.assert_frame_equal(loaded.hits(), fitted.hits())
    # the ELBO trace travels too, so a loaded fit can still be diagnosed
    assert loaded.fit_result_.losses == fitted.fit_result_.losses
    assert loaded.diagnostics(psis_draws=0) == fitted.diagnostics(psis_draws=0)


def test_cen_is_a_method_like_the_baselines(table):
    data = CrowdData.from_source(table)
    from cen_bayes.splits import split_by_grid
    split = split_by_grid(data, 0.2, seed=0)
    method = make_method("cen", data, K=3, variant="choice", **FAST)
    assert isinstance(method, CEN)
    scored = evaluate_method(method, data, split)
    assert scored.metrics["method"] == "cen" and 0 <= scored.metrics["heldout"]["accuracy"] <= 1
    assert scored.embedding.shape == (data.n_images, 3) and scored.p_attr.shape[1] == 3 + 1  # K dims, noise


def test_an_unfitted_model_says_so():
    with pytest.raises(RuntimeError, match="not fitted"):
        CEN().embeddings()
    with pytest.raises(ValueError, match="give --variant and --K"):
        CEN(map_mode=True)
