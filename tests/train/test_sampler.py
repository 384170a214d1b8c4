"""Sampler: the no-grad rollout, the batched pass, off-policy log q, both layouts, and the
estimator of the batched pass against the graph-keeping rollout."""

from __future__ import annotations

import math

import pytest
import torch

import gfn_fast as gf
from gfn_fast.train import envs, recorded_mlp, scoring
from gfn_fast.train.distinct import MOST_DISTINCT, distinct_rows
from gfn_fast.train.policies import make_policy
from gfn_fast.train.rollout import concatenate, rollout
from gfn_fast.train.sampler import continuous_log_pt, sample_trajectories
from gfn_fast.train.scoring import score


def _policy(env, learn_pb=False):
    torch.manual_seed(0)
    return make_policy(env, 32, 2, learn_pb=learn_pb) if learn_pb else make_policy(env, 32, 2)


def _rollout(env, policy, seed=0, batch_size=32, **options):
    generator = torch.Generator().manual_seed(seed)
    return rollout(env, policy, batch_size, generator=generator, **options)


def _per_step(env, policy, sampled):
    """Per-step (log p_F, log p_B) [B, T] recomputed row by row with a plain masked
    log_softmax: the independent oracle of the batched pass."""
    batch = sampled.batch_size
    log_pf = torch.zeros(batch, env.max_length, dtype=torch.float64)
    log_pb = torch.zeros_like(log_pf)
    starts = sampled.offsets if sampled.offsets is not None else None
    for b in range(batch):
        for t in range(int(sampled.lengths[b])):
            row = int(starts[b]) + t if starts is not None else b * env.max_length + t
            parent, child = sampled.parents[row : row + 1], sampled.children[row : row + 1]
            action = sampled.actions[row]
            logits = policy(env.features(parent)).double()
            logits = logits.masked_fill(~env.forward_mask(parent), -math.inf)
            log_pf[b, t] = logits.log_softmax(-1)[0, action]
            if policy.learned_pb:
                back = policy.backward_logits(env.features(child)).double()
                back = back.masked_fill(~env.backward_mask(child), -math.inf)
                taken = env.backward_action(parent, action.view(1))
                log_pb[b, t] = back.log_softmax(-1)[0, taken[0]]
            else:
                log_pb[b, t] = -math.log(int(env.backward_mask(child).sum()))
    return log_pf, log_pb


@pytest.mark.parametrize("layout", ["packed", "padded"])
@pytest.mark.parametrize(
    "name, preset, learn_pb",
    [("hypergrid", None, True), ("sets", "small", False), ("sequences", "tiny", False)],
)
def test_batched_pass_equals_a_step_by_step_recomputation(name, preset, learn_pb, layout):
    env = envs.make(name, preset)
    policy = _policy(env, learn_pb)
    sampled = _rollout(env, policy, batch_size=8, layout=layout)
    batch = score(env, policy, sampled)
    log_pf, log_pb = _per_step(env, policy, sampled)
    torch.testing.assert_close(batch.log_pf.double(), log_pf.sum(1), atol=1e-5, rtol=0)
    if env.is_tree:
        assert batch.log_pb is None
    else:
        torch.testing.assert_close(batch.log_pb.double(), log_pb.sum(1), atol=1e-5, rtol=0)
    assert batch.log_pf.requires_grad
    assert learn_pb == (batch.log_pb is not None and batch.log_pb.requires_grad)


@pytest.mark.parametrize(
    "name, preset", [("hypergrid", None), ("sets", "small"), ("phylo", "tiny")]
)
def test_both_layouts_sample_the_same_trajectories(name, preset):
    env = envs.make(name, preset)
    policy = _policy(env)
    packed = _rollout(env, policy, layout="packed")
    padded = _rollout(env, policy, layout="padded")
    assert torch.equal(packed.lengths, padded.lengths)
    assert torch.equal(packed.terminal, padded.terminal)
    inside = (torch.arange(env.max_length) < padded.lengths[:, None]).flatten()
    for field in ("parents", "actions", "children"):
        assert torch.equal(getattr(packed, field), getattr(padded, field)[inside])
    a, b = score(env, policy, packed), score(env, policy, padded)
    torch.testing.assert_close(a.log_pf, b.log_pf)
    torch.testing.assert_close(a.log_pb, b.log_pb)


