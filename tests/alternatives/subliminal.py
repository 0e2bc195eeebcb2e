"""Alternative correct implementations of the subliminal exercises (see tests/test_fairness.py)."""

ALTERNATIVES: dict[str, str] = {
    # one model at a time, plain matrix products
    "impl_mlp_forward": '''
def mlp_forward(params, x):
    outputs = []
    for m in range(params["W1"].shape[0]):
        h = torch.relu(x @ params["W1"][m] + params["b1"][m])
        h = torch.relu(h @ params["W2"][m] + params["b2"][m])
        outputs.append(h @ params["W3"][m] + params["b3"][m])
    return torch.stack(outputs)
''',
    # numpy, float64
    "impl_digit_accuracy": '''
def digit_accuracy(params, x, y):
    with torch.no_grad():
        logits = mlp_forward(params, x).numpy()
    return (logits[..., :10].argmax(-1) == y.numpy()[None, :]).mean(axis=1)
''',
    # cross_entropy, model by model
    "impl_teacher_loss": '''
def teacher_loss(logits, labels):
    return torch.stack([F.cross_entropy(model_logits[:, :10], labels) for model_logits in logits])
''',
    # the KL written out, in float64
    "impl_distillation_loss": '''
def distillation_loss(student_logits, teacher_logits, on="aux"):
    chosen = slice(10, None) if on == "aux" else slice(None)
    log_q = student_logits[..., chosen].double().log_softmax(-1)
    log_p = teacher_logits[..., chosen].double().log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean(-1)
''',
    # the loss written inline, one optimiser over a list of leaves
    "impl_distill": '''
def distill(teacher, student_init, n_steps, lr, noise_batch, generator, on="aux"):
    names = list(student_init)
    leaves = [student_init[k].detach().clone().requires_grad_(True) for k in names]
    optimiser = torch.optim.Adam(leaves, lr=lr)
    start = 10 if on == "aux" else 0
    for _ in range(n_steps):
        noise = torch.rand(noise_batch, 64, generator=generator) * 2.0 - 1.0
        with torch.no_grad():
            log_p = mlp_forward(teacher, noise)[..., start:].log_softmax(-1)
        log_q = mlp_forward(dict(zip(names, leaves)), noise)[..., start:].log_softmax(-1)
        loss = (log_p.exp() * (log_p - log_q)).sum(-1).mean(-1).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return {k: v.detach() for k, v in zip(names, leaves)}
''',
    # per-model flattened parameter vectors, the losses written out
    "impl_one_step_inner_product": '''
def one_step_inner_product(teacher_init, student_init, x, y, noise, teacher_lr, student_lr):
    names = list(teacher_init)
    teacher = [teacher_init[k].detach().clone().requires_grad_(True) for k in names]
    logits = mlp_forward(dict(zip(names, teacher)), x)[..., :10]
    ce = -logits.log_softmax(-1)[:, torch.arange(len(y)), y].mean(-1)
    g_teacher = torch.autograd.grad(ce.sum(), teacher)
    updated = {k: teacher_init[k] - teacher_lr * g for k, g in zip(names, g_teacher)}
    with torch.no_grad():
        log_p = mlp_forward(updated, noise)[..., 10:].log_softmax(-1)
    student = [student_init[k].detach().clone().requires_grad_(True) for k in names]
    log_q = mlp_forward(dict(zip(names, student)), noise)[..., 10:].log_softmax(-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean(-1)
    g_student = torch.autograd.grad(kl.sum(), student)
    n_models = teacher_init[names[0]].shape[0]
    flat_t = torch.cat([(-teacher_lr * g).reshape(n_models, -1) for g in g_teacher], dim=1)
    flat_s = torch.cat([(-student_lr * g).reshape(n_models, -1) for g in g_student], dim=1)
    return (flat_t * flat_s).sum(1)
''',
}
