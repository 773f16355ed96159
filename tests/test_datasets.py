"""Simulated datasets: the paper's sizes, the data contract, and ground truth that agrees with the table."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from cen_bayes.annotations import read_annotations
from cen_bayes.datasets import (DATASETS, NOISE_KINDS, DatasetSpec, SimulatedDataset, answer_grids, load_dataset,
                                simulate)

# dataset -> (images, workers, grids, pairs, noise rate in the paper; RETINA's is ours)
PAPER = {
    "celeba": (300, 94, 620, 171_120, 0.191),
    "retina": (300, 62, 620, 171_120, 0.20),
    "birds": (1000, 252, 3000, 828_000, 0.256),
}


@pytest.fixture(scope="module")
def sims():
    return {name: load_dataset(name, seed=0) for name in ["tiny", *PAPER]}


def hit_sizes(table: pd.DataFrame) -> np.ndarray:
    return table.groupby(["worker_id", "grid_id"]).size().to_numpy()


def partition_matches(groups: pd.Series, truth: pd.Series) -> bool:
    """True when the grouping and the truth labels split the images the same way."""
    both = pd.DataFrame({"g": groups.to_numpy(), "t": truth.to_numpy()})
    n = len(both.drop_duplicates())
    return n == both.g.nunique() == both.t.nunique()


@pytest.mark.parametrize("name", list(PAPER))
def test_paper_sizes_and_noise(sims, name):
    n_images, n_workers, n_grids, n_pairs, noise = PAPER[name]
    sim = sims[name]
    t = sim.table
    assert list(t.columns) == ["worker_id", "grid_id", "image_id", "group"]
    assert (t.image_id.nunique(), t.worker_id.nunique(), t.grid_id.nunique()) == (n_images, n_workers, n_grids)
    assert len(t) == n_grids * 24
    s = hit_sizes(t)
    assert (s == 24).all()
    assert int((s * (s - 1) // 2).sum()) == n_pairs == sim.n_pairs
    realised = (sim.hits.noise != "none").mean()
    assert abs(realised - noise) < 0.04
    assert abs(realised - sim.spec.noise_rate) < 0.01  # noisy HITs are drawn as an exact count
    assert set(sim.hits.noise) == {"none", "off_list", "one_group", "random"}
    # workers each do several HITs, skewed, never fewer than the minimum
    per_worker = t.groupby("worker_id").grid_id.nunique()
    assert per_worker.min() >= sim.spec.min_hits_per_worker and per_worker.max() > per_worker.median()


def test_tiny_is_small_and_clean(sims):
    sim = sims["tiny"]
    assert sim.table.image_id.nunique() <= 60 and len(sim.hits) <= 150 and len(sim.attributes) == 3
    assert (sim.hits.noise != "none").mean() <= 0.06
    assert (hit_sizes(sim.table) == 12).all()


def test_same_seed_same_table_other_seed_differs():
    a, b, c = (load_dataset("celeba", seed=s) for s in (3, 3, 4))
    pd.testing.assert_frame_equal(a.table, b.table)
    pd.testing.assert_frame_equal(a.hits, b.hits)
    assert not a.table.equals(c.table)


@pytest.mark.parametrize("name", ["tiny", *PAPER])
def test_hits_are_valid(sims, name):
    sim = sims[name]
    t = sim.table
    assert not t.duplicated(["worker_id", "grid_id", "image_id"]).any()
    groups = t.groupby(["worker_id", "grid_id"]).group.nunique()
    assert groups.max() <= 10
    # the hits table has one row per HIT of the table, and its n_groups is the table's
    hits = sim.hits.set_index(["worker_id", "grid_id"])
    assert hits.index.is_unique and len(hits) == len(groups)
    assert (hits.n_groups.loc[groups.index].to_numpy() == groups.to_numpy()).all()
    assert (hits.loc[hits.noise == "one_group", "n_groups"] == 1).all()
    assert hits.loc[hits.noise.isin(["one_group", "random"]), "attribute"].isna().all()
    assert hits.loc[hits.noise == "none", "attribute"].isin(sim.attributes).all()
    assert hits.loc[hits.noise == "off_list", "attribute"].isin(sim.off_list).all()
    assert (hits.loc[hits.granularity == "coarse", "n_groups"] <= 2).all()
    assert set(hits.granularity) <= {"fine", "coarse"}


@pytest.mark.parametrize("name", ["tiny", *PAPER])
def test_ground_truth_tables(sims, name):
    sim = sims[name]
    bias = sim.worker_bias
    assert list(bias.columns) == [*sim.attributes, "type"]
    assert np.allclose(bias[sim.attributes].sum(axis=1), 1.0)
    assert set(bias.type) == {"biased", "context"}
    assert set(bias.index) == set(sim.table.worker_id)
    assert set(sim.image_attributes.index) == set(sim.table.image_id)
    for attr in sim.attributes + sim.off_list:
        levels = {**sim.spec.attribute_levels, **sim.spec.off_list_levels}[attr]
        assert sim.image_attributes[attr].between(0, levels - 1).all()
    assert set(sim.grids.index) == set(sim.table.grid_id)
    assert sim.grids[sim.attributes].stack().between(0, 1).all()


def test_groups_follow_the_attribute_used():
    """Without slips, every clean or off-list HIT splits its images exactly by the recorded attribute."""
    sim = load_dataset("celeba", seed=1, slip_rate=0.0)
    levels = sim.image_attributes
    hits = sim.hits.set_index(["worker_id", "grid_id"])
    checked = {"fine": 0, "coarse": 0, "off_list": 0}
    for (w, g), rows in sim.table.groupby(["worker_id", "grid_id"]):
        hit = hits.loc[(w, g)]
        if hit.noise in ("one_group", "random"):
            continue
        truth = levels.loc[rows.image_id, hit.attribute]
        if hit.granularity == "coarse":
            truth = truth > 0
        assert partition_matches(rows.group, truth), (w, g, hit.attribute)
        checked["off_list" if hit.noise == "off_list" else hit.granularity] += 1
    assert min(checked.values()) > 20


def test_new_grids_are_answered_by_the_simulated_crowd():
    """``answer_grids``: given grids, answered by the simulation's workers as its own HITs were (without
    slips, a clean HIT splits its images by the recorded attribute), seeded, with the truth kept."""
    sim = load_dataset("celeba", seed=1, slip_rate=0.0)
    rng = np.random.default_rng(0)
    grids = np.array([rng.choice(sim.image_attributes.index.to_numpy(), 24, replace=False) for _ in range(60)])
    table, truth = answer_grids(sim, grids, seed=3)
    again, _ = answer_grids(sim, grids, seed=3)
    assert table.equals(again) and not table.equals(answer_grids(sim, grids, seed=4)[0])
    assert len(read_annotations(table)) == 60 * 24 and list(truth.grid_id) == [f"new{g:04d}" for g in range(60)]
    assert set(table.worker_id) <= set(sim.hits.worker_id) and set(truth.noise) <= {"none", *NOISE_KINDS}
    assert 0.0 < (truth.noise != "none").mean() < 0.45  # the crowd's noise rate (19 %), HIT by HIT
    rows = table.groupby("grid_id", sort=False)
    for hit in truth[truth.noise == "none"].itertuples():
        images = rows.get_group(hit.grid_id)
        levels = sim.image_attributes.loc[images.image_id, hit.attribute]
        assert partition_matches(images.group, levels > 0 if hit.granularity == "coarse" else levels)
    with pytest.raises(ValueError, match="not in celeba"):
        answer_grids(sim, np.array([["img0000", "no such image"]]))


def test_mixed_hits_cross_two_attributes(sims):
    sim = sims["birds"]
    hits = sim.hits.set_index(["worker_id", "grid_id"])
    mixed = hits[hits.attribute2.notna()]
    assert 0.05 < len(mixed) / len(hits) < 0.3
    assert (mixed.attribute != mixed.attribute2).all() and (mixed.noise == "none").all()


def test_context_matters(sims):
    """Context workers use the grid's most salient attribute far more often than chance."""
    for name in PAPER:  # (tiny has only four context workers: too few to test on)
        sim = sims[name]
        h = sim.hits[sim.hits.noise == "none"]
        kind = sim.worker_bias.type.loc[h.worker_id].to_numpy()
        most_salient = sim.grids[sim.attributes].idxmax(axis=1).loc[h.grid_id].to_numpy()
        used = h.attribute.to_numpy()
        chance = 1 / len(sim.attributes)
        assert (used == most_salient)[kind == "context"].mean() > chance + 0.15, name
        # on focused grids context workers mostly follow the focus
        focus = sim.grids.focus.loc[h.grid_id].to_numpy()
        on_focused = (kind == "context") & pd.notna(focus)
        assert (used == focus)[on_focused].mean() > 0.6, name


