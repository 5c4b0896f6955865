"""Binary accuracy, which the sampled mutants of nnfun.metrics showed untested: one output is
a hit when it is on the label's side of 0.5 (a probability) or of 0 (a logit)."""

import numpy as np

from nnfun import metrics

Y = np.array([1.0, 0.0, 0.0, 1.0])


def test_binary_accuracy_of_probabilities_by_hand():
    p = np.array([[0.7], [0.2], [0.6], [0.4]])
    hits = metrics.get("accuracy", "binary_crossentropy")(p, Y)
    np.testing.assert_array_equal(hits, [1.0, 1.0, 0.0, 0.0])


def test_binary_accuracy_of_logits_thresholds_at_zero():
    # 0.3 is a hit for label 1 as a logit (sigmoid(0.3) > 0.5), a miss as a probability.
    z = np.array([[0.3], [-0.2], [0.1], [-1.0]])
    hits = metrics.get("acc", "binary_crossentropy_from_logits")(z, Y)
    np.testing.assert_array_equal(hits, [1.0, 1.0, 0.0, 0.0])
