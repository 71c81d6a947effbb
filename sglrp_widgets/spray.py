"""SpRAy (Spectral Relevance Analysis, Lapuschkin et al. 2019): find the model's strategies per class.

For each class of a store written by :func:`~sglrp_widgets.dataset.explain_dataset`: the maps explaining
that class are downsampled and scaled to unit length, joined in a k-nearest-neighbour affinity graph, and the
smallest eigenvalues of its normalised Laplacian are computed. The *eigengap* - the first eigenvalue that is a
large multiple of the one before (:func:`choose_clusters`) - suggests how many well-separated groups of maps -
strategies - the class has; spectral clustering (k-means on the normalised
eigenvectors, scikit-learn) splits the maps for every number of clusters up to ``max_clusters``, and t-SNE
(scikit-learn) places them in 2-D. Clusters are ranked by *coherence*, the length of their mean unit map
(1 = every map in the cluster lights up the same pixels, 0 = no shared pattern): an artifact such as a
watermark sits at the same place in every image, an object does not, so a Clever-Hans cluster ranks first.
Cluster 0 is always the top-ranked one.

Results go into the store, next to the maps (group ``spray/<class>``):

==================  =================================  ===================================================
array               shape, dtype                       content
==================  =================================  ===================================================
``rows``            (n,) int64                         rows of the store explaining this class
``ids``             (n,) int64                         their image ids (``store["ids"][rows]``)
``eigenvalues``     (m,) float64                       smallest eigenvalues of the normalised Laplacian
``clusterings``     (max_clusters, n) int16            row ``j``: cluster of each map with ``j + 1`` clusters
``coherence``       (max_clusters, max_clusters) f32   row ``j``: coherence of clusters 0..j, NaN after
``embedding``       (n, 2) float32                     t-SNE (or spectral) coordinates
==================  =================================  ===================================================

and attributes ``n_clusters`` (the eigengap's choice) and ``params``.

Example
-------
>>> from sglrp_widgets.spray import spray, load_spray
>>> results = spray("scenes.zarr", classes=[4])          # doctest: +SKIP
>>> r = results[4]; r.n_clusters, r.coherence_of()      # doctest: +SKIP
(2, array([0.83, 0.21], dtype=float32))
>>> load_spray("scenes.zarr", 4).ids[r.clusters == 0]   # doctest: +SKIP
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ExplainError

__all__ = ["spray", "load_spray", "ClassAnalysis", "map_features", "knn_affinity", "laplacian_spectrum",
           "cluster_spectral", "rank_clusters", "analyse_maps", "default_neighbors", "choose_clusters"]

#: Up to this many maps per class the Laplacian is decomposed densely; above, ARPACK finds the few needed.
DENSE_MAX = 2000
#: An eigenvalue this many times the one before marks a cluster boundary (see :func:`choose_clusters`).
GAP_RATIO = 2.0


@dataclass
class ClassAnalysis:
    """SpRAy's findings for one class (cluster 0 = the most coherent cluster)."""

    cls: int
    rows: np.ndarray
    ids: np.ndarray
    eigenvalues: np.ndarray
    clusterings: np.ndarray        # (max_clusters, n): row j = labels with j + 1 clusters
    coherence: np.ndarray          # (max_clusters, max_clusters), NaN-padded
    embedding: np.ndarray
    n_clusters: int

    @property
    def eigengaps(self) -> np.ndarray:
        """``eigenvalues[k] - eigenvalues[k - 1]`` (k = 1, 2, ...), for plots."""
        return np.diff(self.eigenvalues)

    @property
    def clusters(self) -> np.ndarray:
        """Cluster of every map with the eigengap's number of clusters."""
        return self.clusterings[self.n_clusters - 1]

    def labels_for(self, k: int) -> np.ndarray:
        if not 1 <= k <= len(self.clusterings):
            raise ExplainError(f"clusterings exist for 1..{len(self.clusterings)} clusters, not {k}.")
        return self.clusterings[k - 1]

    def coherence_of(self, k: int | None = None) -> np.ndarray:
        k = self.n_clusters if k is None else k
        return self.coherence[k - 1, :k]


# ---- the steps ---------------------------------------------------------------------------------------

def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of area-averaging resampling (exact for any sizes)."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    pix = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, pix + 1) - np.maximum(lo, pix), 0, None)
    return overlap / (n_in / n_out)


