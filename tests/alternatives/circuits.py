"""Alternative correct implementations of the circuits exercises (see tests/test_fairness.py)."""

ALTERNATIVES: dict[str, str] = {
    # cross_entropy on the shifted logits, in float64
    "impl_per_token_loss": '''
def per_token_loss(logits, tokens):
    import torch.nn.functional as F
    shifted = logits[:, :-1].double()
    return F.cross_entropy(shifted.transpose(1, 2), tokens[:, 1:], reduction="none")
''',
    # numpy, an explicit loop over query positions, float64
    "impl_current_token_score": '''
def current_token_score(pattern):
    import numpy as np
    p = pattern.detach().numpy().astype(np.float64)
    n = p.shape[-1]
    total = np.zeros(p.shape[1])
    for q in range(1, n):
        total += p[:, :, q, q].mean(axis=0)
    return total / (n - 1)
''',
    # a mask of the sub-diagonal instead of .diagonal
    "impl_previous_token_score": '''
def previous_token_score(pattern):
    n = pattern.shape[-1]
    mask = torch.diag_embed(torch.ones(n - 1), offset=-1)
    return (pattern * mask).sum(dim=(-1, -2)).mean(0) / (n - 1)
''',
    "impl_first_token_score": '''
def first_token_score(pattern):
    n = pattern.shape[-1]
    return pattern[:, :, 1:, 0].double().sum(-1).mean(0) / (n - 1)
''',
    # explicit loop over the queries of the repeated half
    "impl_induction_score": '''
def induction_score(pattern):
    seq_len = (pattern.shape[-1] - 1) // 2
    scores = [pattern[:, :, q, q - seq_len + 1] for q in range(seq_len + 1, 2 * seq_len + 1)]
    return torch.stack(scores, dim=-1).mean(dim=(0, -1))
''',
    # hooks that build a new tensor (no in-place edit), float64 result
    "impl_ablation_loss_increase": '''
def ablation_loss_increase(model, tokens, ablation):
    clean = model(tokens, return_type="loss").item()
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    out = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    for layer in range(n_layers):
        for head in range(n_heads):
            keep = torch.ones(n_heads)
            keep[head] = 0.0

            def hook(z, hook, keep=keep, head=head):
                replacement = torch.zeros_like(z) if ablation == "zero" else z.mean(0, keepdim=True).expand_as(z)
                return z * keep[:, None] + replacement * (1 - keep)[:, None]

            loss = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(f"blocks.{layer}.attn.hook_z", hook)])
            out[layer, head] = loss.item() - clean
    return out
''',
    # advanced indexing instead of gather
    "impl_logit_diff": '''
def logit_diff(logits, correct, wrong):
    rows = torch.arange(logits.shape[0])
    return logits[rows, -1, correct] - logits[rows, -1, wrong]
''',
    # a full cache, logit differences by indexing, float64 normalisation
    "impl_head_patching_effect": '''
def head_patching_effect(model, clean, corrupted, correct, wrong):
    rows = torch.arange(len(correct))

    def ld(logits):
        return (logits[rows, -1, correct] - logits[rows, -1, wrong]).double().mean()

    clean_logits, cache = model.run_with_cache(clean)
    clean_ld, corrupted_ld = ld(clean_logits), ld(model(corrupted))
    effect = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, dtype=torch.float64)
    for layer in range(model.cfg.n_layers):
        name = f"blocks.{layer}.attn.hook_z"
        for head in range(model.cfg.n_heads):
            def hook(z, hook, head=head):
                z = z.clone()
                z[:, :, head] = cache[name][:, :, head]
                return z

            patched = ld(model.run_with_hooks(corrupted, fwd_hooks=[(name, hook)]))
            effect[layer, head] = (patched - corrupted_ld) / (clean_ld - corrupted_ld)
    return effect
''',
    # the dense matrix (a correct answer: the text asks for the circuit, the factored form is a convenience)
    "impl_full_ov_circuit": '''
def full_ov_circuit(model, layer, head):
    return model.W_E @ (model.W_V[layer, head] @ model.W_O[layer, head]) @ model.W_U
''',
    "impl_pos_qk_circuit": '''
def pos_qk_circuit(model, layer, head):
    W_QK = model.W_Q[layer, head] @ model.W_K[layer, head].T
    return model.W_pos @ W_QK @ model.W_pos.T
''',
    # dense matrices and Frobenius norms in float64
    "impl_composition_score": '''
def composition_score(W_A, W_B):
    A, B = W_A.AB.double(), W_B.AB.double()
    return torch.linalg.matrix_norm(A @ B) / (torch.linalg.matrix_norm(A) * torch.linalg.matrix_norm(B))
''',
    # dense d_model x d_model circuits from the weights, without FactoredMatrix
    "impl_composition_scores": '''
def composition_scores(model, kind):
    n = model.cfg.n_heads
    W_OV0 = [(model.W_V[0, h] @ model.W_O[0, h]).double() for h in range(n)]
    W_QK1 = [(model.W_Q[1, h] @ model.W_K[1, h].T).double() for h in range(n)]
    W_OV1 = [(model.W_V[1, h] @ model.W_O[1, h]).double() for h in range(n)]
    readers = {"Q": W_QK1, "K": [m.T for m in W_QK1], "V": W_OV1}[kind]
    scores = torch.zeros(n, n, dtype=torch.float64)
    for h0 in range(n):
        for h1 in range(n):
            product = W_OV0[h0] @ readers[h1]
            scores[h0, h1] = product.norm() / (W_OV0[h0].norm() * readers[h1].norm())
    return scores
''',
}