def test_no_context_removes_the_effect():
    sim = load_dataset("celeba", seed=0, context_strength=0.0, biased_share=0.0)
    h = sim.hits[sim.hits.noise == "none"]
    most_salient = sim.grids[sim.attributes].idxmax(axis=1).loc[h.grid_id].to_numpy()
    assert (h.attribute.to_numpy() == most_salient).mean() < 0.25 + 0.1


def test_biased_workers_stick_to_their_favourite(sims):
    for name in ["celeba", "retina"]:
        sim = sims[name]
        h = sim.hits[sim.hits.noise == "none"]
        bias = sim.worker_bias.loc[h.worker_id]
        favourite = bias[sim.attributes].idxmax(axis=1).to_numpy()
        biased = (bias.type == "biased").to_numpy()
        assert (h.attribute.to_numpy() == favourite)[biased].mean() > 0.65, name
    # RETINA's workers fixate more than CELEBA's (paper section 4.5)
    share = {n: (sims[n].worker_bias.type == "biased").mean() for n in ["celeba", "retina"]}
    assert share["retina"] > share["celeba"]


def test_birds_species_are_attribute_combinations(sims):
    sim = sims["birds"]
    ia = sim.image_attributes
    assert ia.species.nunique() == 16
    typical = ia.groupby("species")[sim.attributes].agg(lambda s: s.mode().iloc[0])
    assert len(typical.drop_duplicates()) == 16  # every species is a distinct combination
    atypical = (ia[sim.attributes].to_numpy() != typical.loc[ia.species].to_numpy()).any(axis=1).mean()
    assert atypical < 0.1