def map_features(heatmaps: np.ndarray, size: int = 32, positive: bool = False) -> np.ndarray:
    """Maps (n, H, W) -> (n, h*w) unit vectors after area downsampling to at most ``size`` per side.

    Example
    -------
    >>> f = map_features(np.ones((2, 8, 8)), size=4)
    >>> f.shape, np.linalg.norm(f, axis=1).round(6).tolist()
    ((2, 16), [1.0, 1.0])
    """
    h = np.asarray(heatmaps, np.float64)
    if h.ndim != 3:
        raise ExplainError(f"maps must be (n, H, W), got shape {h.shape}.")
    if positive:
        h = np.maximum(h, 0)
    rows, cols = min(size, h.shape[1]), min(size, h.shape[2])
    if (rows, cols) != h.shape[1:]:
        h = np.einsum("ih,nhw,jw->nij", _area_matrix(h.shape[1], rows), h, _area_matrix(h.shape[2], cols))
    f = h.reshape(len(h), -1)
    norm = np.linalg.norm(f, axis=1, keepdims=True)
    return f / np.where(norm > 0, norm, 1)


def knn_affinity(features: np.ndarray, n_neighbors: int) -> Any:
    """Symmetric k-nearest-neighbour connectivity ``(K + K^T) / 2`` (scikit-learn), sparse (n, n)."""
    from sklearn.neighbors import kneighbors_graph

    k = min(n_neighbors, len(features) - 1)
    conn = kneighbors_graph(features, n_neighbors=k, mode="connectivity", include_self=False)
    return 0.5 * (conn + conn.T)