def _objective_settings():
    settings = []
    for objective in gf.OBJECTIVES:
        for off_policy in (False, True):
            cv = "none" if objective == "tb" and off_policy else "loo"
            settings.append((objective, cv, off_policy))
    settings.append(("tb", "none", False))
    settings.append(("renyi", "none", True))
    return settings


# How the batched pass gets p_F's outputs: a second forward, the recorded activations, or
# the graph kept by the rollout (the reference the others must match); each also with the
# networks run once per distinct state.
_FORWARDS = {
    "batched": {},
    "recorded": {"record_activations": True},
    "kept": {"keep_graph": True},
    "batched_distinct": {"distinct_states": True},
    "recorded_distinct": {"record_activations": True, "distinct_states": True},
    "kept_distinct": {"keep_graph": True, "distinct_states": True},
}


@pytest.mark.parametrize("objective, control_variate, off_policy", _objective_settings())
@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_batched_pass_gives_the_gradient_of_the_graph_keeping_rollout(
    objective, control_variate, off_policy, layout
):
    env = envs.make("hypergrid", None)
    policy = _policy(env, learn_pb=True)
    options = {"epsilon": 0.3, "temperature": 1.5} if off_policy else {}
    gradients = {}
    for name, forward in _FORWARDS.items():
        generator = torch.Generator().manual_seed(3)
        batch = sample_trajectories(
            env, policy, 16, generator=generator, layout=layout, **forward, **options
        )
        assert (batch.rollout.outputs is not None) == (not name.startswith("batched"))
        log_z = torch.zeros((), requires_grad=True) if objective in ("tb", "tsallis") else None
        loss, _ = gf.divergence_loss(
            objective,
            **batch.loss_inputs(),
            control_variate=control_variate,
            log_z=log_z,
        )
        parameters = list(policy.parameters()) + ([log_z] if log_z is not None else [])
        gradients[name] = (batch, torch.autograd.grad(loss, parameters))
    kept, kept_grads = gradients.pop("kept")
    for batch, grads in gradients.values():
        assert torch.equal(batch.rollout.actions, kept.rollout.actions)  # the same batch
        assert (batch.log_behavior is not None) == off_policy
        for a, b in zip(grads, kept_grads, strict=True):
            assert a.abs().sum() > 0
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def _behaviour_oracle(env, policy, sampled, epsilon, temperature):
    """sum over steps of log q(a | s), q = (1 - eps) softmax(log p_F / T) + eps / n_allowed,
    from the per-row p_F in float64."""
    total = torch.zeros(sampled.batch_size, dtype=torch.float64)
    segment = torch.repeat_interleave(torch.arange(sampled.batch_size), sampled.lengths)
    logits = policy(env.features(sampled.parents)).double()
    mask = env.forward_mask(sampled.parents)
    log_pf = logits.masked_fill(~mask, -math.inf).log_softmax(-1)
    tempered = (log_pf / temperature).log_softmax(-1).exp()
    q = (1 - epsilon) * tempered + epsilon * mask / mask.sum(-1, keepdim=True)
    chosen = q.gather(1, sampled.actions[:, None])[:, 0].log()
    return total.index_add(0, segment, chosen)


@pytest.mark.parametrize(
    "epsilon, temperature",
    [(0.25, 1.0), (0.7, 1.0), (0.0, 2.0), (0.0, 0.5), (0.3, 1.7), (1.0, 1.0)],
)
def test_log_behavior_is_the_mixture_of_tempered_pf_and_uniform(epsilon, temperature):
    env = envs.make("hypergrid", None)
    policy = _policy(env)
    sampled = _rollout(env, policy, epsilon=epsilon, temperature=temperature)
    expected = _behaviour_oracle(env, policy, sampled, epsilon, temperature)
    torch.testing.assert_close(sampled.log_behavior.double(), expected, atol=1e-5, rtol=0)
    on_policy = score(env, policy, sampled).log_pf.double()
    assert (sampled.log_behavior.double() - on_policy).abs().max() > 1e-3  # log q, not log p_F


def test_uniform_behaviour_log_q_counts_allowed_actions():
    env = envs.make("hypergrid", None)
    sampled = _rollout(env, _policy(env), epsilon=1.0)
    segment = torch.repeat_interleave(torch.arange(32), sampled.lengths)
    allowed = env.forward_mask(sampled.parents).sum(-1).float()
    expected = torch.zeros(32).index_add(0, segment, -allowed.log())
    torch.testing.assert_close(sampled.log_behavior, expected, atol=1e-5, rtol=0)