def test_retina_optic_disc_and_vessels_correlate(sims):
    ia = sims["retina"].image_attributes
    assert np.corrcoef(ia.optic_disc, ia.blood_vessels)[0, 1] > 0.4


def test_to_csv_round_trips(sims, tmp_path):
    sim = sims["tiny"]
    path = tmp_path / "tiny.csv"
    sim.to_csv(path)
    back = pd.read_csv(path)
    pd.testing.assert_frame_equal(back, sim.table, check_dtype=False)
    assert back.astype(str).equals(sim.table.astype(str))


def test_load_dataset_names_and_overrides():
    with pytest.raises(ValueError) as err:
        load_dataset("imagenet")
    for name in ("birds", "celeba", "retina", "tiny"):
        assert name in str(err.value)
    sim = load_dataset("celeba", n_grids=30)
    assert sim.table.grid_id.nunique() == 30 and len(sim.hits) == 30 and len(sim.table) == 30 * 24
    assert set(sim.table.worker_id) <= set(sim.worker_bias.index)  # fewer HITs than workers: some idle
    small = load_dataset("tiny", n_grids=30, seed=1)
    assert small.table.grid_id.nunique() == 30 and small.table.worker_id.nunique() == 10
    assert DATASETS["celeba"].n_grids == 620  # the registry is untouched
    with pytest.raises(TypeError, match="n_grid"):
        load_dataset("celeba", n_grid=30)