def laplacian_spectrum(affinity: Any, m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` smallest eigenvalues (ascending) of the normalised Laplacian and their eigenvectors (n, m)."""
    from scipy.sparse import csgraph, identity
    from scipy.sparse.linalg import eigsh

    n = affinity.shape[0]
    m = min(m, n)
    lap = csgraph.laplacian(affinity, normed=True)
    if n <= DENSE_MAX or m >= n - 1:
        values, vectors = np.linalg.eigh(lap.toarray())
        values, vectors = values[:m], vectors[:, :m]
    else:        # the largest eigenvalues of I - L: fast with ARPACK, unlike the smallest of L
        v0 = np.random.default_rng(seed).uniform(0.5, 1.5, n)
        mu, vectors = eigsh(identity(n) - lap, k=m, which="LA", v0=v0)
        order = np.argsort(-mu)
        values, vectors = 1.0 - mu[order], vectors[:, order]
    return np.clip(values, 0.0, 2.0), vectors


def cluster_spectral(vectors: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Spectral clustering's last step: k-means (scikit-learn) on the row-normalised first k eigenvectors."""
    from sklearn.cluster import KMeans

    if k == 1:
        return np.zeros(len(vectors), np.int64)
    u = vectors[:, :k]
    u = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(u).astype(np.int64)


def rank_clusters(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relabel clusters by falling coherence (ties: larger first); returns (labels, coherence per cluster).

    Example
    -------
    >>> f = np.array([[1.0, 0], [0, 1.0], [1.0, 0], [0.6, 0.8]])
    >>> rank_clusters(f, np.array([0, 0, 1, 1]))[0].tolist()
    [1, 1, 0, 0]
    """
    ks = np.unique(labels)
    coh = np.array([np.linalg.norm(features[labels == c].mean(axis=0)) for c in ks])
    size = np.array([np.sum(labels == c) for c in ks])
    order = np.lexsort((-size, -coh))              # by coherence, then size
    new = np.empty(labels.max() + 1, np.int64)
    new[ks[order]] = np.arange(len(ks))
    return new[labels], coh[order].astype(np.float32)


def _embed(vectors: np.ndarray, how: str, seed: int) -> np.ndarray:
    n = len(vectors)
    if how == "spectral" or n < 5:
        out = vectors[:, 1:3] if vectors.shape[1] >= 3 else np.zeros((n, 2))
        return np.asarray(out, np.float32)
    from sklearn.manifold import TSNE

    tsne = TSNE(n_components=2, perplexity=float(min(30.0, (n - 1) / 3)), init="pca", random_state=seed)
    return tsne.fit_transform(vectors).astype(np.float32)


def default_neighbors(n: int) -> int:
    """Neighbours per map: about log2(n), at least 5 (a cluster needs more members than that to stand apart).

    Example
    -------
    >>> [default_neighbors(n) for n in (50, 100, 1000, 100_000)]
    [6, 7, 10, 17]
    """
    return max(5, int(np.ceil(np.log2(max(n, 2)))))


def choose_clusters(eigenvalues: np.ndarray, max_clusters: int, gap_ratio: float = GAP_RATIO) -> int:
    """The eigengap's number of clusters: the k (2..max_clusters) after which the next eigenvalue is the
    largest multiple of the k-th, ``(λ_{k+1} + ε) / (λ_k + ε)`` with ε = 1e-3; 1 (no structure) when no
    eigenvalue is ``gap_ratio`` times the one before.

    k groups joined by few edges give k eigenvalues near 0 and a jump after them; a relative gap tells such a
    jump from the steady rise of the eigenvalues of one continuous group, which an absolute gap confuses
    with it (the larger eigenvalues are also farther apart).

    Example
    -------
    >>> choose_clusters(np.array([0, 0.01, 0.2, 0.25, 0.3]), 3), choose_clusters(np.array([0, .1, .15, .2]), 2)
    (2, 1)
    """
    values = np.asarray(eigenvalues, np.float64)
    ks = np.arange(2, min(max_clusters, len(values) - 1) + 1)
    if not len(ks):
        return 1
    ratios = (values[ks] + 1e-3) / (values[ks - 1] + 1e-3)
    best = int(np.argmax(ratios))
    return int(ks[best]) if ratios[best] >= gap_ratio else 1


def analyse_maps(features: np.ndarray, *, n_neighbors: int | None = None, max_clusters: int = 8,
                 n_eigenvalues: int = 16, gap_ratio: float = GAP_RATIO, embedding: str = "tsne",
                 seed: int = 0) -> dict:
    """SpRAy on unit feature vectors of one class: eigenvalues, clusterings for 1..max_clusters, embedding."""
    from threadpoolctl import threadpool_limits

    n = len(features)
    n_neighbors = default_neighbors(n) if n_neighbors is None else n_neighbors
    max_clusters = max(1, min(max_clusters, n - 1))
    m = min(n, max(n_eigenvalues, max_clusters + 1))
    # one thread for a class of a few thousand maps: the work is milliseconds, and OpenMP/BLAS thread pools
    # on a busy machine made it 10-100x slower (measured); large classes keep every core
    with threadpool_limits(1 if n <= DENSE_MAX else None):
        values, vectors = laplacian_spectrum(knn_affinity(features, n_neighbors), m, seed)
        n_clusters = choose_clusters(values, max_clusters, gap_ratio)
        clusterings = np.zeros((max_clusters, n), np.int16)
        coherence = np.full((max_clusters, max_clusters), np.nan, np.float32)
        for k in range(1, max_clusters + 1):
            labels, coh = rank_clusters(features, cluster_spectral(vectors, k, seed))
            clusterings[k - 1], coherence[k - 1, :len(coh)] = labels, coh
        embedded = _embed(vectors, embedding, seed)
    return {"eigenvalues": values, "clusterings": clusterings, "coherence": coherence, "embedding": embedded,
            "n_clusters": n_clusters}


# ---- over a store ------------------------------------------------------------------------------------

def _open(store: Any, mode: str) -> Any:
    from .dataset import open_store

    if isinstance(store, (str, os.PathLike)):
        return open_store(store, mode)
    import zarr

    backing = store.store                   # explain_dataset returns its store opened read-only
    if mode != "r" and backing.read_only:
        backing = backing.with_read_only(False)
    return zarr.open_group(backing, path=store.path, mode=mode)


def spray(store: Any, *, classes: list[int] | None = None, size: int = 32, n_neighbors: int | None = None,
          max_clusters: int = 8, n_eigenvalues: int = 16, gap_ratio: float = GAP_RATIO, embedding: str = "tsne",
          positive: bool = False, min_maps: int = 10, seed: int = 0,
          progress: bool = True) -> dict[int, ClassAnalysis]:
    """Run SpRAy on every class (or ``classes``) of a complete store and save the results in it.

    Parameters
    ----------
    store : path or zarr.Group
        A store written by :func:`~sglrp_widgets.dataset.explain_dataset`.
    classes : list of int, optional
        Classes to analyse (default: every explained class with at least ``min_maps`` maps).
    size : int
        Largest side of the downsampled maps (read from the stored int8 heatmaps).
    n_neighbors : int, optional
        Neighbours per map in the affinity graph (default: about log2 of the class's maps, at least 5).
    max_clusters : int
        Clusterings are computed for 1..max_clusters clusters; the eigengap chooses among them.
    n_eigenvalues : int
        Eigenvalues kept for the eigengap plot (at least ``max_clusters + 1``).
    gap_ratio : float
        How many times the k-th eigenvalue the next must be to mark k clusters (:func:`choose_clusters`);
        below it everywhere, the class counts as one group.
    embedding : {"tsne", "spectral"}
        2-D coordinates: t-SNE on the spectral embedding, or its first two non-trivial eigenvectors.
    positive : bool
        Cluster the positive part of the maps only.
    min_maps : int
        Classes with fewer maps are skipped.
    seed : int
        Seed of k-means, t-SNE and ARPACK.

    Returns
    -------
    dict
        class -> :class:`ClassAnalysis`.

    Example
    -------
    >>> r = spray("maps.zarr")[3]                     # doctest: +SKIP
    >>> r.n_clusters, r.clusters[:8]                  # doctest: +SKIP
    (2, array([0, 1, 1, 0, 1, 1, 1, 0], dtype=int16))
    """
    from tqdm.auto import tqdm

    if embedding not in ("tsne", "spectral"):
        raise ExplainError(f'embedding must be "tsne" or "spectral", got {embedding!r}.')
    for name, v, low in (("size", size, 2), ("n_neighbors", n_neighbors, 2), ("max_clusters", max_clusters, 1),
                         ("n_eigenvalues", n_eigenvalues, 2), ("min_maps", min_maps, 3)):
        if v is None and name == "n_neighbors":
            continue
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ExplainError(f"{name} must be an integer >= {low}, got {v!r}.")
    group = _open(store, "r+")
    meta = group.attrs["sglrp_widgets"]
    if not meta.get("complete"):
        done = group["done"][:]
        raise ExplainError(f"the store is not complete ({int(done.sum())} of {len(done)} chunks): finish "
                           "explain_dataset (run it again to resume) before SpRAy.")
    targets = group["targets"][:]
    present, counts = np.unique(targets, return_counts=True)
    if classes is None:
        classes = [int(c) for c, n in zip(present, counts) if n >= min_maps]
    if isinstance(gap_ratio, bool) or not isinstance(gap_ratio, (int, float)) or not gap_ratio >= 1:
        raise ExplainError(f"gap_ratio must be a number >= 1, got {gap_ratio!r}.")
    params = {"size": size, "n_neighbors": n_neighbors, "max_clusters": max_clusters,
              "n_eigenvalues": n_eigenvalues, "gap_ratio": float(gap_ratio), "embedding": embedding,
              "positive": positive, "seed": seed}
    root = group.require_group("spray")
    root.attrs.update({"store_key": meta["key"], "params": params})
    results = {}
    for c in tqdm(classes, unit="class", desc="SpRAy", disable=not progress):
        rows = np.flatnonzero(targets == c)
        if len(rows) < 3:
            raise ExplainError(f"class {c} has {len(rows)} maps in the store; SpRAy needs at least 3.")
        q = group["heatmaps"].oindex[rows].astype(np.float32)
        maps = q * (group["heatmap_scale"].oindex[rows] / 127.0)[:, None, None]
        found = analyse_maps(map_features(maps, size, positive), n_neighbors=n_neighbors,
                             max_clusters=max_clusters, n_eigenvalues=n_eigenvalues, gap_ratio=gap_ratio,
                             embedding=embedding, seed=seed)
        result = ClassAnalysis(cls=int(c), rows=rows.astype(np.int64), ids=group["ids"].oindex[rows], **found)
        _save(root, result, params)
        results[int(c)] = result
    return results


def _save(root: Any, r: ClassAnalysis, params: dict) -> None:
    g = root.require_group(str(r.cls))
    for name in ("rows", "ids", "eigenvalues", "clusterings", "coherence", "embedding"):
        value = np.asarray(getattr(r, name))
        g.create_array(name, shape=value.shape, dtype=value.dtype, overwrite=True)[...] = value
    g.attrs.update({"n_clusters": r.n_clusters, "params": params})


def load_spray(store: Any, cls: int) -> ClassAnalysis:
    """Read one class's SpRAy results from a store (after :func:`spray`).

    Example
    -------
    >>> load_spray("maps.zarr", 4).n_clusters      # doctest: +SKIP
    2
    """
    group = _open(store, "r")
    if "spray" not in group or str(int(cls)) not in group["spray"]:
        raise ExplainError(f"no SpRAy results for class {cls} in this store; run spray(store, classes=[{cls}]).")
    if group["spray"].attrs.get("store_key") != group.attrs["sglrp_widgets"]["key"]:
        raise ExplainError("the SpRAy results were computed on an earlier version of this store; run spray again.")
    g = group["spray"][str(int(cls))]
    arrays = {name: g[name][...] for name in ("rows", "ids", "eigenvalues", "clusterings", "coherence", "embedding")}
    return ClassAnalysis(cls=int(cls), n_clusters=int(g.attrs["n_clusters"]), **arrays)
