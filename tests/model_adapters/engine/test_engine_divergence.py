"""Properties of the fp32 per-token reductions (KL, entropy, log-probabilities)."""
import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kvinject.model_adapters.engine.divergence import entropy, kl_divergence, log_probs

logit = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32)
vectors = st.integers(min_value=1, max_value=40).flatmap(
    lambda n: st.tuples(st.lists(logit, min_size=n, max_size=n), st.lists(logit, min_size=n, max_size=n))
)


@settings(max_examples=200, deadline=None)
@given(vectors)
def test_kl_is_finite_non_negative_and_zero_on_identical_inputs(pair):
    p, q = (log_probs(torch.tensor(v)) for v in pair)
    forward, backward = kl_divergence(p, q).item(), kl_divergence(q, p).item()
    assert math.isfinite(forward) and forward >= 0
    assert math.isfinite(backward) and backward >= 0
    assert kl_divergence(p, p).item() == 0


@settings(max_examples=200, deadline=None)
@given(vectors)
def test_entropy_is_finite_and_bounded_by_log_vocab(pair):
    p = log_probs(torch.tensor(pair[0]))
    value = entropy(p).item()
    assert math.isfinite(value) and 0 <= value <= math.log(len(pair[0])) + 1e-5


def test_extreme_logits_hand_checked():
    # p puts all mass on token 0; q puts e^-2e4 there: KL(p||q) = 2e4 nats, not inf or NaN.
    p = log_probs(torch.tensor([1e4, -1e4]))
    q = log_probs(torch.tensor([-1e4, 1e4]))
    assert torch.isfinite(p).all() and p[1].item() == -2e4
    assert kl_divergence(p, q).item() == 2e4
    assert entropy(p).item() == 0
    assert kl_divergence(p, p).item() == 0


def test_known_values():
    p = log_probs(torch.log(torch.tensor([0.5, 0.5])))
    q = log_probs(torch.log(torch.tensor([0.9, 0.1])))
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert abs(kl_divergence(p, q).item() - expected) < 1e-6
    assert abs(entropy(p).item() - math.log(2)) < 1e-6
    uniform = log_probs(torch.zeros(2, 3, 7))  # reductions work over the last dimension of any batch
    assert torch.allclose(entropy(uniform), torch.full((2, 3), math.log(7)))
