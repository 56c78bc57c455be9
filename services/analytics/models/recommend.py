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
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

__all__ = ["recommend"]

_MAX_BLOCK = 4_000_000  # max dense cells per chunk of targets


def recommend(target_user_ids, user_ids, items, k: int = 5) -> dict:
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
    Xn = sparse.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ X
    XnT = Xn.T.tocsr()

    # Position of each target among known users (-1 when unknown).
    pos = np.searchsorted(uniq_users, targets)
    pos_c = np.clip(pos, 0, n_u - 1)
    known = (pos < n_u) & (uniq_users[pos_c] == targets)
    target_rows = np.where(known, pos_c, -1)

    result: dict = {}
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
            S = sparse.csr_matrix((S.data[off_self], (S.row[off_self], S.col[off_self])),
                                  shape=S.shape)
            sc = (S @ X).toarray()
            scores[kn] = np.round(sc, 12)  # stabilise float ties
            bought[kn] = X[kr].toarray() > 0
        key = np.where(bought, np.inf, -scores)
        order = np.lexsort((np.broadcast_to(tie_rank, (m, n_i)), key), axis=-1)[:, :kk]
        picked_bought = np.take_along_axis(bought, order, axis=-1)
        for j in range(m):
            sel = order[j][~picked_bought[j]]
            result[targets[start + j].item()] = uniq_items[sel].tolist()
    return result