def test_on_policy_has_no_log_behavior_and_off_policy_is_finite():
    env = envs.make("sets", "small")
    policy = _policy(env)
    assert _rollout(env, policy).log_behavior is None
    tempered = _rollout(env, policy, temperature=2.0)
    assert torch.isfinite(tempered.log_behavior).all()


def test_the_rollout_records_without_autograd_unless_asked():
    env = envs.make("hypergrid", None)
    policy = _policy(env, learn_pb=True)
    plain = _rollout(env, policy)
    assert plain.outputs is None and not plain.log_reward.requires_grad
    kept = _rollout(env, policy, keep_graph=True)
    assert kept.outputs.requires_grad and kept.outputs.shape == (kept.parents.shape[0], 3)
    for layout in ("packed", "padded"):
        recorded = _rollout(env, policy, layout=layout, record_activations=True)
        assert recorded.outputs.requires_grad
        expected = policy(env.features(recorded.parents))
        torch.testing.assert_close(recorded.outputs, expected, atol=1e-6, rtol=1e-5)


def test_record_activations_falls_back_where_it_cannot_differentiate_the_policy():
    sets = envs.make("sets", "small")
    deep_set = make_policy(sets, 16, 1, deep_set=True)  # not a plain MLP
    assert _rollout(sets, deep_set, record_activations=True).outputs is None
    kept = _rollout(sets, deep_set, record_activations=True, keep_graph=True)
    assert "Recorded" not in type(kept.outputs.grad_fn).__name__  # the kept graph
    env = envs.make("hypergrid", None)
    policy = _policy(env)
    policy.forward_net[1] = torch.nn.ReLU()  # another activation
    assert _rollout(env, policy, record_activations=True).outputs is None


@pytest.mark.parametrize("block_rows", [512, 7])
@pytest.mark.parametrize("validate", [True, False])
def test_learned_pb_skips_forced_steps_exactly(validate, block_rows, monkeypatch):
    """Packed: p_B runs only on steps whose child has more than one way back; the others
    add log 1 = 0 and no gradient. Against p_B over every step, in plain torch."""
    monkeypatch.setattr(recorded_mlp, "BLOCK_ROWS", block_rows)  # the backward's blocks
    env = envs.make("hypergrid", None)
    policy = _policy(env, learn_pb=True)
    sampled = _rollout(env, policy, batch_size=64)
    mask = env.backward_mask(sampled.children)
    forced = mask.sum(-1) == 1
    assert forced.any() and not forced.all()
    weights = torch.rand(64, generator=torch.Generator().manual_seed(5))
    parameters = list(policy.backward_net.parameters())
    log_pb = score(env, policy, sampled, validate=validate).log_pb
    logits = policy.backward_logits(env.features(sampled.children))
    log_softmax = logits.masked_fill(~mask, -math.inf).log_softmax(-1)
    taken = env.backward_action(sampled.parents, sampled.actions)
    segment = torch.repeat_interleave(torch.arange(64), sampled.lengths)
    expected = torch.zeros(64).index_add(0, segment, log_softmax.gather(1, taken[:, None])[:, 0])
    torch.testing.assert_close(log_pb, expected)
    grads = torch.autograd.grad((weights * log_pb).sum(), parameters)
    expected_grads = torch.autograd.grad((weights * expected).sum(), parameters)
    for a, b in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_concatenated_rollouts_score_like_each_part():
    env = envs.make("hypergrid", None)
    policy = _policy(env, learn_pb=True)
    for layout in ("packed", "padded"):
        generator = torch.Generator().manual_seed(0)
        parts = [rollout(env, policy, n, generator=generator, layout=layout) for n in (1, 5, 3)]
        joined = score(env, policy, concatenate(parts))
        scored = [score(env, policy, part) for part in parts]
        for key in ("log_pf", "log_pb", "log_reward", "terminal"):
            expected = torch.cat([getattr(part, key) for part in scored])
            torch.testing.assert_close(getattr(joined, key), expected)
    with pytest.raises(ValueError, match="rollouts"):
        concatenate([])
    with pytest.raises(ValueError, match="offsets"):
        concatenate(
            [_rollout(env, policy, layout="packed"), _rollout(env, policy, layout="padded")]
        )


