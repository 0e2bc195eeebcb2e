"""Our SAEs and SAELens: the same file format, and the same metric values from both code bases.

The metrics are computed twice on the same SAE and the same activations: with SAELens's own
evaluation code (``sae_lens.evals``: ``get_sparsity_and_variance_metrics`` for L0 and explained
variance, ``get_recons_loss`` for the CE losses) and with ours (``interplab.sae``).

Definition differences, and how the comparison removes them:

* Which next-token predictions count. SAELens (with ``ignore_tokens=[<pad>]``) keeps the
  prediction made *at* every non-padding input token, including the one made at the last word,
  whose target is ``<pad>``. Our default keeps the predictions whose *target* is not padding. The
  comparison passes SAELens's convention to our function as its mask; a separate assertion shows
  the two conventions give different numbers, so the mask is doing something.
* Where the SAE is spliced. SAELens leaves ignored (padding) positions un-spliced, we splice every
  position. Padding only ever follows the real tokens and attention is causal, so no counted
  prediction can see the difference: the values agree to float precision.
* Explained variance: both use ``1 - E||x - x_hat||^2 / (E||x||^2 - ||E x||^2)``. SAELens also
  reports ``explained_variance_legacy`` (per-token ratio averaged over tokens): a different
  quantity, not compared.
"""
from __future__ import annotations

import pytest
import torch

from interplab import sae as sae_lib
from interplab import zoo

sae_lens = pytest.importorskip("sae_lens")
from sae_lens import SAE as LensSAE  # noqa: E402
from sae_lens.evals import ExplainedVarianceCalculator, get_recons_loss, get_sparsity_and_variance_metrics  # noqa: E402
from sae_lens.training.activation_scaler import ActivationScaler  # noqa: E402

from interplab.toyworld import ToyWorld  # noqa: E402


def _random_sae(architecture: str, seed: int = 0) -> sae_lib.SAE:
    g = torch.Generator().manual_seed(seed)
    sae = sae_lib.SAE(sae_lib.SAEConfig(d_in=16, d_sae=48, architecture=architecture,
                                        k=5 if architecture == "topk" else None, hook_name="blocks.0.hook_resid_post",
                                        model_name="test"), generator=g)
    with torch.no_grad():  # non-zero biases and non-unit decoder rows, so that no term can hide
        sae.b_enc.copy_(torch.randn(48, generator=g) * 0.3)
        sae.b_dec.copy_(torch.randn(16, generator=g))
        sae.W_dec.mul_(torch.rand(48, 1, generator=g) + 0.5)
    return sae


@pytest.mark.parametrize("architecture", ["standard", "topk"])
def test_saved_sae_loads_in_saelens_and_computes_the_same(tmp_path, architecture) -> None:
    ours = _random_sae(architecture)
    sae_lib.save_saelens(ours, tmp_path)
    theirs = LensSAE.load_from_disk(tmp_path)
    assert theirs.cfg.architecture() == architecture
    assert theirs.cfg.metadata.hook_name == "blocks.0.hook_resid_post"
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(1)) * 2
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), ours.encode(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(theirs(x), ours(x), rtol=1e-5, atol=1e-5)
    assert (ours.encode(x) != 0).sum(-1).float().mean() > 0  # the comparison is not between zeros
    # And back: what SAELens saves, we load.
    theirs.save_model(tmp_path / "resaved")
    again = sae_lib.load_saelens(tmp_path / "resaved")
    with torch.no_grad():
        torch.testing.assert_close(again(x), ours(x), rtol=1e-6, atol=1e-6)
    assert again.cfg.architecture == architecture and again.cfg.k == ours.cfg.k


def test_load_refuses_what_it_cannot_represent(tmp_path) -> None:
    import json

    sae_lib.save_saelens(_random_sae("standard"), tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    cfg["normalize_activations"] = "layer_norm"
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="normalize_activations"):
        sae_lib.load_saelens(tmp_path)


class _TokenBatches:
    """Serves fixed token batches to SAELens's evaluation functions, which ask an activation store
    for ``get_batch_tokens(n)`` (the only method they use)."""

    def __init__(self, tokens: torch.Tensor):
        self.tokens = tokens

    def get_batch_tokens(self, batch_size: int | None = None, **_: object) -> torch.Tensor:
        return self.tokens


@pytest.fixture(scope="module")
def shipped():
    model = zoo.load("toyworld-lm")
    sae = zoo.load("toyworld-sae")
    world = ToyWorld()
    tokens = world.sample(200, 55).tokens
    return model, sae, world, tokens


def test_metrics_agree_with_saelens_on_the_zoo_sae(shipped, tmp_path) -> None:
    model, ours, world, tokens = shipped
    pad = world.tokenizer.pad_id
    sae_lib.save_saelens(ours, tmp_path)
    theirs = LensSAE.load_from_disk(tmp_path)
    hook = ours.cfg.hook_name

    lens_metrics, _ = get_sparsity_and_variance_metrics(
        theirs, model, _TokenBatches(tokens), ActivationScaler(), n_batches=1, compute_l2_norms=False,
        compute_sparsity_metrics=True, compute_variance_metrics=True, compute_featurewise_density_statistics=False,
        eval_batch_size_prompts=len(tokens), model_kwargs={}, ignore_tokens=[pad])
    _, cache = model.run_with_cache(tokens, names_filter=[hook])
    x = cache[hook][tokens != pad]
    with torch.no_grad():
        f = ours.encode(x)
        x_hat = ours.decode(f)
    assert sae_lib.l0(f) == pytest.approx(lens_metrics["l0"], rel=1e-5)
    assert sae_lib.explained_variance(x, x_hat) == pytest.approx(lens_metrics["explained_variance"], abs=1e-5)
    calc = ExplainedVarianceCalculator()
    calc.add_batch(sae_output=x_hat, hidden_acts=x)
    assert sae_lib.explained_variance(x, x_hat) == pytest.approx(calc.compute(), abs=1e-6)

    lens = get_recons_loss(theirs, model, ActivationScaler(), tokens, compute_kl=False, compute_ce_loss=True,
                           ignore_tokens=[pad])
    keep = (tokens != pad)[:, :-1]  # SAELens's convention: predictions made at non-padding inputs
    lens_mean = {k: float(v[keep].mean()) for k, v in lens.items()}
    lens_score = (lens_mean["ce_loss_with_ablation"] - lens_mean["ce_loss_with_sae"]) / (
        lens_mean["ce_loss_with_ablation"] - lens_mean["ce_loss_without_sae"])
    mine = sae_lib.ce_loss_recovered(model, ours, tokens, hook, mask=keep)
    assert mine["ce_clean"] == pytest.approx(lens_mean["ce_loss_without_sae"], rel=1e-5)
    assert mine["ce_with_sae"] == pytest.approx(lens_mean["ce_loss_with_sae"], rel=1e-5)
    assert mine["ce_zero_ablation"] == pytest.approx(lens_mean["ce_loss_with_ablation"], rel=1e-5)
    assert mine["ce_loss_recovered"] == pytest.approx(lens_score, abs=1e-5)
    # Our default convention (targets that are not padding) is a different set of predictions.
    by_target = sae_lib.ce_loss_recovered(model, ours, tokens, hook, mask=(tokens != pad)[:, 1:])
    assert by_target["ce_clean"] != pytest.approx(mine["ce_clean"], rel=1e-3)
    # The numbers are meaningful: a good SAE on a model that works.
    assert lens_metrics["explained_variance"] > 0.8 and 0.8 < lens_score <= 1.0