def test_several_workers_per_grid():
    sim = simulate(dataclasses.replace(DATASETS["tiny"], hits_per_grid=3), seed=2)
    per_grid = sim.hits.groupby("grid_id").worker_id.nunique()
    assert (per_grid == 3).all() and len(sim.hits) == 3 * 120
    assert not sim.hits.duplicated(["worker_id", "grid_id"]).any()


def test_bad_spec_is_rejected():
    with pytest.raises(ValueError, match="levels"):
        dataclasses.replace(DATASETS["tiny"], attribute_levels={"shape": 12, "color": 3})
    with pytest.raises(ValueError, match="grid_size"):
        dataclasses.replace(DATASETS["tiny"], grid_size=100)
    with pytest.raises(ValueError, match="level_probs"):
        dataclasses.replace(DATASETS["tiny"], level_probs={"size": (0.5, 0.6)})


def test_repr_is_short(sims):
    text = repr(sims["celeba"])
    assert "171,120 pairs" in text and len(text) < 300
    assert isinstance(sims["celeba"], SimulatedDataset) and isinstance(sims["celeba"].spec, DatasetSpec)


def test_table_feeds_the_pair_expansion(sims):
    from cen_bayes.crowd import CrowdData

    sim = sims["tiny"]
    data = CrowdData.from_source(sim.table, name="simulated tiny")
    assert len(data.pairs) == sim.n_pairs and data.n_hits == len(sim.hits)


# --- the registered paper datasets never change; the category-sorting dataset ------------------

# sha256 of each table's CSV at seed 0, made before the simulator gained categories and its
# per-HIT part became ``answer_hits``: a refactor must not move a single label.
TABLE_SHA256 = {"celeba": "9e66dfa7ef0e1f57", "retina": "a621944fc6f2be61", "birds": "e4bc5ff2bfb7f004",
                "tiny": "58f3fe714eb0ce4e"}


@pytest.mark.parametrize("name", list(TABLE_SHA256))
def test_registered_tables_are_unchanged(sims, name):
    import hashlib

    digest = hashlib.sha256(sims[name].table.to_csv(index=False).encode()).hexdigest()[:16]
    assert digest == TABLE_SHA256[name]
    assert "merged" not in sims[name].hits and sims[name].categories is None


@pytest.fixture(scope="module")
def cats():
    return load_dataset("categories", seed=0)


def test_categories_size_mix_and_reproducibility(cats):
    sim, spec = cats, cats.spec
    assert (sim.table.image_id.nunique(), sim.table.grid_id.nunique()) == (700, 250)
    assert len(sim.hits) == 250 * 4 and (hit_sizes(sim.table) == 30).all()
    assert (sim.hits.groupby("grid_id").worker_id.nunique() == 4).all()
    per_worker = sim.table.groupby("worker_id").grid_id.nunique()
    assert (per_worker == 1).sum() >= 20 and per_worker.max() >= 20  # one-off workers and heavy ones
    clean = sim.hits[sim.hits.noise == "none"]
    share = (clean.attribute == "category").mean()
    assert 0.55 < share < 0.8  # mostly sorting by kind
    assert set(clean.attribute) - {"category"} <= set(sim.attributes) and clean.attribute.nunique() >= 4
    assert set(sim.hits.noise) == {"none", "off_list", "one_group", "random"}
    assert set(clean[clean.attribute == "category"].granularity) == {"leaf", "merged", "super"}
    assert set(clean[clean.attribute != "category"].granularity) <= {"fine", "coarse"}
    assert sim.hits.merged.notna().sum() == (sim.hits.granularity == "merged").sum()
    assert sim.hits.n_groups.max() <= spec.max_groups
    assert list(sim.propensities.columns) == ["noise", "coarse", "category", "merge"]
    again, other = load_dataset("categories", seed=0), load_dataset("categories", seed=1)
    pd.testing.assert_frame_equal(again.table, sim.table)
    pd.testing.assert_frame_equal(again.hits, sim.hits)
    assert not other.table.equals(sim.table)