def _assert_like_the_batched_pass(gradients: dict, atol: float) -> None:
    """Every `_FORWARDS` entry's parameter gradients equal the "batched" entry's."""
    batched = gradients.pop("batched")
    for grads in gradients.values():
        for a, b in zip(grads, batched, strict=True):
            torch.testing.assert_close(a, b, atol=atol, rtol=1e-5)


@pytest.mark.parametrize("layout", ["packed", "padded"])
@pytest.mark.parametrize(
    "name, preset, options",
    [
        ("hypergrid", None, {"learn_pb": True}),  # recordable MLPs
        ("sets", "small", {"deep_set": True}),  # DeepSet: the kept graph or a second forward
        ("phylo", "tiny", {"learn_pb": True}),  # ForestPolicy: likewise
    ],
)
def test_rollouts_in_parts_give_the_batched_gradient(name, preset, options, layout):
    """Parts of 1, 5 and 3 trajectories (each part's first step runs s0 once), joined:
    recorded and kept outputs backpropagate as the batched pass's second forward does."""
    env = envs.make(name, preset)
    torch.manual_seed(0)
    policy = make_policy(env, 32, 2, **options)
    gradients = {}
    for forward, settings in _FORWARDS.items():
        parts = [
            _rollout(env, policy, seed, size, layout=layout, **settings)
            for seed, size in ((0, 1), (1, 5), (2, 3))
        ]
        batch = score(env, policy, concatenate(parts))
        log_pb = batch.log_pb if batch.log_pb is not None else 0.0
        total = (torch.linspace(-1.0, 1.0, 9) * (batch.log_pf - log_pb)).sum()
        gradients[forward] = torch.autograd.grad(total, list(policy.parameters()))
    _assert_like_the_batched_pass(gradients, atol=1e-6)


def test_recorder_outputs_gathered_with_repeats_backpropagate_as_the_network():
    """MLPRecorder called directly: 7 rows recorded in two calls, gathered in another order
    with some rows repeated and one left out (as a rollout's distinct states are)."""
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.LeakyReLU(), torch.nn.Linear(8, 3)
    )
    features = torch.randn(7, 5)
    with torch.no_grad():
        recorder = recorded_mlp.MLPRecorder(network, 7)
        recorder(features[:2])
        recorder(features[2:])
    index = torch.tensor([0, 0, 0, 0, 6, 2, 3, 3, 1, 5])  # row 4 unused
    weights = torch.randn(index.shape[0], 3)
    recorded = recorder.outputs(index)
    torch.testing.assert_close(recorded, network(features)[index])
    plain = (weights * network(features[index])).sum()
    for a, b in zip(
        torch.autograd.grad((weights * recorded).sum(), list(network.parameters())),
        torch.autograd.grad(plain, list(network.parameters())),
        strict=True,
    ):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_a_packed_rollout_rejects_an_env_whose_initial_state_is_terminal(monkeypatch):
    env = envs.make("hypergrid", None)
    monkeypatch.setattr(env, "is_terminal", lambda states: torch.ones(len(states), dtype=bool))
    with pytest.raises(ValueError, match="initial state is terminal"):
        _rollout(env, _policy(env), layout="packed")


@pytest.mark.parametrize("name", ["gmm", "banana"])
@pytest.mark.parametrize("forward", list(_FORWARDS))
def test_continuous_log_pt_matches_the_batched_pass(name, forward):
    env = envs.make(name)
    policy = _policy(env)
    generator = torch.Generator().manual_seed(0)
    batch = sample_trajectories(env, policy, 32, generator=generator, **_FORWARDS[forward])
    x = env.terminal_objects(batch.terminal)
    assert torch.allclose(continuous_log_pt(env, policy, x), batch.log_pf, atol=1e-5)
    assert torch.allclose(batch.log_reward, env.log_reward(x))
    assert batch.log_pf.requires_grad and batch.log_pb is None


