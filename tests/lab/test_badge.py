import numpy as np
from scipy import sparse

from backend import strategy as s
from lab.badge import gradient_embedding_batch, lead_with


def test_gradient_embedding_batch_prefers_uncertain_tasks_and_spreads_over_directions():
    sure = np.array([[0.98, 0.01, 0.01]] * 30)
    unsure = np.array([[0.4, 0.35, 0.25]] * 30)
    proba = np.vstack([sure, unsure])
    directions = np.vstack([np.eye(6)[i % 3] for i in range(30)] + [np.eye(6)[3 + i % 3] for i in range(30)])
    picked = gradient_embedding_batch(proba, sparse.csr_matrix(directions), 3)
    assert len(picked) == 3 and all(i >= 30 for i in picked)  # gradients of sure tasks are short
    assert len({int(directions[i].argmax()) for i in picked}) == 3  # one per direction, not three alike
    values = lead_with(s.margin(proba), picked)
    assert list(s.order(values)[:3]) == picked and sorted(s.order(values)) == list(range(60))
    assert gradient_embedding_batch(proba[:0], directions[:0], 3) == []
