"""Recommendations "from what similar users bought that this user has not" (user-based CF).

Method (vectorised, scipy.sparse):

1. Build the binary user x item purchase matrix ``X`` (1 if the user bought the item at least
   once; repeat purchases do not inflate similarity) from the purchase log.
2. Row-normalise it to ``Xn`` (unit L2 norm); the cosine similarity of the target users to all
   users is ``S = Xn[targets] @ Xn.T`` (sparse), with each target's self-similarity removed.
3. Item scores: ``scores = S @ X`` -- the similarity-weighted number of similar users who bought
   each item.  Items the target already bought are excluded.
4. Ranking, deterministic: by score (desc), then item popularity = number of distinct buyers
   (desc), then the item's natural sort order (asc).  Items with score 0 (no similar user bought
   them) rank after every scored item, by popularity: so a user with no similar users (no overlap
   with anyone, or no purchase at all / unknown user) gets the most popular items he has not
   bought, and a user with fewer than ``k`` similarity-based candidates is topped up with popular
   items.

Targets are processed in chunks so the dense ``chunk x n_items`` score block stays small.

The same scores without the population at scoring time (:class:`CoPurchases`): for an item ``j``
the target has not bought, ``score_j = sum_v cos(u, v) X[v, j]
= (1 / sqrt|B_u|) * sum_{i in B_u} C[i, j]`` with ``C[i, j] = sum_v X[v, i] X[v, j] / sqrt|B_v|``
(``B_u`` the target's items; the target's own row adds nothing to a ``j`` outside ``B_u``). ``C``
is item x item, so it is fitted once over the population and stored with the model; scoring a
user then reads only that user's items. With the population it was fitted on, the ranking is
the one :func:`recommend` gives.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt
from scipy import sparse

__all__ = ["CoPurchases", "fit_co_purchases", "recommend"]

_MAX_BLOCK = 4_000_000  # max dense cells per chunk of targets


def recommend(target_user_ids: Iterable[Any], user_ids: npt.ArrayLike, items: npt.ArrayLike,
              k: int = 5) -> dict[str, Any]:
    """Top-``k`` items per target user.

    Parameters
    ----------
    target_user_ids : iterable of user ids to recommend for (unknown ids get popular items).
    user_ids, items : aligned 1-D arrays, one row per purchase (item = product or category id;
        any sortable, homogeneous type).
    k : number of items per user (fewer only when the user has bought nearly everything).

    Returns
    -------
    dict mapping each target user id (Python scalar) to a list of items (Python scalars).
    """
    if k < 0:
        raise ValueError("k must be >= 0")
    u = np.asarray(user_ids).ravel()
    it = np.asarray(items).ravel()
    if u.shape != it.shape:
        raise ValueError("user_ids and items must have the same length")
    targets = np.asarray(list(target_user_ids) if not isinstance(target_user_ids, np.ndarray)
                         else target_user_ids).ravel()
    if targets.size == 0:
        return {}
    if u.size == 0:
        return {t: [] for t in targets.tolist()}

    uniq_users, u_idx = np.unique(u, return_inverse=True)
    uniq_items, i_idx = np.unique(it, return_inverse=True)
    n_u, n_i = uniq_users.size, uniq_items.size

    X = sparse.csr_matrix((np.ones(u.size), (u_idx, i_idx)), shape=(n_u, n_i))
    X.sum_duplicates()
    X.data[:] = 1.0
    popularity = np.asarray(X.sum(axis=0)).ravel()
    # Global tie-break rank: popularity desc, then item order asc.
    tb_order = np.lexsort((np.arange(n_i), -popularity))
    tie_rank = np.empty(n_i, dtype=np.int64)
    tie_rank[tb_order] = np.arange(n_i)

    norms = np.sqrt(np.asarray(X.sum(axis=1)).ravel())
    Xn = (sparse.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ X).tocsr()  # CSR already: tocsr() is a no-op
    XnT = Xn.T.tocsr()

    # Position of each target among known users (-1 when unknown).
    pos = np.searchsorted(uniq_users, targets)
    pos_c = np.clip(pos, 0, n_u - 1)
    known = (pos < n_u) & (uniq_users[pos_c] == targets)
    target_rows = np.where(known, pos_c, -1)

    result: dict[str, Any] = {}
    kk = min(k, n_i)
    chunk = max(1, _MAX_BLOCK // max(n_i, 1))
    for start in range(0, targets.size, chunk):
        rows = target_rows[start:start + chunk]
        m = rows.size
        kn = rows >= 0
        scores = np.zeros((m, n_i))
        bought = np.zeros((m, n_i), dtype=bool)
        if kn.any():
            kr = rows[kn]
            S = (Xn[kr] @ XnT).tocoo()
            off_self = S.col != kr[S.row]  # drop each target's similarity to itself
            S_off = sparse.csr_matrix((S.data[off_self], (S.row[off_self], S.col[off_self])),
                                      shape=S.shape)
            sc = (S_off @ X).toarray()
            scores[kn] = np.round(sc, 12)  # stabilise float ties
            bought[kn] = X[kr].toarray() > 0
        key = np.where(bought, np.inf, -scores)
        order = np.lexsort((np.broadcast_to(tie_rank, (m, n_i)), key), axis=-1)[:, :kk]
        picked_bought = np.take_along_axis(bought, order, axis=-1)
        for j in range(m):
            sel = order[j][~picked_bought[j]]
            result[targets[start + j].item()] = uniq_items[sel].tolist()
    return result


_User = TypeVar("_User", bound=Hashable)

MAX_ITEMS = 2_000  # the most popular items a fitted model keeps
MAX_NEIGHBOURS = 200  # co-purchase weights kept per item (the largest)


@dataclass(frozen=True)
class CoPurchases:
    """Item x item co-purchase weights ``C`` of the population (see the module docstring).

    Exact (the ranking :func:`recommend` gives on the fitted population) while there are at most
    ``MAX_NEIGHBOURS + 1`` items; beyond that each item keeps its largest weights, and beyond
    ``MAX_ITEMS`` items only the most popular are kept.
    """

    items: np.ndarray  # sorted (the natural order breaks the last ties)
    popularity: np.ndarray  # distinct buyers per item
    weights: sparse.csr_matrix  # C without its diagonal, n_items x n_items
    if TYPE_CHECKING:
        # Set by __post_init__ (object.__setattr__: the class is frozen); not dataclass fields at run time.
        _tie_rank: np.ndarray = field(init=False)
        _position: dict[Any, int] = field(init=False)

    def __post_init__(self) -> None:
        order = np.lexsort((np.arange(self.items.size), -self.popularity))
        tie_rank = np.empty(self.items.size, dtype=np.int64)
        tie_rank[order] = np.arange(self.items.size)
        object.__setattr__(self, "_tie_rank", tie_rank)
        object.__setattr__(self, "_position", {item: i for i, item in enumerate(self.items.tolist())})

    def recommend(self, baskets: Mapping[_User, Iterable[Any]], k: int = 5) -> dict[_User, list[Any]]:
        """Top-``k`` items for each user of ``baskets`` (user -> the items that user bought)."""
        users = list(baskets)
        n_i = self.items.size
        if not users or n_i == 0:
            return {u: [] for u in users}
        rows, cols, norms = [], [], np.ones(len(users))
        for r, user in enumerate(users):
            basket = set(baskets[user])
            norms[r] = np.sqrt(len(basket)) if basket else 1.0
            for item in basket:
                j = self._position.get(item)
                if j is not None:
                    rows.append(r)
                    cols.append(j)
        B = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(users), n_i))
        scores = np.round((B @ self.weights).toarray() / norms[:, None], 12)
        bought = B.toarray() > 0
        key = np.where(bought, np.inf, -scores)
        kk = min(k, n_i)
        order = np.lexsort((np.broadcast_to(self._tie_rank, key.shape), key), axis=-1)[:, :kk]
        picked_bought = np.take_along_axis(bought, order, axis=-1)
        return {user: self.items[order[r][~picked_bought[r]]].tolist() for r, user in enumerate(users)}

    def to_document(self) -> dict[str, Any]:
        w = self.weights
        return {"items": self.items.tolist(), "popularity": self.popularity.tolist(),
                "indptr": w.indptr.tolist(), "indices": w.indices.tolist(), "weights": w.data.tolist()}

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> CoPurchases:
        n = len(doc["items"])
        weights = sparse.csr_matrix(
            (np.asarray(doc["weights"], dtype=np.float64), np.asarray(doc["indices"], dtype=np.int64),
             np.asarray(doc["indptr"], dtype=np.int64)), shape=(n, n))
        return cls(np.asarray(doc["items"], dtype=object), np.asarray(doc["popularity"], dtype=np.int64), weights)


def fit_co_purchases(user_ids: npt.ArrayLike, items: npt.ArrayLike, *, max_items: int = MAX_ITEMS,
                     max_neighbours: int = MAX_NEIGHBOURS) -> CoPurchases:
    """Fit :class:`CoPurchases` on a purchase log (aligned ``user_ids`` and ``items``; repeats and
    order do not matter)."""
    u = np.asarray(user_ids).ravel()
    it = np.asarray(items).ravel()
    if u.shape != it.shape:
        raise ValueError("user_ids and items must have the same length")
    if u.size == 0:
        return CoPurchases(np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64), sparse.csr_matrix((0, 0)))
    uniq_users, u_idx = np.unique(u, return_inverse=True)
    uniq_items, i_idx = np.unique(it, return_inverse=True)
    X = sparse.csr_matrix((np.ones(u.size), (u_idx, i_idx)), shape=(uniq_users.size, uniq_items.size))
    X.sum_duplicates()
    X.data[:] = 1.0
    popularity = np.asarray(X.sum(axis=0)).ravel().astype(np.int64)
    basket_size = np.asarray(X.sum(axis=1)).ravel()
    if uniq_items.size > max_items:
        keep = np.sort(np.lexsort((np.arange(uniq_items.size), -popularity))[:max_items])
        X, uniq_items, popularity = X[:, keep], uniq_items[keep], popularity[keep]
    # The user's basket size counts every item bought, kept or not, as recommend() does.
    C = (X.T @ sparse.diags(1.0 / np.sqrt(np.maximum(basket_size, 1.0))) @ X).tocsr()
    C.setdiag(0.0)
    C.eliminate_zeros()
    if C.shape[0] > max_neighbours + 1:
        rows = []
        for i in range(C.shape[0]):
            start, end = C.indptr[i], C.indptr[i + 1]
            if end - start > max_neighbours:
                top = np.argsort(-C.data[start:end], kind="stable")[:max_neighbours]
                rows.append((np.full(top.size, i), C.indices[start:end][top], C.data[start:end][top]))
            else:
                rows.append((np.full(end - start, i), C.indices[start:end], C.data[start:end]))
        r, c, d = (np.concatenate(parts) for parts in zip(*rows, strict=True))
        C = sparse.csr_matrix((d, (r, c)), shape=C.shape)
    C.sort_indices()
    return CoPurchases(uniq_items.astype(object), popularity, C)