def test_recorded_backward_in_blocks_gives_the_kept_graphs_gradient(monkeypatch):
    env = envs.make("hypergrid", None)
    policy = _policy(env, learn_pb=True)
    gradients = []
    for forward, block_rows in (({"record_activations": True}, 7), ({"keep_graph": True}, 512)):
        monkeypatch.setattr(recorded_mlp, "BLOCK_ROWS", block_rows)
        batch = sample_trajectories(env, policy, 16, generator=torch.Generator(), **forward)
        weights = torch.linspace(-1.0, 1.0, 16)
        total = (weights * (batch.log_pf - batch.log_pb)).sum()
        gradients.append(torch.autograd.grad(total, list(policy.parameters())))
    for a, b in zip(*gradients, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def _masked_logprob_sums(logits, mask, actions, lengths):
    """[B] per-trajectory sums of log softmax(masked logits)[action], in plain torch."""
    log_softmax = logits.float().masked_fill(~mask, -math.inf).log_softmax(-1)
    per_step = log_softmax.gather(1, actions[:, None])[:, 0]
    segment = torch.repeat_interleave(torch.arange(lengths.shape[0]), lengths)
    return torch.zeros(lengths.shape[0]).index_add(0, segment, per_step)


@pytest.mark.parametrize("layout", ["packed", "padded"])
@pytest.mark.parametrize("block_rows", [512, 7])
def test_recorded_activations_under_bf16_autocast_give_autocasts_gradient(
    block_rows, layout, monkeypatch
):
    """--precision bf16: the recorder computes as autocast does (bf16 weights and
    activations, padded row counts, float32 gradients). Against autocast's own graph of the
    same batch, in plain torch."""
    monkeypatch.setattr(recorded_mlp, "BLOCK_ROWS", block_rows)
    env = envs.make("hypergrid", None)
    policy = _policy(env, learn_pb=True)
    weights = torch.linspace(-1.0, 1.0, 64)
    parameters = list(policy.parameters())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sampled = _rollout(env, policy, batch_size=64, record_activations=True, layout=layout)
        assert sampled.outputs.dtype == torch.bfloat16
        batch = score(env, policy, sampled)
        inside = slice(None)  # packed: every row is a step
        if layout == "padded":  # the rows within each trajectory's length
            inside = (torch.arange(env.max_length) < sampled.lengths[:, None]).flatten()
        parents, actions = sampled.parents[inside], sampled.actions[inside]
        children = sampled.children[inside]
        log_pf = _masked_logprob_sums(
            policy(env.features(parents)), env.forward_mask(parents), actions, sampled.lengths
        )
        log_pb = _masked_logprob_sums(
            policy.backward_logits(env.features(children)),
            env.backward_mask(children),
            env.backward_action(parents, actions),
            sampled.lengths,
        )
    torch.testing.assert_close(batch.log_pf, log_pf, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch.log_pb, log_pb, atol=1e-5, rtol=1e-5)
    recorded = torch.autograd.grad((weights * (batch.log_pf - batch.log_pb)).sum(), parameters)
    expected = torch.autograd.grad((weights * (log_pf - log_pb)).sum(), parameters)
    for a, b in zip(recorded, expected, strict=True):
        assert a.dtype == torch.float32
        # bf16 products rounded per block of rows against autocast's one product
        torch.testing.assert_close(a, b, atol=2e-2 * b.abs().max().item(), rtol=0)


@pytest.mark.parametrize("name", ["gmm", "banana"])
def test_recorded_and_kept_rollouts_give_the_batched_gradient_on_continuous_tasks(name):
    """The rollout runs s0 once for the first step; the batched pass runs every row."""
    env = envs.make(name)
    policy = _policy(env)
    gradients = {}
    for forward, options in _FORWARDS.items():
        generator = torch.Generator().manual_seed(1)
        batch = sample_trajectories(env, policy, 16, generator=generator, **options)
        weights = torch.linspace(-1.0, 1.0, 16)
        total = (weights * batch.log_pf).sum()
        gradients[forward] = torch.autograd.grad(total, list(policy.parameters()))
    _assert_like_the_batched_pass(gradients, atol=1e-5)


def test_sampler_rejects_bad_options():
    env = envs.make("hypergrid")
    policy = make_policy(env)
    with pytest.raises(ValueError, match="epsilon"):
        sample_trajectories(env, policy, 4, epsilon=1.5)
    with pytest.raises(ValueError, match="temperature"):
        sample_trajectories(env, policy, 4, temperature=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        sample_trajectories(env, policy, 0)
    with pytest.raises(ValueError, match="layout"):
        sample_trajectories(env, policy, 4, layout="ragged")
    gmm = envs.make("gmm")
    with pytest.raises(ValueError, match="discrete envs only"):
        sample_trajectories(gmm, make_policy(gmm), 4, epsilon=0.1)
    assert math.isfinite(float(sample_trajectories(env, policy, 4).log_reward.sum()))


@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_distinct_states_run_the_networks_once_per_distinct_state(layout, monkeypatch):
    """Rows the networks see: in the rollout, the distinct parents of each step (s0 once);
    in the batched pass, the batch's distinct parents (p_F) and children (p_B, through
    its recorded MLP). Counted from the sampled batch, independently of how the sampler
    finds them."""
    env = envs.make("hypergrid", None)
    policy = _policy(env, learn_pb=True)
    seen = {"forward": [], "backward": []}
    policy.forward_mlp.register_forward_pre_hook(lambda _, args: seen["forward"].append(args[0]))
    run_recorded = scoring.run_recorded

    def spy(network, features):
        seen["backward"].append(features)
        return run_recorded(network, features)

    monkeypatch.setattr(scoring, "run_recorded", spy)
    sampled = _rollout(env, policy, batch_size=64, layout=layout, distinct_states=True)
    steps = torch.arange(env.max_length).repeat(64)  # padded rows: trajectory-major
    if layout == "packed":
        steps = torch.cat([torch.arange(int(n)) for n in sampled.lengths])
    codes = env.state_code(sampled.parents)
    expected, looking = [1], True  # s0 once; then, until a step's states are mostly distinct,
    for t in range(1, int(steps.max()) + 1):  # the distinct ones
        rows = codes[steps == t]
        distinct = rows.unique().numel()
        looking = looking and rows.numel() >= 2 and distinct <= MOST_DISTINCT * rows.numel()
        expected.append(distinct if looking else rows.numel())
    assert [rows.shape[0] for rows in seen["forward"]] == expected
    assert sum(expected) < sampled.parents.shape[0] / 4
    seen["forward"].clear()
    score(env, policy, sampled, distinct_states=True)
    assert [rows.shape[0] for rows in seen["forward"]] == [codes.unique().numel()]
    children = sampled.children[env.backward_mask(sampled.children).sum(-1) > 1]
    if layout == "padded":  # the padded pass keeps every row
        children = sampled.children
    assert [rows.shape[0] for rows in seen["backward"]] == [
        env.state_code(children).unique().numel()
    ]


def test_distinct_rows_leaves_mostly_distinct_rows_and_inexact_codes_alone(monkeypatch):
    env = envs.make("hypergrid", None)
    states = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
    distinct, inverse = distinct_rows(env, states)
    assert torch.equal(distinct[inverse], states) and distinct.shape[0] == 3
    assert distinct_rows(env, states[:4]) is None  # 3 distinct of 4: not worth gathering
    monkeypatch.setattr(env, "state_radix", (2**32,) * 3)  # codes would wrap around
    assert not env.state_codes_exact and distinct_rows(env, states) is None


@pytest.mark.parametrize(
    "name, preset, options",
    [
        ("hypergrid", None, {"learn_pb": True}),  # recordable MLPs
        ("sets", "small", {"deep_set": True}),  # DeepSet
        ("phylo", "tiny", {"learn_pb": True}),  # ForestPolicy
    ],
)
@pytest.mark.parametrize("forward", ["batched", "recorded", "kept"])
def test_distinct_states_give_the_all_states_gradient_for_every_policy(
    name, preset, options, forward
):
    """The same batch with and without distinct states: equal log-probs and gradients,
    and fewer rows through the policy with them."""
    env = envs.make(name, preset)
    torch.manual_seed(0)
    policy = make_policy(env, 32, 2, **options)
    rows = []
    policy.register_forward_pre_hook(lambda _, args: rows.append(args[0].shape[0]))
    results = {}
    for distinct in (False, True):
        rows.clear()
        generator = torch.Generator().manual_seed(4)
        batch = sample_trajectories(
            env, policy, 64, generator=generator, distinct_states=distinct, **_FORWARDS[forward]
        )
        log_pb = batch.log_pb if batch.log_pb is not None else 0.0
        total = (torch.linspace(-1.0, 1.0, 64) * (batch.log_pf - log_pb)).sum()
        results[distinct] = (
            batch,
            torch.autograd.grad(total, list(policy.parameters())),
            sum(rows),
        )
    (plain, plain_grads, plain_rows), (ours, grads, our_rows) = results[False], results[True]
    assert torch.equal(ours.rollout.actions, plain.rollout.actions)
    torch.testing.assert_close(ours.log_pf, plain.log_pf)
    for a, b in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    if forward != "recorded" or name != "hypergrid":  # (the recorder runs without calls)
        assert our_rows < plain_rows
