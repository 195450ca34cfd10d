"""Independent serial references for the factorization tests: dense numpy, row by row."""

from __future__ import annotations

import numpy as np


def dense(users, items, values, n_users, n_items):
    """``(R, M)``: the ratings matrix and its mask of observed entries."""
    r = np.zeros((n_users, n_items))
    m = np.zeros((n_users, n_items), dtype=bool)
    r[users, items] = values
    m[users, items] = True
    return r, m


def als_reference(r, m, p, q, reg, iters, mu=0.0, biases=False):
    """Textbook ALS-WR on dense arrays (optionally with biases); returns ``(P, Q, objectives)``."""
    k = p.shape[1] - (2 if biases else 0)
    p, q = p.copy(), q.copy()
    objectives = []

    def solve(mask_row, target_row, design, n_free):
        idx = np.flatnonzero(mask_row)
        if idx.size == 0:
            return np.zeros(n_free)
        d = design[idx]
        a = d.T @ d + reg * idx.size * np.eye(n_free)
        return np.linalg.solve(a, d.T @ target_row[idx])

    for _ in range(iters):
        for u in range(r.shape[0]):
            if biases:  # unknowns [x, b]; item side gives [y, 1] and the offset c
                p[u, : k + 1] = solve(m[u], r[u] - mu - q[:, k + 1], q[:, : k + 1], k + 1)
            else:
                p[u] = solve(m[u], r[u] - mu, q, k)
        for i in range(r.shape[1]):
            if biases:  # unknowns [y, c]; user side gives [x, 1] and the offset b
                cols = np.r_[np.arange(k), k + 1]
                q[i, cols] = solve(m[:, i], r[:, i] - mu - p[:, k], p[:, cols], k + 1)
            else:
                q[i] = solve(m[:, i], r[:, i] - mu, p, k)
        pred = mu + p @ q.T
        free_p = p[:, : k + 1] if biases else p
        free_q = q[:, np.r_[np.arange(k), k + 1]] if biases else q
        objectives.append(np.sum(m * (r - pred) ** 2) + reg * (m.sum(1) @ np.sum(free_p**2, 1)
                                                               + m.sum(0) @ np.sum(free_q**2, 1)))
    return p, q, objectives


def ials_reference(r, m, p, q, reg, alpha, iters):
    """Hu-Koren-Volinsky with the full dense confidence matrix of every row."""
    p, q = p.copy(), q.copy()
    conf = 1.0 + alpha * np.abs(r) * m
    pref = ((r > 0) & m).astype(float)
    for _ in range(iters):
        for u in range(r.shape[0]):
            c = np.diag(conf[u])
            p[u] = np.linalg.solve(q.T @ c @ q + reg * np.eye(q.shape[1]), q.T @ c @ pref[u])
        for i in range(r.shape[1]):
            c = np.diag(conf[:, i])
            q[i] = np.linalg.solve(p.T @ c @ p + reg * np.eye(p.shape[1]), p.T @ c @ pref[:, i])
    objective = np.sum(conf * (pref - p @ q.T) ** 2) + reg * (np.sum(p**2) + np.sum(q**2))
    return p, q, objective


def ranking_reference(recs, relevant, k):
    """precision, recall, nDCG and MAP at k of one user, straight from the definitions."""
    hits = [1.0 if item in relevant else 0.0 for item in recs[:k]]
    dcg = sum(h / np.log2(j + 2) for j, h in enumerate(hits))
    idcg = sum(1.0 / np.log2(j + 2) for j in range(min(k, len(relevant))))
    ap, found = 0.0, 0
    for j, h in enumerate(hits):
        if h:
            found += 1
            ap += found / (j + 1)
    return sum(hits) / k, sum(hits) / len(relevant), dcg / idcg, ap / min(k, len(relevant))
