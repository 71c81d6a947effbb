"""SpRAy: each step on maps with a known structure, the results stored next to the maps, and the Clever-Hans
demo: on held-out scenes, the cluster SpRAy ranks first holds the watermarked rings."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")
zarr = pytest.importorskip("zarr")

from sglrp_widgets import ExplainError, demo  # noqa: E402
from sglrp_widgets.dataset import explain_dataset, open_store  # noqa: E402
from sglrp_widgets.spray import (  # noqa: E402
    analyse_maps, knn_affinity, laplacian_spectrum, load_spray, map_features, rank_clusters, spray,
)

YY, XX = np.mgrid[0:32, 0:32]


def _blob(cy, cx, r=2.0):
    return np.exp(-((YY - cy) ** 2 + (XX - cx) ** 2) / (2 * r * r))


def _groups(sizes, centres, jitter, seed=0):
    """Maps with a blob near one centre per group (``jitter`` px of random shift) plus noise."""
    rng = np.random.default_rng(seed)
    maps, truth = [], []
    for g, (n, (cy, cx), j) in enumerate(zip(sizes, centres, jitter)):
        for _ in range(n):
            maps.append(_blob(cy + rng.uniform(-j, j), cx + rng.uniform(-j, j)) + rng.normal(0, 0.03, (32, 32)))
            truth.append(g)
    return np.array(maps), np.array(truth)


def test_map_features_area_downsampling_and_unit_length():
    maps = np.arange(2 * 6 * 6, dtype=float).reshape(2, 6, 6)
    f = map_features(maps, size=3)
    expect = maps.reshape(2, 3, 2, 3, 2).mean(axis=(2, 4)).reshape(2, -1)
    np.testing.assert_allclose(f, expect / np.linalg.norm(expect, axis=1, keepdims=True))
    g = map_features(np.ones((1, 5, 5)), size=2)          # sizes that do not divide: still area weights
    np.testing.assert_allclose(g, np.full((1, 4), 0.5))
    assert map_features(np.zeros((1, 4, 4)), size=4).sum() == 0    # an empty map stays zero, no NaN
    assert map_features(-np.ones((1, 4, 4)), size=4, positive=True).sum() == 0


def test_disconnected_groups_give_zero_eigenvalues_and_the_eigengap_counts_them():
    maps, truth = _groups([20, 25, 15], [(6, 6), (25, 25), (6, 25)], [1, 1, 1])
    found = analyse_maps(map_features(maps, 16), n_neighbors=10, max_clusters=6, embedding="spectral")
    values = found["eigenvalues"]
    assert np.all(values[:3] < 1e-6) and values[3] > 0.1      # three components: three zero eigenvalues
    assert found["n_clusters"] == 3
    labels = found["clusterings"][2]
    for g in range(3):                                        # every group is one cluster
        assert len(np.unique(labels[truth == g])) == 1
    assert len(np.unique(labels)) == 3
    assert found["embedding"].shape == (60, 2)


def test_dense_and_arpack_spectra_agree(monkeypatch):
    from sglrp_widgets import spray as spray_module

    maps, _ = _groups([150, 100], [(6, 6), (25, 25)], [6, 6])
    affinity = knn_affinity(map_features(maps, 8), 10)
    dense, _ = laplacian_spectrum(affinity, 6)
    monkeypatch.setattr(spray_module, "DENSE_MAX", 100)
    sparse, vectors = laplacian_spectrum(affinity, 6)              # the ARPACK path
    assert vectors.shape == (250, 6)
    np.testing.assert_allclose(sparse, dense, atol=1e-6)
    assert dense[0] < 1e-9 and np.all(np.diff(dense) >= 0)


def test_the_coherent_cluster_ranks_first():
    maps, truth = _groups([30, 30], [(28, 4), (16, 16)], [0, 8])   # group 0: fixed place; group 1: anywhere
    f = map_features(maps, 16)
    labels, coherence = rank_clusters(f, 1 - truth)          # given the other way round
    assert np.all(labels[truth == 0] == 0) and np.all(np.diff(coherence) <= 0)
    found = analyse_maps(f, n_neighbors=8, max_clusters=4, embedding="spectral")
    assert found["n_clusters"] >= 2
    top = found["clusterings"][found["n_clusters"] - 1] == 0
    assert np.all(truth[top] == 0) and top[truth == 0].mean() >= 0.9


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    images, labels, _ = demo.make_scenes(36, seed=21)
    out = tmp_path_factory.mktemp("spray") / "s.zarr"
    explain_dataset(demo.load_model(), (images, labels[:, 0]), "gradient", targets="label", out=out,
                    batch_size=12, preprocess=demo.preprocess, progress=False)
    return str(out), labels[:, 0]


def test_spray_stores_results_next_to_the_maps(store):
    path, labels = store
    results = spray(path, min_maps=4, max_clusters=3, embedding="tsne", progress=False)
    present = sorted(int(c) for c, n in zip(*np.unique(labels, return_counts=True)) if n >= 4)
    assert sorted(results) == present
    for c, r in results.items():
        np.testing.assert_array_equal(r.ids, np.flatnonzero(labels == c))
        assert r.clusterings.shape == (3, len(r.rows)) and r.embedding.shape == (len(r.rows), 2)
        assert 1 <= r.n_clusters <= 3 and len(r.eigengaps) == len(r.eigenvalues) - 1
        back = load_spray(path, c)
        np.testing.assert_array_equal(back.clusters, r.clusters)
        np.testing.assert_array_equal(back.embedding, r.embedding)
        assert back.n_clusters == r.n_clusters
    again = spray(path, classes=[present[0]], min_maps=4, max_clusters=3, embedding="tsne", progress=False)
    np.testing.assert_array_equal(again[present[0]].embedding, results[present[0]].embedding)  # deterministic
    group = open_store(path)                                    # read-only, as explain_dataset returns it
    again = spray(group, classes=[present[0]], min_maps=4, max_clusters=3, embedding="tsne", progress=False)
    np.testing.assert_array_equal(load_spray(group, present[0]).clusters, again[present[0]].clusters)


def test_spray_errors(store, tmp_path):
    path, labels = store
    with pytest.raises(ExplainError, match="embedding"):
        spray(path, embedding="umap3")
    with pytest.raises(ExplainError, match="max_clusters"):
        spray(path, max_clusters=0)
    absent = int(np.setdiff1d(np.arange(6), labels)[0]) if len(np.unique(labels)) < 6 else None
    if absent is not None:
        with pytest.raises(ExplainError, match="needs at least 3"):
            spray(path, classes=[absent], progress=False)
    with pytest.raises(ExplainError, match="no SpRAy results"):
        load_spray(path, 99)
    images = demo.make_scenes(8, seed=1)[0]
    out = tmp_path / "cut.zarr"
    explain_dataset(demo.load_model(), images, "gradient", out=out, chunk_size=4, preprocess=demo.preprocess,
                    progress=False)
    g = zarr.open_group(str(out), mode="r+")
    g["done"][1] = False
    meta = dict(g.attrs["sglrp_widgets"], complete=False)
    g.attrs["sglrp_widgets"] = meta
    with pytest.raises(ExplainError, match="not complete.*1 of 2"):
        spray(out)


def test_choose_clusters_reads_a_relative_gap():
    from sglrp_widgets.spray import choose_clusters

    assert choose_clusters(np.array([0, 0, 0, 0.6, 0.7, 0.8]), 4) == 3          # three components
    assert choose_clusters(np.array([0, 0.015, 0.1, 0.13, 0.15, 0.36]), 5) == 2  # not the larger late gap
    assert choose_clusters(np.array([0, 0.06, 0.074, 0.094, 0.145, 0.18]), 4) == 1   # a steady rise
    assert choose_clusters(np.array([0, 0.06, 0.074, 0.094, 0.145, 0.18]), 4, gap_ratio=1.5) == 4
    assert choose_clusters(np.array([0, 0.5]), 8) == 1
