"""The sparse HIT sums of the choice likelihood equal the plain per-pair sums."""

import numpy as np
import torch
import torch.nn.functional as F

from models.cen.hit_pairs import HitPairs
from models.cen.sparse import SparseMatrix


def brute_force(x, logit_of, i, j, label, hit, n_hits):
    z = logit_of((x[i] - x[j]).abs())
    ll = torch.where(label.bool().unsqueeze(-1), F.logsigmoid(z), F.logsigmoid(-z))
    return torch.zeros(n_hits, x.shape[1], dtype=x.dtype).index_add_(0, hit, ll)


def test_hit_sums_match_per_pair_sums_and_gradients():
    torch.manual_seed(0)
    n_images, n_hits, K = 12, 7, 3
    hit = torch.sort(torch.randint(0, n_hits, (60,))).values
    i, j = torch.randint(0, n_images, (60,)), torch.randint(0, n_images, (60,))
    j = torch.where(i == j, (j + 1) % n_images, j)  # an image is never paired with itself
    label = torch.randint(0, 2, (60,)).float()
    index = HitPairs(i, j, label, hit, n_hits, n_images).double()
    assert len(index.diff.t_ptr) - 1 == n_images and index.diff.n_rows < 60  # repeated pairs are scored once
    x = torch.randn(n_images, K, dtype=torch.float64, requires_grad=True)
    logit_of = lambda d: 2.0 - d ** 2  # noqa: E731
    expected = brute_force(x, logit_of, i, j, label, hit, n_hits)
    got = index.log_lik_per_hit(x, logit_of)
    torch.testing.assert_close(got, expected)
    weights = torch.randn(n_hits, K, dtype=torch.float64)
    g_exp, = torch.autograd.grad((expected * weights).sum(), x)
    g_got, = torch.autograd.grad((index.log_lik_per_hit(x, logit_of) * weights).sum(), x)
    torch.testing.assert_close(g_got, g_exp)
    some = torch.tensor([5, 1, 3])  # a minibatch of HITs, in any order
    torch.testing.assert_close(index.log_lik_per_hit(x, logit_of, some), expected[some])  # its own pairs only
    g_exp, = torch.autograd.grad((brute_force(x, logit_of, i, j, label, hit, n_hits)[some] * weights[some]).sum(), x)
    g_got, = torch.autograd.grad((index.log_lik_per_hit(x, logit_of, some) * weights[some]).sum(), x)
    torch.testing.assert_close(g_got, g_exp)
    n_same, n_all = index.counts(some)
    torch.testing.assert_close(n_all, torch.bincount(hit, minlength=n_hits)[some].double())
    torch.testing.assert_close(n_same, torch.zeros(n_hits).index_add_(0, hit, label)[some].double())


def test_sparse_matrix_product_and_its_transpose():
    torch.manual_seed(1)
    row, col, val = torch.randint(0, 5, (30,)), torch.randint(0, 4, (30,)), torch.randn(30, dtype=torch.float64)
    dense = torch.zeros(5, 4, dtype=torch.float64).index_put_((row, col), val, accumulate=True)
    matrix = SparseMatrix(row, col, val, 5, 4)
    x = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(matrix @ x, dense @ x)
    g, = torch.autograd.grad(((matrix @ x) * grad_out).sum(), x)
    torch.testing.assert_close(g, dense.T @ grad_out)


def test_hit_images_distances_match_per_pair_distances():
    from models.energy import weighted_norm
    from models.cen.hit_images import HitImages

    torch.manual_seed(2)
    n_images, K = 9, 3
    grids = [torch.randperm(n_images)[:size] for size in (4, 5, 3)]  # HITs of different sizes
    i, j, hit = [], [], []
    for h, images in enumerate(grids):
        a, b = torch.triu_indices(len(images), len(images), 1)
        i.append(images[a]), j.append(images[b]), hit.append(torch.full((len(a),), h))
    i, j, hit = torch.cat(i), torch.cat(j), torch.cat(hit)
    index = HitImages(i, j, hit, len(grids), n_images).double()
    x = torch.randn(n_images, K, dtype=torch.float64, requires_grad=True)
    a_hit = torch.rand(len(grids), K, dtype=torch.float64)
    a_hit[1] = 0.0  # a dead activation: distance 0, gradient 0 (not NaN)
    a_hit.requires_grad_(True)
    expected = weighted_norm(a_hit[hit], x[i] - x[j])
    got = index.distances(x, a_hit)
    torch.testing.assert_close(got, expected)
    for g_got, g_exp in zip(torch.autograd.grad(got.sum(), [x, a_hit]), torch.autograd.grad(expected.sum(), [x, a_hit])):
        assert torch.isfinite(g_got).all()
        torch.testing.assert_close(g_got, g_exp)