def test_categories_form_a_hierarchy(cats):
    sim, tree = cats, cats.categories
    assert len(tree) == 20 and tree.super_category.nunique() == 5
    assert (tree.groupby("super_category").size() == 4).all()
    assert len(tree[sim.attributes].drop_duplicates()) == 20  # every leaf a distinct combination
    # a super-category fixes the super attributes; its leaves differ only in the others
    top = list(sim.spec.super_attributes)
    assert (tree.groupby("super_category")[top].nunique() == 1).all().all()
    assert len(tree[top].drop_duplicates()) == 5
    # near twins: same super-category, differing in the last listed attribute only
    twins = tree[tree.twin >= 0]
    assert len(twins) == 20
    partner = tree.loc[twins.twin]
    assert (partner.twin.to_numpy() == twins.index).all()
    assert (partner.super_category.to_numpy() == twins.super_category.to_numpy()).all()
    differs = partner[sim.attributes].to_numpy() != twins[sim.attributes].to_numpy()
    assert (differs.sum(axis=1) == 1).all() and differs[:, -1].all()
    ia = sim.image_attributes
    assert (ia.super_category == tree.super_category.loc[ia.category].to_numpy()).all()
    assert (ia.groupby("category").size() == 35).all()
    # images look like their category: mostly on its prototype's levels
    atypical = (ia[sim.attributes].to_numpy() != tree.loc[ia.category, sim.attributes].to_numpy()).any(axis=1)
    assert atypical.mean() < 0.25
    # random grids show few kinds; leaves of one super-category are nearer in latent space than others
    kinds = sim.table.merge(ia, left_on="image_id", right_index=True).groupby("grid_id").category.nunique()
    assert kinds.median() <= 8 and kinds.max() <= sim.spec.max_groups
    z = sim.latent[sim.attributes].groupby(ia.category).mean().to_numpy()
    dist = np.linalg.norm(z[:, None] - z[None], axis=2)
    same_super = tree.super_category.to_numpy()[:, None] == tree.super_category.to_numpy()[None]
    assert dist[same_super & (dist > 0)].mean() < dist[~same_super].mean()


def test_category_hits_group_by_merged_categories():
    """Without slips, a category HIT's groups are exactly its (lumped) kinds."""
    sim = load_dataset("categories", seed=2, slip_rate=0.0, n_grids=80)
    ia, tree = sim.image_attributes, sim.categories
    hits = sim.hits.set_index(["worker_id", "grid_id"])
    checked = {"leaf": 0, "merged": 0, "super": 0}
    for (w, g), rows in sim.table.groupby(["worker_id", "grid_id"]):
        hit = hits.loc[(w, g)]
        if hit.attribute != "category":
            continue
        leaf = ia.category.loc[rows.image_id]
        if hit.granularity == "super":
            truth = ia.super_category.loc[rows.image_id]
        else:
            truth = leaf.copy()
            for pair in hit.merged.split(";") if pd.notna(hit.merged) else []:
                a, b = map(int, pair.split("+"))
                assert tree.twin[a] == b and {a, b} <= set(leaf)
                truth[truth == b] = a
        assert partition_matches(rows.group, truth), (w, g, hit.granularity, hit.merged)
        if hit.granularity == "leaf":  # nothing lumped: a pair of shown twins stays apart
            assert rows.group.nunique() == leaf.nunique()
        checked[hit.granularity] += 1
    assert min(checked.values()) >= 10, checked


def test_bad_category_spec_is_rejected():
    spec = DATASETS["categories"]
    with pytest.raises(ValueError, match="divide"):
        dataclasses.replace(spec, n_categories=18)
    with pytest.raises(ValueError, match="super_attributes"):
        dataclasses.replace(spec, super_attributes=("coat_pattern",))
    with pytest.raises(ValueError, match="species or categories"):
        dataclasses.replace(spec, n_species=4)
    with pytest.raises(ValueError, match="grid_super_categories"):
        dataclasses.replace(spec, grid_super_categories=6)