def test_overall_sort_sums_per_hit_and_minibatches_match_per_pair_sums():
    """The kind variant's overall sort: per HIT, Σ log P(l | d) with d weighted by that HIT's weights,
    equal to a plain per-pair loop, for all HITs and for a minibatch of them."""
    import torch.nn.functional as F
    from models.energy import same_logit, weighted_norm

    torch.manual_seed(3)
    n_images, K = 10, 3
    grids = [torch.randperm(n_images)[:size] for size in (4, 6, 5, 3)]
    i, j, hit = [], [], []
    for h, images in enumerate(grids):
        a, b = torch.triu_indices(len(images), len(images), 1)
        i.append(images[a]), j.append(images[b]), hit.append(torch.full((len(a),), h))
    i, j, hit = torch.cat(i), torch.cat(j), torch.cat(hit)
    label = (torch.rand(len(i)) < 0.4).float()
    index = HitPairs(i, j, label, hit, len(grids), n_images, overall=True).double()
    x = torch.randn(n_images, K, dtype=torch.float64) * 3
    weight = torch.softmax(torch.randn(len(grids), K, dtype=torch.float64), -1)
    logit = lambda d: same_logit(d, beta=0.7)  # noqa: E731
    pair = F.logsigmoid((2 * label.double() - 1) * logit(weighted_norm(weight[hit].sqrt(), x[i] - x[j])))
    expected = torch.zeros(len(grids), dtype=torch.float64).index_add_(0, hit, pair)
    torch.testing.assert_close(index.weighted_log_lik_per_hit(x, weight, logit), expected)
    some = torch.tensor([3, 1])
    torch.testing.assert_close(index.weighted_log_lik_per_hit(x, weight[some], logit, some), expected[some])


def test_hit_chunks_cover_every_hit_once_in_order_and_bound_the_pairs():
    from inference.predict import hit_chunks

    pairs_per_hit = torch.randint(1, 30, (200,), generator=torch.Generator().manual_seed(0))
    hit_ptr = torch.cat([torch.zeros(1, dtype=torch.long), pairs_per_hit.cumsum(0)])
    for max_pairs in (1, 25, 100, 10_000):
        chunks = hit_chunks(hit_ptr, max_pairs)
        assert torch.equal(torch.cat(chunks), torch.arange(200))
        sizes = torch.stack([pairs_per_hit[chunk].sum() for chunk in chunks])
        assert (sizes <= max_pairs + pairs_per_hit.max()).all()
        assert len(chunks) >= int(pairs_per_hit.sum()) // (max_pairs + int(pairs_per_hit.max()))


def test_attribute_probabilities_do_not_depend_on_the_chunk_size(monkeypatch):
    """Scored a chunk of HITs at a time (training HITs through the model's own index, the others through
    their own), the attribute probabilities are the same whatever the chunks."""
    from cen_bayes import CEN
    from cen_bayes.crowd import CrowdData
    from cen_bayes.datasets import load_dataset
    from inference import predict

    data = CrowdData.from_source(load_dataset("tiny", seed=0).table)
    for variant in ("choice", "kind"):
        cen = CEN(4, variant, steps=20, draws=4, progress=False).fit(data, holdout=0.3)
        whole = predict.attribute_probability_draws(cen.model_, cen.draws_, data, cen.split_.train_hits)
        monkeypatch.setattr(predict, "HIT_CHUNK_PAIRS", 50)
        chunked = predict.attribute_probability_draws(cen.model_, cen.draws_, data, cen.split_.train_hits)
        monkeypatch.undo()
        assert whole.shape == (4, data.n_hits, 4 + 1 + (variant == "kind"))
        np.testing.assert_allclose(chunked, whole, atol=1e-5)
        np.testing.assert_allclose(whole.sum(-1), 1.0, atol=1e-5)
